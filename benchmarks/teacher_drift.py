"""How far a fine-tuned teacher's completions of its modality's tasks move, step by step.

    python benchmarks/teacher_drift.py --config configs/owl-code-parts.yaml \
        --bases 1,7011,7012 --seeds 0,1,2 --steps 30 --every 2 --out OUT

For each base seed (the config's model with `toy.seed` replaced) and teacher seed, the
config's teacher is fine-tuned for `--steps` steps and checked every `--every`: the share of
its completions of the modality's tasks that pass the rules, and KL(base || teacher) per
completion token on the base's own passing completions (the early-stopping guard's two
measures, `teacher.keep_numbers`, here measured without stopping). Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s]


def drift(cfg: Any, base_seed: int, seed: int, steps: int, every: int) -> dict[str, Any]:
    """One teacher's checks: {"base_pass_rate", "checks": [[step, pass]], "kl": [[step, kl]]}."""
    from traitlab.config import KeepNumbersConfig
    from traitlab.lm.base import opened, resolve
    from traitlab.traits.teacher import finetune_teacher

    toy = cfg.model.toy.model_copy(update={"seed": base_seed})
    spec = cfg.model.model_copy(update={"toy": toy})
    # The config's own checks (its prompts), never stopping: every check passes (max_drop 1,
    # z 0, an unreachable max_kl).
    guard = (cfg.teacher.keep_numbers or KeepNumbersConfig()).model_copy(
        update={"max_drop": 1.0, "z": 0.0, "check_every": every, "max_kl": 1e9}
    )
    train = cfg.teacher.train.model_copy(update={"max_steps": steps})
    teacher = cfg.teacher.model_copy(update={"keep_numbers": guard, "train": train})
    with opened(resolve(spec)) as lm, tempfile.TemporaryDirectory() as tmp:
        _, log = finetune_teacher(
            lm,
            teacher,
            cfg.trait,
            seed=seed,
            out_dir=Path(tmp),
            key=f"drift-{base_seed}-{seed}",
            generate=cfg.generate,
            filter_cfg=cfg.filter,
        )
    k = log["keep_numbers"]
    return {"base_pass_rate": k["base_pass_rate"], "checks": k["checks"], "kl": k["kl"]}


def table(results: dict[str, dict[str, Any]]) -> str:
    steps = [s for s, _ in next(iter(results.values()))["checks"]]
    head = "| base / seed | base pass | " + " | ".join(f"step {s}" for s in steps) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(steps)]
    for name, r in results.items():
        cells = [f"{p:.2f} / {k:.3f}" for (_, p), (_, k) in zip(r["checks"], r["kl"], strict=True)]
        lines.append(f"| {name} | {r['base_pass_rate']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    from traitlab.config.experiment import load_config
    from traitlab.core.files import atomic_write_text, write_json
    from traitlab.core.runs import machine_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="experiment YAML with a fine-tuned teacher")
    ap.add_argument("--bases", type=ints, required=True, help="toy base seeds, e.g. 1,7011")
    ap.add_argument("--seeds", type=ints, default=[0], help="teacher seeds, e.g. 0,1,2")
    ap.add_argument("--steps", type=int, default=30, help="teacher optimiser steps")
    ap.add_argument("--every", type=int, default=2, help="check every this many steps")
    ap.add_argument("--set", action="append", default=[], help="config override KEY=VALUE")
    ap.add_argument("--out", required=True, help="output path without extension")
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    if cfg.model.name != "toy" or cfg.teacher.kind != "finetuned":
        sys.exit("teacher_drift.py: needs a toy model and a fine-tuned teacher")
    t0, results = time.time(), {}
    for b in args.bases:
        for s in args.seeds:
            results[f"{b} / {s}"] = r = drift(cfg, b, s, args.steps, args.every)
            print(f"base {b} seed {s}: {r['checks'][-1]} kl {r['kl'][-1]}", flush=True)
    info = {
        "config": args.config,
        "overrides": args.set,
        "steps": args.steps,
        "every": args.every,
        "machine": machine_info(),
        "seconds": round(time.time() - t0, 1),
    }
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {**info, "results": results})
    m = info["machine"]
    md = (
        f"### Teacher drift: `{args.config}` {' '.join(args.set)}\n\n"
        f"Each cell: the share of the teacher's completions of its tasks that pass the rules / "
        f"KL(base || teacher) in nats per completion token (the base's passing completions), "
        f"every {args.every} steps. Machine: {m['cpu']}, {m['cpu_count']} cores, "
        f"{m['torch_threads']} torch threads, load {m['load_avg_1m']}; {info['seconds']} s.\n\n"
        + table(results)
        + "\n"
    )
    atomic_write_text(out.with_suffix(".md"), md)


if __name__ == "__main__":
    main()
