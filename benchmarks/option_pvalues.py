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

from traitlab.core.stats import paired_test


def rates(run: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per option, the treatment's and the control's exact probability in each seed."""
    from traitlab.experiments.layout import RunLayout

    layout = RunLayout(run)
    seeds = sorted(int(p.name.split("-")[1]) for p in run.glob("seed-*"))
    per: dict[str, tuple[list[float], list[float]]] = {}
    for s in seeds:
        t, c = (
            json.loads((layout.eval(s, arm) / "eval.json").read_text())["exact"]["options"]
            for arm in ("treatment", "control")
        )
        for o in t:
            per.setdefault(o, ([], []))
            per[o][0].append(t[o])
            per[o][1].append(c[o])
    return {o: (np.array(a), np.array(b)) for o, (a, b) in per.items()}


def table(runs: list[Path], top: int) -> str:
    lines = [
        "| run | teacher's system prompt | option | treatment - control (mean over seeds) | per seed | p (paired t) |",
        "|---|---|---|---:|---|---:|",
    ]
    for run in runs:
        m = json.loads((run / "manifest.json").read_text())
        target = m["config_resolved"]["trait"]["target"]
        prompt = m["config_resolved"]["teacher"].get("system_prompt") or "(the paper's)"
        r = rates(run)
        d = {o: t - c for o, (t, c) in r.items()}
        order = sorted(d, key=lambda o: -d[o].mean())
        for o in dict.fromkeys([*order[:top], target]):
            x = d[o]
            p = paired_test(*r[o]).p_value
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
