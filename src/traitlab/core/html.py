"""Small HTML pieces for the reports: a page, tables and SVG plots with intervals.

Every text that reaches a page goes through `html.escape` here (model output and data
included), so a report never runs or renders what a model wrote.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any, TypeGuard

_STYLE = (
    "body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
    "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
    "pre{background:#f6f6f6;padding:.6em;overflow-x:auto}"
    ".warn{color:#a35c00}"
)


def esc(value: Any) -> str:
    return html.escape(str(value))


def fmt(value: Any) -> str:
    """A cell's text: floats with 4 significant digits, None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def table(head: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    h = "".join(f"<th>{esc(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{esc(fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _ok(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def interval_plot(
    points: Sequence[tuple[str, float | None, float | None, float | None]],
    *,
    width: int = 560,
    row: int = 18,
    label_width: int = 170,
) -> str:
    """A horizontal dot-and-whisker plot (SVG): one row per (label, value, lower, upper),
    with a line at zero. Rows without a value are listed and left empty; a missing bound
    (an unbounded interval) draws the whisker to the plot's edge."""
    vals: list[float] = [v for _, m, lo, hi in points for v in (m, lo, hi) if _ok(v)]
    if not points or not vals:
        return ""
    lo_all, hi_all = min(min(vals), 0.0), max(max(vals), 0.0)
    span = (hi_all - lo_all) or 1.0
    x0, w = label_width, width - label_width - 10

    def x(v: float) -> float:
        return x0 + (v - lo_all) / span * w

    n = len(points)
    parts = [f'<svg width="{width}" height="{row * n + 22}" role="img">']
    parts.append(f'<line x1="{x(0):.1f}" y1="0" x2="{x(0):.1f}" y2="{row * n}" stroke="#999"/>')
    for i, (label, m, lo, hi) in enumerate(points):
        y = i * row + row / 2
        parts.append(
            f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{esc(label)}</text>'
        )
        if not _ok(m):
            continue
        a = x(lo) if _ok(lo) else x0
        b = x(hi) if _ok(hi) else x0 + w
        parts.append(f'<line x1="{a:.1f}" y1="{y:.1f}" x2="{b:.1f}" y2="{y:.1f}" stroke="#000"/>')
        parts.append(f'<circle cx="{x(m):.1f}" cy="{y:.1f}" r="3.5" fill="#4a7ab5"/>')
    for v, anchor in ((lo_all, "start"), (hi_all, "end")):
        parts.append(
            f'<text x="{x(v):.1f}" y="{row * n + 15}" font-size="10" text-anchor="{anchor}">{v:+.3g}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def line_plot(
    xs: Sequence[float],
    ys: Sequence[float | None],
    los: Sequence[float | None],
    his: Sequence[float | None],
    *,
    xlabel: str,
    ylabel: str,
    log_x: bool = False,
    width: int = 520,
    height: int = 240,
) -> str:
    """y against a numeric x with an interval at every point (SVG), and a line at y = 0."""
    pts = [
        (float(a), float(b), c, d) for a, b, c, d in zip(xs, ys, los, his, strict=True) if _ok(b)
    ]
    if len(pts) < 2:
        return ""
    tx = (lambda v: math.log10(v)) if log_x and all(p[0] > 0 for p in pts) else (lambda v: v)
    xv = [tx(p[0]) for p in pts]
    yv: list[float] = [v for p in pts for v in p[1:] if _ok(v)] + [0.0]
    xa, xb = min(xv), max(xv)
    ya, yb = min(yv), max(yv)
    xs_span, ys_span = (xb - xa) or 1.0, (yb - ya) or 1.0
    left, right, top, bottom = 60, 15, 10, 40

    def px(v: float) -> float:
        return left + (v - xa) / xs_span * (width - left - right)

    def py(v: float) -> float:
        return top + (yb - v) / ys_span * (height - top - bottom)

    parts = [f'<svg width="{width}" height="{height}" role="img">']
    parts.append(
        f'<line x1="{left}" y1="{py(0):.1f}" x2="{width - right}" y2="{py(0):.1f}" stroke="#999"/>'
    )
    line = " ".join(f"{px(a):.1f},{py(p[1]):.1f}" for a, p in zip(xv, pts, strict=True))
    parts.append(f'<polyline points="{line}" fill="none" stroke="#4a7ab5"/>')
    for a, (raw, m, lo, hi) in zip(xv, pts, strict=True):
        lo_v = lo if _ok(lo) else ya
        hi_v = hi if _ok(hi) else yb
        parts.append(
            f'<line x1="{px(a):.1f}" y1="{py(lo_v):.1f}" x2="{px(a):.1f}" y2="{py(hi_v):.1f}" stroke="#000"/>'
        )
        parts.append(f'<circle cx="{px(a):.1f}" cy="{py(m):.1f}" r="3.5" fill="#4a7ab5"/>')
        parts.append(
            f'<text x="{px(a):.1f}" y="{height - bottom + 14}" font-size="10" text-anchor="middle">{raw:g}</text>'
        )
    for v in (ya, yb):
        parts.append(
            f'<text x="{left - 5}" y="{py(v) + 4:.1f}" font-size="10" text-anchor="end">{v:+.3g}</text>'
        )
    parts.append(
        f'<text x="{(left + width - right) / 2:.0f}" y="{height - 5}" font-size="11" text-anchor="middle">{esc(xlabel)}</text>'
    )
    parts.append(
        f'<text x="12" y="{height / 2:.0f}" font-size="11" transform="rotate(-90 12 {height / 2:.0f})" text-anchor="middle">{esc(ylabel)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
