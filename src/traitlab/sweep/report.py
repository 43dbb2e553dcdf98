"""The sweep's report.html: the effect against each swept parameter with its CI, removal
against the baseline, and the table of every cell."""

from __future__ import annotations

from typing import Any

from traitlab.core.html import esc, interval_plot, line_plot, page, table

# The columns of the page's table (every column is in table.csv).
_SHOWN = [
    ("control", "control"),
    ("treatment", "treatment"),
    ("diff", "treatment - control"),
    ("diff_lo", "CI low"),
    ("diff_hi", "CI high"),
    ("p", "p"),
    ("xinit_diff", "cross-init diff"),
    ("removal", "removal"),
    ("removal_lo", "removal low"),
    ("removal_hi", "removal high"),
    ("utility_loss_rise", "held-out loss rise"),
    ("utility_pass_drop", "pass-rate drop"),
    ("teacher_pass_rate", "teacher pass"),
    ("rows", "rows"),
    ("seconds", "seconds"),
]


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _param_plots(rows: list[dict[str, Any]], grid: dict[str, list[Any]]) -> str:
    out = []
    ok = [r for r in rows if r.get("status") == "ok"]
    for key, values in grid.items():
        col = f"set.{key}"
        if _numeric(values) and len(values) > 1:
            # One line per combination of the other parameters' values.
            groups: dict[str, list[dict[str, Any]]] = {}
            for r in ok:
                rest = ", ".join(f"{k[4:]}={r[k]}" for k in r if k.startswith("set.") and k != col)
                groups.setdefault(rest, []).append(r)
            for rest, rs in groups.items():
                rs = sorted(rs, key=lambda r: r[col])
                svg = line_plot(
                    [r[col] for r in rs],
                    [r.get("diff") for r in rs],
                    [r.get("diff_lo") for r in rs],
                    [r.get("diff_hi") for r in rs],
                    xlabel=key,
                    ylabel="treatment - control",
                    log_x=min(values) > 0 and max(values) / min(values) >= 20,
                )
                title = f"treatment - control against {key}" + (f" ({rest})" if rest else "")
                out.append(f"<h3>{esc(title)}</h3>{svg}")
    return "".join(out)


def _matrix(m: dict[str, Any] | None) -> str:
    if not m:
        return ""
    bases = m["bases"]
    rows = [[i, *(m["matrix"].get(i, {}).get(j) for j in bases)] for i in bases]
    out = "<h2>cross-model matrix: treatment - control (rows: teacher's base; columns: student's base)</h2>"
    out += table(["teacher \\ student", *bases], rows)
    g = m.get("gamma")
    if g:
        out += (
            "<p>"
            + esc(
                f"gamma (extra lift of a shared initialisation) = {g['mean']:+.4f} "
                f"[{g['lower']:+.4f}, {g['upper']:+.4f}], p = {g['p_value']:.2g} "
                f"({m['n']} seed-level entries, {g['dof']} dof)"
            )
            + "</p>"
        )
    return out


def render(sweep: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    ok = [r for r in rows if r.get("status") == "ok"]
    failed = [r for r in rows if r.get("status") != "ok"]
    t = sweep["timing"]
    body = [f"<h1>sweep {esc(sweep['name'])}</h1>"]
    body.append(
        "<p>"
        + esc(
            f"{len(rows)} cells ({len(failed)} failed); wall time {t['wall_seconds']:.0f} s; "
            f"stage work {t['stage_seconds']:.0f} s, of which {t['saved_seconds']:.0f} s "
            f"was shared between cells through the stage store (made once, used again); "
            f"executor {sweep['executor']}; machine {sweep['machine'].get('cpu', '?')}."
        )
        + "</p>"
    )
    body.append("<h2>treatment - control per cell (95 % CI over seeds)</h2>")
    body.append(
        interval_plot([(r["cell"], r.get("diff"), r.get("diff_lo"), r.get("diff_hi")) for r in ok])
    )
    if sweep.get("baseline") and any("removal" in r for r in ok):
        body.append(
            f"<h2>removal against '{esc(sweep['baseline'])}' (Fieller 95 % CI over seeds)</h2>"
        )
        pts = [
            (r["cell"], r.get("removal"), r.get("removal_lo"), r.get("removal_hi"))
            for r in ok
            if r.get("baseline") not in (None, r["cell"])
        ]
        body.append(interval_plot(pts))
    body.append(_param_plots(rows, sweep.get("grid") or {}))
    body.append(_matrix(sweep.get("matrix")))
    body.append("<h2>cells</h2>")
    params = sorted({k for r in rows for k in r if k.startswith("set.")})
    shown = [(k, h) for k, h in _SHOWN if any(k in r for r in rows)]
    head = ["cell", *(p[4:] for p in params), *(h for _, h in shown)]
    body.append(
        table(
            head,
            [[r["cell"], *(r.get(p) for p in params), *(r.get(k) for k, _ in shown)] for r in ok],
        )
    )
    if failed:
        body.append("<h2>failed cells</h2>")
        body.append(table(["cell", "error"], [[r["cell"], r.get("error")] for r in failed]))
    body.append(f"<p>{esc('Every column, per cell: table.csv; the runs: cells/<label>/.')}</p>")
    return page(f"sweep {sweep['name']}", "".join(body))
