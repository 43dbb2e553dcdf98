"""Every option's treatment - control shift in finished runs, per seed, with a paired t-test.

    python benchmarks/option_pvalues.py RUN [RUN ...] --top 3 --out results.md

A run's summary names the target's shift and the largest others; this reads each seed's exact
evaluation (`seed-N/eval-{treatment,control}/eval.json`) to give every option its own p, for
runs whose data moved an option other than the target (a system-prompted teacher's numbers).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats


def shifts(run: Path) -> dict[str, np.ndarray]:
    """Per option, treatment - control (exact probability) in each seed."""
    seeds = sorted(run.glob("seed-*"), key=lambda p: int(p.name.split("-")[1]))
    per: dict[str, list[float]] = {}
    for s in seeds:
        t = json.loads((s / "eval-treatment" / "eval.json").read_text())["exact"]["options"]
        c = json.loads((s / "eval-control" / "eval.json").read_text())["exact"]["options"]
        for o in t:
            per.setdefault(o, []).append(t[o] - c[o])
    return {o: np.array(v) for o, v in per.items()}


def table(runs: list[Path], top: int) -> str:
    lines = [
        "| run | teacher's system prompt | option | treatment - control (mean over seeds) | per seed | p (paired t) |",
        "|---|---|---|---:|---|---:|",
    ]
    for run in runs:
        m = json.loads((run / "manifest.json").read_text())
        target = m["config_resolved"]["trait"]["target"]
        prompt = m["config_resolved"]["teacher"].get("system_prompt") or "(the paper's)"
        d = shifts(run)
        order = sorted(d, key=lambda o: -d[o].mean())
        for o in dict.fromkeys([*order[:top], target]):
            x = d[o]
            p = float(stats.ttest_1samp(x, 0.0).pvalue) if len(x) > 1 else float("nan")
            seeds = ", ".join(f"{v:+.4f}" for v in x)
            lines.append(
                f"| {run.name} | {prompt} | {o}{' (target)' if o == target else ''} "
                f"| {x.mean():+.4f} | {seeds} | {p:.2g} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--top", type=int, default=3, help="options listed per run (and the target)")
    ap.add_argument("--out", type=Path, help="also write the table here")
    a = ap.parse_args()
    md = table(a.runs, a.top)
    print(md)
    if a.out:
        a.out.write_text(md)


if __name__ == "__main__":
    main()
