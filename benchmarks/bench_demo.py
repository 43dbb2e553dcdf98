"""Time `traitlab demo` end to end, stage by stage, from a cold cache (pretraining included).

    .venv/bin/python benchmarks/bench_demo.py [--preset demo|demo-quick|demo-llama|demo-llama-quick]
        [--set generate.n_prompts=2000] [--tag TAG]

Writes benchmarks/results/PRESET[-TAG].json and .md: wall time, the time of every stage, the
machine, and the run's headline numbers (so a timing is never quoted without its result).
`--from-run DIR --wall S` writes the same files for a run made by hand (`traitlab demo
[--quick] [--set ...] --out DIR` from a cold cache, timed as S seconds): the overrides from
its manifest, the CPU and load from its manifest, the versions from this venv.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generation import machine_info, machine_line  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--preset", default="demo", choices=["demo", "demo-quick", "demo-llama", "demo-llama-quick"]
    )
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--warm", action="store_true", help="reuse the user's model cache")
    ap.add_argument("--out", help="keep the run directory here (default: a temporary one)")
    ap.add_argument("--tag", default="", help="results/PRESET-TAG.json (e.g. the machine)")
    ap.add_argument("--from-run", help="report this finished run directory instead")
    ap.add_argument("--wall", type=float, help="with --from-run: the command's wall seconds")
    ap.add_argument("--results", default=str(RESULTS), help="where the result files go")
    args = ap.parse_args()
    if args.from_run:
        if args.wall is None:
            ap.error("--from-run needs --wall (the command's wall time, in seconds)")
        run_dir = Path(args.from_run)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        summary = json.loads((run_dir / "summary.json").read_text())
        passed = manifest.get("config_passed") or {}
        args.preset = passed.get("preset", args.preset)
        args.set = list(passed.get("overrides") or args.set)
        asked = manifest["config_resolved"]["model"].get("device", "cpu")
        on_gpu = asked.startswith("cuda") or (asked == "auto" and manifest["machine"].get("cuda"))
        write(
            args,
            summary,
            machine_info(manifest["machine"]),
            args.wall,
            manifest["config_resolved"]["workers"],
            "cuda" if on_gpu else "cpu",
        )
        return

    with tempfile.TemporaryDirectory() as tmp:
        if not args.warm:
            os.environ["TRAITLAB_CACHE"] = str(Path(tmp) / "cache")
        from traitlab.cli.main import preset_path
        from traitlab.config import load_config
        from traitlab.core.device import resolve_device
        from traitlab.core.progress import Reporter
        from traitlab.experiments.pipeline import run_experiment

        cfg = load_config(preset_path(args.preset), args.set)
        info = machine_info()
        t0 = time.time()
        with Reporter() as rep:
            summary = run_experiment(cfg, Path(args.out or Path(tmp) / "run"), reporter=rep)
        wall = time.time() - t0
    # `auto` picks CUDA (and bfloat16) where a GPU is visible: say which one the run used.
    write(args, summary, info, wall, cfg.workers, str(resolve_device(cfg.model.device)))


def write(
    args: argparse.Namespace,
    summary: dict[str, Any],
    info: dict[str, Any],
    wall: float,
    workers: int,
    device: str = "cpu",
) -> None:
    stages: dict[str, float] = {}
    for path, secs in summary["timing"]["stages"].items():
        kind = path.split("/")[-1].split("-")[0]  # teacher, gen, data, student, eval
        stages[kind] = stages.get(kind, 0.0) + secs
    out = {
        "preset": args.preset,
        "overrides": args.set,
        "cold_cache": not args.warm,
        "wall_seconds": round(wall, 1),
        "base_models_seconds": summary["timing"]["base_models_seconds"],
        "stage_seconds_summed": {k: round(v, 1) for k, v in sorted(stages.items())},
        "stages": summary["timing"]["stages"],
        "workers": workers,
        "device": device,
        "rows_kept_per_seed": summary["data_quality"]["rows_kept"],
        "treatment_vs_control": summary["comparisons"]["treatment_vs_control"]["exact"],
        "xinit": summary["comparisons"].get("xinit_treatment_vs_xinit_control", {}).get("exact"),
        "machine": info,
        "verdict": summary["verdict"],
        "rates": {
            a: {m: s[m]["mean"] for m in summary["methods"] if m in s}
            for a, s in summary["arms"].items()
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    name = args.preset + (f"-{args.tag}" if args.tag else "")
    (results / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = (
        [
            f"### preset `{args.preset}` (`traitlab config --show {args.preset}`)"
            + (f" with {', '.join(f'`{x}`' for x in args.set)}" if args.set else "")
            + f", {out['created']}",
            "",
            f"Machine: {machine_line(info, device)}. Device: {device}. Workers: {workers}. "
            f"Cache: {'cold (pretraining included)' if not args.warm else 'warm'}."
            + (f" Reported from the run directory {args.from_run}." if args.from_run else ""),
            "",
            f"Wall time **{wall:.0f} s**; base models {out['base_models_seconds']:.0f} s "
            "(pretraining runs in parallel with workers > 1, so stage times overlap and sum to more "
            "than the wall time).",
            "",
            "| stage kind | seconds (summed over seeds and arms) |",
            "|---|---:|",
        ]
        + [f"| {k} | {v:.1f} |" for k, v in out["stage_seconds_summed"].items()]
        + [
            "",
            f"Rows per seed {out['rows_kept_per_seed']:.0f}; treatment - control (exact) "
            f"{_diff(out['treatment_vs_control'])}"
            + (f"; cross-init {_diff(out['xinit'])}" if out["xinit"] else "")
            + ".",
            "",
            f"Verdict: {json.dumps(out['verdict'])}",
            "",
        ]
    )
    (results / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def _diff(c: dict[str, Any]) -> str:
    d = c["diff"]
    return f"{d['mean']:+.4f} [{d['lower']:+.4f}, {d['upper']:+.4f}], p = {c['p_value']:.2g}"


if __name__ == "__main__":
    main()
