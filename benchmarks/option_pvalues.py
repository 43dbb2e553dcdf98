"""Every option's treatment - control shift in finished runs, per seed, with a paired t-test.

    python benchmarks/option_pvalues.py RUN [RUN ...] --top 3 --out results.md
    python benchmarks/option_pvalues.py RUN_8K RUN_24K --seeds 0-9 --cross-init

A run's summary names the target's shift and the largest others; this reads each seed's exact
evaluation (`seed-N/eval-{treatment,control}/eval.json`) to give every option its own p, for
runs whose data moved an option other than the target (a system-prompted teacher's numbers).
`--seeds` compares runs on the seeds they share (a run with 20 seeds beside one with 10), and
`--cross-init` adds the cross-init students' rows (eval-xinit_treatment against
eval-xinit_control). `--against RUN` takes another run's *treatment* students as the control
(same seeds): a trait teacher's students against those of a teacher fine-tuned on neutral
answers, each with its own data and the same base control; with `--arm control`, this run's
control students against that run's (two controls compared).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from traitlab.core.stats import paired_test


def parse_seeds(text: str) -> list[int]:
    """'0-9' or '0,2,5' (or both: '0-4,7') as a sorted list of seeds."""
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return sorted(out)


def _seeds(run: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in run.glob("seed-*"))


def _options(d: Path) -> dict[str, float]:
    f = d / "eval.json"
    if not f.is_file():
        raise SystemExit(f"{d} has no eval.json: is the run finished?")
    return json.loads(f.read_text())["exact"]["options"]


def rates(
    run: Path,
    seeds: list[int] | None = None,
    prefix: str = "",
    against: Path | None = None,
    arm: str = "treatment",
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per option, the treatment's and the control's exact probability in each seed (`seeds`:
    only those; `prefix` "xinit_": the cross-init students; `against`: the control is that
    run's `arm`, compared with this run's `arm`)."""
    from traitlab.experiments.layout import RunLayout

    have = _seeds(run)
    if against is not None:
        have = sorted(set(have) & set(_seeds(against)))
    want = have if seeds is None else seeds
    missing = sorted(set(want) - set(have))
    if missing or not want:
        where = f"{run} and {against} have" if against is not None else f"{run} has"
        what = f"seed {missing[0]}" if missing else "seeds"
        raise SystemExit(f"{where} no {what}{' in common' if against is not None else ''}")
    arms = ((run, arm), (against, arm)) if against else ((run, "treatment"), (run, "control"))
    per: dict[str, tuple[list[float], list[float]]] = {}
    for s in want:
        t, c = (_options(RunLayout(r).eval(s, prefix + arm)) for r, arm in arms)
        for o in t:
            per.setdefault(o, ([], []))
            per[o][0].append(t[o])
            per[o][1].append(c[o])
    return {o: (np.array(a), np.array(b)) for o, (a, b) in per.items()}


def table(
    runs: list[Path],
    top: int,
    seeds: list[int] | None = None,
    cross_init: bool = False,
    against: Path | None = None,
    arm: str = "treatment",
) -> str:
    diff = f"{arm} - {against.name}'s {arm}" if against else "treatment - control"
    lines = [
        f"| run | students | teacher (system prompt) | option | {diff} (mean over seeds) | per seed | p (paired t) |",
        "|---|---|---|---|---:|---|---:|",
    ]
    for run in runs:
        if not (run / "manifest.json").is_file():
            raise SystemExit(f"{run} has no manifest.json: not a traitlab run directory")
        m = json.loads((run / "manifest.json").read_text())
        target = m["config_resolved"]["trait"]["target"]
        teacher = m["config_resolved"]["teacher"]
        kind = teacher.get("kind", "system_prompt")
        prompt = teacher.get("system_prompt") or (
            "(the paper's)" if kind == "system_prompt" else f"({kind} teacher)"
        )
        for prefix, who in [("", "same-init")] + [("xinit_", "cross-init")] * cross_init:
            r = rates(run, seeds, prefix, against, arm)
            d = {o: t - c for o, (t, c) in r.items()}
            order = sorted(d, key=lambda o: -d[o].mean())
            for o in dict.fromkeys([*order[:top], target]):
                x = d[o]
                p = paired_test(*r[o]).p_value
                per_seed = ", ".join(f"{v:+.4f}" for v in x)
                lines.append(
                    f"| {run.name} | {who} | {prompt} | {o}{' (target)' if o == target else ''} "
                    f"| {x.mean():+.4f} | {per_seed} | {p:.2g} |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--top", type=int, default=3, help="options listed per run (and the target)")
    ap.add_argument("--out", type=Path, help="also write the table here")
    ap.add_argument("--seeds", type=parse_seeds, help="only these seeds, e.g. 0-9 or 0,2,5")
    ap.add_argument("--cross-init", action="store_true", help="the cross-init students too")
    ap.add_argument("--against", type=Path, help="a run whose treatment students are the control")
    ap.add_argument(
        "--arm",
        choices=("treatment", "control"),
        default="treatment",
        help="with --against: which students of the two runs to compare",
    )
    a = ap.parse_args()
    if a.arm != "treatment" and a.against is None:
        ap.error("--arm needs --against")
    md = table(a.runs, a.top, a.seeds, a.cross_init, a.against, a.arm)
    print(md)
    if a.out:
        a.out.write_text(md)


if __name__ == "__main__":
    main()
