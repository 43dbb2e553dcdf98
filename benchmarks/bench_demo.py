"""Time `traitlab demo` end to end, stage by stage, from a cold cache (pretraining included).

    .venv/bin/python benchmarks/bench_demo.py [--preset demo|demo-quick|demo-llama|demo-llama-quick]

Writes benchmarks/results/PRESET.json and .md: wall time, the time of every stage, the
machine, and the run's headline numbers (so a timing is never quoted without its result).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

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
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if not args.warm:
            os.environ["TRAITLAB_CACHE"] = str(Path(tmp) / "cache")
        from traitlab.cli.main import preset_path
        from traitlab.config import load_config
        from traitlab.core.progress import Reporter
        from traitlab.experiments.pipeline import run_experiment

        cfg = load_config(preset_path(args.preset), args.set)
        info = machine_info()
        t0 = time.time()
        with Reporter() as rep:
            summary = run_experiment(cfg, Path(args.out or Path(tmp) / "run"), reporter=rep)
        wall = time.time() - t0

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
        "workers": cfg.workers,
        "machine": info,
        "verdict": summary["verdict"],
        "rates": {
            a: {m: s[m]["mean"] for m in summary["methods"] if m in s}
            for a, s in summary["arms"].items()
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    RESULTS.mkdir(exist_ok=True)
    name = args.preset
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = (
        [
            f"### preset `{name}` (`traitlab config --show {name}`), {out['created']}",
            "",
            f"Machine: {machine_line(info, 'cpu')}. Workers: {cfg.workers}. "
            f"Cache: {'cold (pretraining included)' if not args.warm else 'warm'}.",
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
            f"Verdict: {json.dumps(out['verdict'])}",
            "",
        ]
    )
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
