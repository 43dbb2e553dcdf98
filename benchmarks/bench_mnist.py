"""Benchmark of the MNIST aux-logit experiment on this machine.

1. Step time of the batched program against a loop of ordinary nn.Sequential models
   (the same arithmetic), for M = 1, 10, 100 models: one distillation step (batch 64) of a
   64-256-256-13 MLP.
2. The default experiment's cost: wall and CPU ms per teacher step and per student step
   (1 thread and --threads), extrapolated to the run's step counts; with --full, the whole run.

Writes benchmarks/results/mnist.json and mnist.md. Wall times on a shared machine are
pessimistic; CPU seconds / threads approximates wall time on dedicated cores.

    .venv/bin/python benchmarks/bench_mnist.py [--full] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from traitlab.core import runs
from traitlab.mnist.batched import BatchedMLP, make_adam, model_seeds, per_model_distill

OUT = Path(__file__).resolve().parent / "results"


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def step_batched(m: int, steps: int) -> float:
    net = BatchedMLP.init([64, 256, 256, 13], model_seeds(0, "bench", m)).clone(requires_grad=True)
    teacher = BatchedMLP.init([64, 256, 256, 13], model_seeds(1, "bench", m))
    opt = make_adam(net.parameters(), 2e-3)
    g = torch.Generator().manual_seed(0)

    def one() -> None:
        x = torch.rand(m, 64, 64, generator=g) * 2 - 1
        with torch.no_grad():
            t = teacher(x)[..., 10:]
        loss = per_model_distill(net(x)[..., 10:], t).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        one()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - t0) / steps


def step_loop(m: int, steps: int) -> float:
    base = BatchedMLP.init([64, 256, 256, 13], model_seeds(0, "bench", m))
    teach = BatchedMLP.init([64, 256, 256, 13], model_seeds(1, "bench", m))
    mods = [base.to_module(k) for k in range(m)]
    teachers = [teach.to_module(k) for k in range(m)]
    opts = [torch.optim.Adam(mod.parameters(), lr=2e-3) for mod in mods]
    g = torch.Generator().manual_seed(0)

    def one() -> None:
        for mod, t, opt in zip(mods, teachers, opts, strict=True):
            x = torch.rand(64, 64, generator=g) * 2 - 1
            with torch.no_grad():
                tt = t(x)[:, 10:]
            loss = F.kl_div(
                F.log_softmax(mod(x)[:, 10:], -1),
                F.log_softmax(tt, -1),
                log_target=True,
                reduction="batchmean",
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    one()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - t0) / steps


def default_step_costs(threads: int, steps: int = 20) -> dict:
    """Wall and CPU seconds per teacher step and per student step of the default config."""
    from traitlab.mnist.config import MnistConfig
    from traitlab.mnist.data import load_dataset
    from traitlab.mnist.experiment import (
        distill_students,
        init_models,
        student_groups,
        train_teachers,
    )

    torch.set_num_threads(threads)
    cfg = MnistConfig()
    data = load_dataset(cfg.data)
    init = init_models(cfg, data.d_in, "init")
    cross = init_models(cfg, data.d_in, "cross_init")
    tb = cfg.teacher.batch_size
    n_t = len(data.x_train)
    # teacher: `steps` steps = a truncated training set
    sub = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"epochs": 1})})
    small = type(data)(
        data.x_train[: steps * tb],
        data.y_train[: steps * tb],
        data.x_test,
        data.y_test,
        data.image_shape,
        data.source,
    )
    train_teachers(sub, small, init.select(range(2)))  # warm-up (first optimiser step)
    w0, c0 = time.perf_counter(), time.process_time()
    teacher = train_teachers(sub, small, init)
    t_wall, t_cpu = (time.perf_counter() - w0) / steps, (time.process_time() - c0) / steps
    scfg = cfg.model_copy(
        update={
            "student": cfg.student.model_copy(update={"n_noise": steps * cfg.student.batch_size})
        }
    )
    groups = student_groups(cfg, init, cross, list(cfg.controls))
    w0, c0 = time.perf_counter(), time.process_time()
    distill_students(scfg, data, teacher, groups)
    s_wall, s_cpu = (time.perf_counter() - w0) / steps, (time.process_time() - c0) / steps
    n_steps_t = -(-n_t // tb) * cfg.teacher.epochs
    n_steps_s = -(-cfg.student.n_noise // cfg.student.batch_size) * cfg.student.epochs
    return {
        "threads": threads,
        "teacher_step": {"wall_ms": round(1e3 * t_wall, 1), "cpu_ms": round(1e3 * t_cpu, 1)},
        "student_step": {
            "wall_ms": round(1e3 * s_wall, 1),
            "cpu_ms": round(1e3 * s_cpu, 1),
            "groups": [g.name for g in groups],
        },
        "steps": {"teacher": n_steps_t, "student": n_steps_s},
        "extrapolated_wall_s": round(n_steps_t * t_wall + n_steps_s * s_wall, 1),
        "extrapolated_cpu_s": round(n_steps_t * t_cpu + n_steps_s * s_cpu, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--full", action="store_true", help="also run the whole default experiment")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res: dict = {
        "machine": runs.machine_info(),
        "load_before": _load(),
        "threads": args.threads,
        "steps": [],
    }
    for m in (1, 10, 100):
        b = step_batched(m, 20 if m < 100 else 10)
        lp = step_loop(m, 10 if m < 100 else 2)
        res["steps"].append(
            {
                "models": m,
                "batched_ms": round(1e3 * b, 2),
                "loop_ms": round(1e3 * lp, 2),
                "speedup": round(lp / b, 2),
            }
        )
        print(res["steps"][-1], flush=True)
    res["default_cost"] = [default_step_costs(1), default_step_costs(args.threads)]
    for c in res["default_cost"]:
        print(c, flush=True)
    torch.set_num_threads(args.threads)
    if args.full:
        from traitlab.mnist.config import MnistConfig
        from traitlab.mnist.data import load_dataset
        from traitlab.mnist.experiment import run_experiment, summarize

        load_full = _load()
        cfg = MnistConfig(threads=args.threads)
        data = load_dataset(cfg.data)
        r = run_experiment(cfg, data)
        s = summarize(r, cfg.confidence)
        res["full"] = {
            "config": "MnistConfig() defaults (configs/mnist/default.yaml)",
            "load_before": load_full,
            "load_after": _load(),
            "seconds": r["seconds"],
            "steps": r["steps"],
            "accuracy": {
                k: {"mean": v["mean"], "std": v["std"], "ci": v["ci"]}
                for k, v in s["conditions"].items()
            },
        }
        print(res["full"], flush=True)
    res["load_after"] = _load()
    runs.write_json(OUT / "mnist.json", res)
    lines = [
        "# MNIST benchmark",
        "",
        f"Machine: {res['machine']['platform']}, {res['machine']['cpu_count']} CPUs, torch threads "
        f"{args.threads}. Load average before / after: {res['load_before']} / {res['load_after']} "
        "(a shared machine: wall times are pessimistic).",
        "",
        "One distillation step (batch 64, 64-256-256-13 MLP, Adam), M models:",
        "",
        "| models | batched program ms/step | loop of nn.Modules ms/step | speedup |",
        "|---|---|---|---|",
        *[
            f"| {s['models']} | {s['batched_ms']} | {s['loop_ms']} | {s['speedup']}x |"
            for s in res["steps"]
        ],
        "",
    ]
    lines += [
        "Cost of the default experiment (100 models; teacher steps of batch 64, student steps of "
        "3 groups x 100 models at batch 64), measured over 20 steps and extrapolated to the "
        "run's step counts:",
        "",
        "| threads | teacher ms/step (wall / CPU) | student ms/step (wall / CPU) | whole run, wall s | whole run, CPU s |",
        "|---|---|---|---|---|",
        *[
            f"| {c['threads']} | {c['teacher_step']['wall_ms']} / {c['teacher_step']['cpu_ms']} | "
            f"{c['student_step']['wall_ms']} / {c['student_step']['cpu_ms']} | "
            f"{c['extrapolated_wall_s']} | {c['extrapolated_cpu_s']} |"
            for c in res["default_cost"]
        ],
        "",
    ]
    if "full" in res:
        f = res["full"]
        acc = f["accuracy"]
        lines += [
            f"Default experiment (100 models): wall {f['seconds']['total']:.1f} s (teacher "
            f"{f['seconds']['teacher']:.1f} s, students {f['seconds']['students']:.1f} s), "
            f"CPU {f['seconds']['cpu_total']:.1f} s; load average before / after the run: "
            f"{f.get('load_before', 'n/a')} / {f.get('load_after', 'n/a')}.",
            "",
            *[
                f"- {k}: {100 * v['mean']:.1f}% (std {100 * v['std']:.1f}, 95% CI "
                f"{100 * v['ci']['lower']:.1f}-{100 * v['ci']['upper']:.1f})"
                for k, v in acc.items()
            ],
            "",
        ]
    runs.atomic_write_text(OUT / "mnist.md", "\n".join(lines))


if __name__ == "__main__":
    main()
