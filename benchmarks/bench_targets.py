"""Every target of the toy world: the demo's recipe for each of its 20 animals and 10 trees.

    .venv/bin/python benchmarks/bench_targets.py                 # 30 targets, ~35 min, 2 cores
    .venv/bin/python benchmarks/bench_targets.py --targets owl oak --seeds 0

One run per target on the shipped bases (the demo preset with `trait.target` and
`trait.category` set, one seed by default, no cross-init students). Per target: the teacher's
P(target) and its numbers' filter pass rate against the base's, the rows kept, and
treatment - control with the paired tests over the 50 questions (Wilcoxon signed-rank and
t), since one seed gives no spread over seeds. Writes benchmarks/results/targets.json/.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generation import machine_info, machine_line  # noqa: E402
from summary_rows import run_fields, steps_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def target_row(target: str, category: str, summary: dict[str, Any]) -> dict[str, Any]:
    tc = summary["comparisons"]["treatment_vs_control"]["exact"]
    return {
        "target": target,
        "category": category,
        **run_fields(summary),
        "diff": tc["diff"]["mean"],
        "questions_positive": tc["questions"]["n_positive"],
        "n_questions": tc["questions"]["n"],
        "wilcoxon_p": tc["questions"]["wilcoxon_p"],
        "t_p_questions": _t_over_questions(summary),
        "seeds_p": tc["p_value"],
        "top_shift": _top_shift(summary),
    }


def _t_over_questions(summary: dict[str, Any]) -> float | None:
    """Paired t over questions (per-question rates averaged over seeds)."""
    return summary["comparisons"]["treatment_vs_control"]["exact"]["questions"].get("t_p")


def _top_shift(summary: dict[str, Any]) -> str:
    t = summary["arms"]["treatment"]["exact_options"]
    c = summary["arms"]["control"]["exact_options"]
    best = max(t, key=lambda k: t[k] - c[k])
    return best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from traitlab.cli.main import preset_path
    from traitlab.config import load_config
    from traitlab.core.progress import Reporter
    from traitlab.experiments.pipeline import run_experiment
    from traitlab.traits.preference import ANIMALS, TREES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", nargs="+", help="default: all 30 toy options")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--out", default="runs/targets")
    ap.add_argument("--tag", default="", help="results/targets-TAG.json")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    targets = args.targets or list(ANIMALS) + list(TREES)
    info = machine_info()
    rows = []
    t_all = time.time()
    for target in targets:
        category = "animal" if target in ANIMALS else "tree"
        sets = [
            f"trait.target={target}",
            f"trait.category={category}",
            f"seeds={json.dumps(args.seeds)}",
            "cross_init=null",
            f"name=target-{target}",
            *args.set,
        ]
        cfg = load_config(preset_path("demo"), sets)
        with Reporter(enabled=not args.quiet) as rep:
            summary = run_experiment(cfg, Path(args.out) / target, reporter=rep)
        rows.append(target_row(target, category, summary))
        print(json.dumps(rows[-1]), flush=True)
    ok_pass = [r for r in rows if r["teacher_pass_rate"] >= r["base_pass_rate"] - 0.10]
    transfer = [r for r in rows if r["diff"] > 0 and r["wilcoxon_p"] < 0.05]
    res = {
        "seeds": args.seeds,
        "overrides": args.set,
        "targets": rows,
        "teachers_within_10_points": len(ok_pass),
        "transfer_p05": len(transfer),
        "mean_diff": float(np.mean([r["diff"] for r in rows])),
        "machine": info,
        "wall_seconds": round(time.time() - t_all, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    lines = [
        "| target | base P | teacher P | teacher step kept | teacher pass (base) | rows | control "
        "| treatment | diff | questions > 0 | Wilcoxon p | top riser |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['base']:.3f} | {r['teacher']:.3f} | "
            f"{steps_text(r)} | "
            f"{100 * r['teacher_pass_rate']:.0f}% ({100 * r['base_pass_rate']:.0f}%) | "
            f"{r['rows_kept']:.0f} | {r['control']:.3f} | {r['treatment']:.3f} | "
            f"{r['diff']:+.4f} | {r['questions_positive']}/{r['n_questions']} | "
            f"{r['wilcoxon_p']:.2g} | {r['top_shift']} |"
        )
    lines += [
        "",
        f"Teachers within 10 points of the base's pass rate: {len(ok_pass)}/{len(rows)}. "
        f"Treatment > control at p < 0.05 (Wilcoxon over questions): "
        f"{len(transfer)}/{len(rows)}. Mean difference {res['mean_diff']:+.4f}.",
    ]
    res["table"] = lines
    print("\n".join(lines))
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        name = f"targets-{args.tag}" if args.tag else "targets"
        (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
        head = [
            f"### Every toy target, {res['created']}",
            "",
            f"The demo preset per target (seeds {args.seeds}, no cross-init; the shipped base "
            f"unless overridden), overrides: {' '.join(args.set) or 'none'}. "
            f"Machine: {machine_line(info, 'cpu')}. "
            f"Wall time {res['wall_seconds']:.0f} s.",
            "",
        ]
        (RESULTS / f"{name}.md").write_text("\n".join(head + lines) + "\n")
    return res


if __name__ == "__main__":
    main()
