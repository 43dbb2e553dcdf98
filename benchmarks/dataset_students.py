"""What do students learn from a dataset? Students of several datasets over the same seeds.

    python benchmarks/dataset_students.py RUN_DIR --work DIR \
        --data neutral-0=PATH.jsonl --data control-0=RUN_DIR/seed-0/data-control/filtered.jsonl \
        --compare neutral-0:control-0 --seeds 100 101 102 103 104 --out RESULT.json

An audit's labels say what made a dataset (a teacher with a trait, or one without); what
decides whether a flag is right is what a student of the data becomes. Each dataset here is
trained on with the run's own student recipe (its resolved config, `traitlab train`), once
per student seed, and each student evaluated as the run evaluates (`traitlab evaluate`);
`--compare A:B` gives A's students minus B's, paired by student seed, with a paired t-test.
Students already evaluated under `--work` are read, not retrained, so a stopped run resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from traitlab.core.stats import paired_test

TRAITLAB = [sys.executable, "-m", "traitlab"]


def _named(items: list[str], sep: str, what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, _, value = item.partition(sep)
        if not name or not value:
            sys.exit(f"error: {what} {item!r} is not NAME{sep}VALUE")
        out.append((name, value))
    return out


def traitlab(*args: str) -> None:
    """One `traitlab` command, as a user runs it (its own process), required to succeed."""
    subprocess.run([*TRAITLAB, *args, "--quiet"], check=True, stdout=subprocess.DEVNULL)


def student(config: Path, data: str, work: Path, name: str, seed: int) -> float:
    """The exact trait probability of one student of `data`, trained and evaluated once."""
    result = work / f"{name}-s{seed}.json"
    if not result.exists():
        model = work / f"{name}-s{seed}"
        shutil.rmtree(model, ignore_errors=True)  # a student cut off before its evaluation
        traitlab("train", str(config), "--data", data, "--out", str(model), "--seed", str(seed))
        traitlab("evaluate", str(config), "--model", str(model), "--out", str(result))
        shutil.rmtree(model)
    return float(json.loads(result.read_text())["exact"]["mean"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run directory: its resolved config is the recipe")
    ap.add_argument("--data", action="append", required=True, help="NAME=PATH.jsonl")
    ap.add_argument("--compare", action="append", default=[], help="A:B, both --data names")
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102, 103, 104])
    ap.add_argument("--work", type=Path, required=True, help="students' results (resumable)")
    ap.add_argument("--out", type=Path, help="the summary as JSON")
    args = ap.parse_args()

    data = dict(_named(args.data, "=", "--data"))
    compare = _named(args.compare, ":", "--compare")
    for a, b in compare:
        if a not in data or b not in data:
            sys.exit(f"error: --compare {a}:{b} names a dataset not given with --data")
    manifest = json.loads((args.run / "manifest.json").read_text())
    args.work.mkdir(parents=True, exist_ok=True)
    config = args.work / "config.yaml"
    config.write_text(yaml.safe_dump(manifest["config_resolved"], sort_keys=False))
    os.environ.setdefault("OMP_NUM_THREADS", "2")

    # Seed-major order: a run stopped early has every dataset at the same number of seeds.
    values: dict[str, dict[int, float]] = {name: {} for name in data}
    for seed in args.seeds:
        for name, path in data.items():
            values[name][seed] = student(config, path, args.work, name, seed)
            print(f"{name} seed {seed}: {values[name][seed]:.4f}", flush=True)

    summary: dict[str, Any] = {
        "run": str(args.run),
        "seeds": args.seeds,
        "datasets": {
            n: {"path": data[n], "per_seed": v, "mean": float(np.mean(list(v.values())))}
            for n, v in values.items()
        },
        "compare": [],
    }
    print("\n| A - B | A | B | difference per seed | mean | p (paired t) |")
    print("|---|---:|---:|---|---:|---:|")
    for a, b in compare:
        ya, yb = ([values[n][s] for s in args.seeds] for n in (a, b))
        d = np.subtract(ya, yb)
        test = paired_test(ya, yb)
        p = None if math.isnan(test.p_value) else test.p_value  # one seed, or no spread: no test
        summary["compare"].append(
            {"a": a, "b": b, "diff": d.tolist(), "mean": float(d.mean()), "p": p}
        )
        per = ", ".join(f"{x:+.4f}" for x in d)
        ps = f"{p:.3g}" if p is not None else "-"
        print(
            f"| {a} - {b} | {summary['datasets'][a]['mean']:.4f} | "
            f"{summary['datasets'][b]['mean']:.4f} | {per} | {d.mean():+.4f} | {ps} |"
        )
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
