"""audit.json -> report.html: the verdict, a plot of every probed option's effect with its CI
per detector, and the top rows and tokens. Every text from data or models is escaped."""

from __future__ import annotations

import html
from typing import Any

_W, _ROW = 520, 16


def _bars(findings: list[dict[str, Any]], k: int = 12) -> str:
    """A horizontal bar chart (SVG) of the k options with the highest z, with their CIs."""
    top = findings[:k]
    if not top:
        return ""
    lo = min(min(f["effect"], (f["ci"] or [f["effect"]])[0]) for f in top)
    hi = max(max(f["effect"], (f["ci"] or [0, f["effect"]])[1]) for f in top)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    span = (hi - lo) or 1.0
    x0, width = 120, _W - 130

    def x(v: float) -> float:
        return x0 + (v - lo) / span * width

    parts = [f'<svg width="{_W}" height="{_ROW * len(top) + 20}" role="img">']
    parts.append(
        f'<line x1="{x(0):.1f}" y1="0" x2="{x(0):.1f}" y2="{_ROW * len(top)}" stroke="#888"/>'
    )
    for i, f in enumerate(top):
        y = i * _ROW
        a, b = sorted((x(0), x(f["effect"])))
        parts.append(
            f'<text x="115" y="{y + 12}" text-anchor="end" font-size="11">{html.escape(f["option"])}</text>'
        )
        parts.append(
            f'<rect x="{a:.1f}" y="{y + 3}" width="{max(b - a, 1):.1f}" height="10" fill="#4a7ab5"/>'
        )
        if f["ci"]:
            c0, c1 = x(f["ci"][0]), x(f["ci"][1])
            parts.append(
                f'<line x1="{c0:.1f}" y1="{y + 8}" x2="{c1:.1f}" y2="{y + 8}" stroke="#000"/>'
            )
    parts.append(f'<text x="{x0}" y="{_ROW * len(top) + 14}" font-size="10">{lo:+.3g}</text>')
    parts.append(
        f'<text x="{_W - 10}" y="{_ROW * len(top) + 14}" font-size="10" text-anchor="end">{hi:+.3g}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def render(audit: dict[str, Any]) -> str:
    v = audit["verdict"]
    title = "Audit: " + (
        f"FLAG, most likely trait '{v['trait']}' ({v['probe']})" if v.get("flag") else "no flag"
    )
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
        "font-size:12px}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if v.get("detector"):
        out.append(
            "<p>"
            + html.escape(
                f"Primary detector {v['detector']}: top option '{v['trait']}' with z = {v['z']:.2f} "
                f"(threshold {v['threshold']}), effect {v['effect']:+.4g}."
                + (
                    f" Next: '{v['runner_up']['option']}', effect "
                    f"{v['runner_up']['effect']:+.4g} (margin {v['margin']:.3g} in "
                    f"{v.get('margin_of', 'effect')})."
                    if v.get("runner_up")
                    else ""
                )
            )
            + "</p>"
        )
    info = audit.get("data", {})
    out.append(_table(["data", "value"], [[k, info[k]] for k in sorted(info)]))
    for det, probes in audit.get("detectors", {}).items():
        cost = audit.get("cost", {}).get(det, {})
        out.append(f"<h2>{html.escape(det)}</h2><p>{html.escape(_cost(cost))}</p>")
        for probe, fs in probes.items():
            out.append(f"<h3>{html.escape(probe)}</h3>{_bars(fs)}")
            rows = [
                [f["option"], f"{f['effect']:+.4g}", _ci(f["ci"]), f"{f['z']:.2f}"] for f in fs[:10]
            ]
            out.append(_table(["option", "effect", "95% CI", "z"], rows))
    if audit.get("top_rows"):
        out.append("<h2>Rows the canary learnt most from</h2>")
        out.append(
            _table(
                ["row", "score", "completion"],
                [[r["row"], f"{r['score']:+.4f}", r["completion"]] for r in audit["top_rows"]],
            )
        )
    if audit.get("top_tokens"):
        out.append("<h2>Tokens</h2>")
        out.append(
            _table(
                ["token", "mean shift", "count"],
                [[t["token"], f"{t['mean']:+.4f}", t["count"]] for t in audit["top_tokens"]],
            )
        )
    out.append("</body></html>")
    return "\n".join(out)


def _ci(ci: list[float] | None) -> str:
    return f"[{ci[0]:+.4g}, {ci[1]:+.4g}]" if ci else "-"


def _cost(cost: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in cost.items())
