"""The auxiliary-logit experiment: teacher, same-init student, controls, all models at once.

`run_experiment(cfg, data)` is the pure computation (no files). `run_mnist(cfg, run_dir, ...)`
runs it, and the requested sweeps and chain, as cached stages of a run directory and writes
manifest.json, summary.json, report.md with plots, and the DONE marker last.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from traitlab.core import runs
from traitlab.core.device import resolve_device
from traitlab.core.progress import NullProgress
from traitlab.core.stats import mean_ci, paired_test
from traitlab.mnist.batched import (
    BatchedMLP,
    DistillTarget,
    Streams,
    accuracy,
    distill,
    model_seeds,
    train_classifier,
)
from traitlab.mnist.config import MnistConfig
from traitlab.mnist.data import Digits

N_CLASSES = 10
CHANCE = 1 / N_CLASSES
# Bump when a change in the code changes results, so cached stages are recomputed.
CODE_VERSION = 1

CONDITION_LABELS = {
    "init": "untrained init",
    "teacher": "teacher",
    "student": "student, same init (aux only)",
    "cross_init": "student, cross init (aux only)",
    "all_logits": "student, same init (all logits)",
    "all_logits_cross_init": "student, cross init (all logits)",
}
CONDITION_ORDER = list(CONDITION_LABELS)


def layer_sizes(cfg: MnistConfig, d_in: int) -> list[int]:
    return [d_in, *cfg.model.hidden, N_CLASSES + cfg.model.n_aux]


def aux_columns(cfg: MnistConfig) -> slice:
    return slice(N_CLASSES, N_CLASSES + cfg.model.n_aux)


def init_models(cfg: MnistConfig, d_in: int, role: str, n: int | None = None) -> BatchedMLP:
    """`n` models initialised from the seeds of `role` ('init': teachers, 'cross_init': others)."""
    n = cfg.n_models if n is None else n
    return BatchedMLP.init(
        layer_sizes(cfg, d_in),
        model_seeds(cfg.seed, role, n),
        cfg.model.init,
        resolve_device(cfg.device),
    )


def train_teachers(
    cfg: MnistConfig, data: Digits, init: BatchedMLP, progress: Any = None
) -> BatchedMLP:
    """Teachers: cross-entropy on the class logits only; the aux logits are never supervised."""
    t = cfg.teacher
    streams = Streams(model_seeds(cfg.seed, "teacher_data", init.n_models), "cpu")
    return train_classifier(
        init,
        data.x_train,
        data.y_train,
        streams,
        epochs=t.epochs,
        lr=t.lr,
        batch_size=t.batch_size,
        n_classes=N_CLASSES,
        progress=progress,
    )


def distill_students(
    cfg: MnistConfig,
    data: Digits,
    teacher: BatchedMLP,
    groups: list[DistillTarget],
    noise_role: str = "noise",
    progress: Any = None,
    on_epoch: Any = None,
) -> dict[str, BatchedMLP]:
    s = cfg.student
    streams = Streams(model_seeds(cfg.seed, noise_role, teacher.n_models), teacher.device)
    return distill(
        teacher,
        groups,
        streams,
        noise=s.noise,
        n_noise=s.n_noise,
        epochs=s.epochs,
        lr=s.lr,
        batch_size=s.batch_size,
        loss=s.loss,
        temperature=s.temperature,
        schedule=s.schedule,
        pool=data.x_train if s.noise == "shuffled_pixels" else None,
        progress=progress,
        on_epoch=on_epoch,
    )


def student_groups(
    cfg: MnistConfig, init: BatchedMLP, cross: BatchedMLP | None, controls: list[str]
) -> list[DistillTarget]:
    aux = aux_columns(cfg)
    groups = [DistillTarget("student", init, aux)]
    if "cross_init" in controls:
        assert cross is not None
        groups.append(DistillTarget("cross_init", cross, aux))
    if "all_logits" in controls:
        groups.append(DistillTarget("all_logits", init, slice(None)))
    if "all_logits_cross_init" in controls:
        assert cross is not None
        groups.append(DistillTarget("all_logits_cross_init", cross, slice(None)))
    return groups


def run_experiment(
    cfg: MnistConfig,
    data: Digits,
    *,
    progress: Any = None,
    eval_each_epoch: bool = False,
) -> dict[str, Any]:
    """Train `cfg.n_models` teachers and their students together; per-model accuracies.

    `progress(fraction)` is called as training advances. With `eval_each_epoch`, the students
    are also evaluated after every student epoch (`epoch_accuracies`).
    Returns {"accuracies": {condition: [acc per model]}, "seconds": {...}, ...}.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    prog = progress or NullProgress()
    t0 = time.perf_counter()
    c0 = time.process_time()
    d_in = data.d_in
    init = init_models(cfg, d_in, "init")
    need_cross = any(c in cfg.controls for c in ("cross_init", "all_logits_cross_init"))
    cross = init_models(cfg, d_in, "cross_init") if need_cross else None
    xte, yte = data.x_test, data.y_test

    def acc(m: BatchedMLP) -> list[float]:
        return [round(float(a), 6) for a in accuracy(m, xte, yte, N_CLASSES, cfg.eval_batch)]

    s = cfg.student
    steps_t = -(-len(data.x_train) // cfg.teacher.batch_size) * cfg.teacher.epochs
    steps_s = -(-s.n_noise // s.batch_size) * s.epochs
    groups = student_groups(cfg, init, cross, list(cfg.controls))
    # Rough cost weights so the bar advances evenly: a student step trains len(groups) models.
    w_t = steps_t * cfg.teacher.batch_size
    w_s = steps_s * s.batch_size * (len(groups) + 0.3)
    frac_t = w_t / (w_t + w_s)

    accs: dict[str, list[float]] = {"init": acc(init)}
    teacher = train_teachers(cfg, data, init, progress=lambda f: prog(frac_t * f))
    t1 = time.perf_counter()
    accs["teacher"] = acc(teacher)

    epoch_accs: dict[str, dict[str, list[float]]] = {}

    def on_epoch(epoch: int, students: dict[str, BatchedMLP]) -> None:
        if eval_each_epoch:
            epoch_accs[str(epoch)] = {k: acc(v) for k, v in students.items()}

    students = distill_students(
        cfg,
        data,
        teacher,
        groups,
        progress=lambda f: prog(frac_t + (1 - frac_t) * f),
        on_epoch=on_epoch,
    )
    t2 = time.perf_counter()
    for name, m in students.items():
        accs[name] = acc(m)
    if cross is not None:
        accs["cross_init_untrained"] = acc(cross)
    prog(1.0)
    out: dict[str, Any] = {
        "accuracies": accs,
        "seconds": {
            "teacher": round(t1 - t0, 3),
            "students": round(t2 - t1, 3),
            "total": round(time.perf_counter() - t0, 3),
            # CPU seconds of this process (all threads): wall time on dedicated cores is about
            # cpu_total / threads; on a shared machine wall time is larger.
            "cpu_total": round(time.process_time() - c0, 3),
        },
        "steps": {"teacher": steps_t, "student": steps_s},
        "n_models": cfg.n_models,
        "student_groups": [g.name for g in groups],
        "params_per_model": init.n_params_per_model(),
        "device": str(init.device),
        "threads": torch.get_num_threads(),
    }
    if eval_each_epoch:
        out["epoch_accuracies"] = epoch_accs
    return out


# ---------------------------------------------------------------------------- summaries


def describe(values: list[float], confidence: float) -> dict[str, Any]:
    x = np.asarray(values, dtype=float)
    ci = mean_ci(values, confidence)
    return {
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
        "ci": {
            "lower": max(0.0, ci.lower),
            "upper": min(1.0, ci.upper),
            "confidence": confidence,
            "method": f"{ci.method} over models, clipped to [0, 1]",
        },
        "min": float(x.min()),
        "max": float(x.max()),
        "n": len(x),
    }


def summarize(result: dict[str, Any], confidence: float) -> dict[str, Any]:
    """Mean, std and CI over models per condition; paired same-init vs cross-init test."""
    accs = result["accuracies"]
    conds = {k: describe(v, confidence) for k, v in accs.items()}
    out: dict[str, Any] = {"conditions": conds}
    if "student" in accs and "cross_init" in accs:
        pt = paired_test(accs["student"], accs["cross_init"], confidence)
        out["same_minus_cross"] = {
            "mean": pt.diff.mean,
            "ci": {"lower": pt.diff.lower, "upper": pt.diff.upper},
            "t": pt.t,
            "p_value": pt.p_value,
            "n_positive": pt.n_positive,
            "n": pt.n,
            "method": pt.method,
        }
        out["criteria"] = {
            "same_init_at_least_0.50": conds["student"]["mean"] >= 0.5,
            "cross_init_at_most_0.15": conds["cross_init"]["mean"] <= 0.15,
        }
    return out


# ---------------------------------------------------------------------------- run directory


def stage_key(cfg: MnistConfig, data_fp: str, what: str, extra: Any = None) -> str:
    """Content key of a stage: everything that changes its numbers, nothing else."""
    d = cfg.model_dump(mode="json")
    for k in ("name", "sweep", "chain", "theory", "threads", "eval_batch", "confidence"):
        d.pop(k, None)
    return runs.stable_hash(
        {"what": what, "cfg": d, "data": data_fp, "extra": extra, "code": CODE_VERSION}
    )
