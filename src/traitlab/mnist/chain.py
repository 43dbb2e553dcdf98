"""Generations of model-on-model distillation: teacher -> student -> student of the student ...

Generation 0 is the teacher. Generation g is a same-init student distilled (aux logits only,
on fresh noise) from generation g-1. With `chain.cross_init`, every generation also trains a
student from a different initialisation on the same generation g-1 model: the control.
Generation 1 uses the main run's noise streams, so with the same model count it equals the
main run's same-init student.

The half-life is the number of generations over which the students' excess accuracy over
chance halves, from a log-linear fit of mean(accuracy) - 0.1 against generation g >= 1; its
interval is a percentile bootstrap over models (explicit numpy Generator).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from traitlab.core import runs
from traitlab.core.progress import stage_bar
from traitlab.mnist.batched import DistillTarget, accuracy
from traitlab.mnist.config import MnistConfig
from traitlab.mnist.data import Digits
from traitlab.mnist.experiment import (
    CHANCE,
    N_CLASSES,
    aux_columns,
    describe,
    distill_students,
    init_models,
    stage_key,
    train_teachers,
)


def noise_role(generation: int) -> str:
    return "noise" if generation == 1 else f"noise_gen{generation}"


def run_chain(
    cfg: MnistConfig, data: Digits, generations: int, progress: Any = None
) -> dict[str, Any]:
    """Per-model accuracies of every generation (pure computation, no files)."""
    n = cfg.chain.n_models or cfg.n_models
    ccfg = cfg.model_copy(update={"n_models": n})
    t0 = time.perf_counter()
    init = init_models(ccfg, data.d_in, "init")
    cross = init_models(ccfg, data.d_in, "cross_init") if cfg.chain.cross_init else None
    aux = aux_columns(cfg)

    def acc(m: Any) -> list[float]:
        return [
            round(float(a), 6)
            for a in accuracy(m, data.x_test, data.y_test, N_CLASSES, cfg.eval_batch)
        ]

    total = generations + 0.3
    prog = progress or (lambda f: None)
    teacher = train_teachers(ccfg, data, init, progress=lambda f: prog(0.3 * f / total))
    gens: list[dict[str, Any]] = [{"generation": 0, "accuracies": {"student": acc(teacher)}}]
    prev = teacher
    for g in range(1, generations + 1):
        groups = [DistillTarget("student", init, aux)]
        if cross is not None:
            groups.append(DistillTarget("cross_init", cross, aux))
        out = distill_students(
            ccfg,
            data,
            prev,
            groups,
            noise_role=noise_role(g),
            progress=lambda f, g=g: prog((0.3 + g - 1 + f) / total),
        )
        gens.append({"generation": g, "accuracies": {k: acc(v) for k, v in out.items()}})
        prev = out["student"]
    prog(1.0)
    return {"n_models": n, "generations": gens, "seconds": round(time.perf_counter() - t0, 3)}


def _fit_half_life(means: np.ndarray, gens: np.ndarray, chance: float) -> tuple[float, float]:
    """(half-life in generations, retention per generation) from a log-linear fit."""
    excess = means - chance
    keep = excess > 1e-3
    if keep.sum() < 2:
        return float("nan"), float("nan")
    slope, _ = np.polyfit(gens[keep], np.log(excess[keep]), 1)
    retention = float(math.exp(slope))
    if slope >= 0:
        return float("inf"), retention
    return float(math.log(2) / -slope), retention


def half_life(
    per_model: np.ndarray,
    chance: float = CHANCE,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """per_model: (generations, models) accuracies of generations 1..G. Fit and bootstrap CI."""
    g = np.arange(1, per_model.shape[0] + 1, dtype=float)
    hl, ret = _fit_half_life(per_model.mean(1), g, chance)
    rng = np.random.default_rng(seed)
    boots = []
    n = per_model.shape[1]
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        boots.append(_fit_half_life(per_model[:, idx].mean(1), g, chance)[0])
    b = np.asarray(boots)
    finite = b[np.isfinite(b)]
    alpha = (1 - confidence) / 2
    ci = None
    if len(finite) == len(b) and len(b):
        lo, hi = np.quantile(b, [alpha, 1 - alpha])
        ci = {"lower": float(lo), "upper": float(hi), "method": "bootstrap over models"}
    elif len(b):
        # Some resamples show no decay (infinite half-life): report the lower bound only.
        lo = float(np.quantile(np.where(np.isfinite(b), b, np.inf), alpha))
        ci = {"lower": lo, "upper": float("inf"), "method": "bootstrap over models"}
    return {
        "generations": hl,
        "retention_per_generation": ret,
        "ci": ci,
        "chance": chance,
        "fit": "log(mean accuracy - chance) linear in generation, generations >= 1",
    }


def summarize_chain(raw: dict[str, Any], confidence: float, seed: int = 0) -> dict[str, Any]:
    """Per-generation mean/CI, the half-life fit, and the step-by-step retention of the excess."""
    rows = []
    for gen in raw["generations"]:
        rows.append(
            {
                "generation": gen["generation"],
                **{k: describe(v, confidence) for k, v in gen["accuracies"].items()},
            }
        )
    students = np.asarray([g["accuracies"]["student"] for g in raw["generations"][1:]])
    out: dict[str, Any] = {
        "n_models": raw["n_models"],
        "per_generation": rows,
        "seconds": raw["seconds"],
    }
    if len(students) >= 2:
        out["half_life"] = half_life(students, confidence=confidence, seed=seed)
        excess = students.mean(1) - CHANCE
        out["retention_steps"] = [
            round(float(b / a), 4) if a > 0 else None
            for a, b in zip(excess[:-1], excess[1:], strict=True)
        ]
    else:
        out["half_life"] = None
    return out


def chain_stage(
    cfg: MnistConfig, data: Digits, generations: int, run_dir: str | Path, reporter: Any = None
) -> dict[str, Any]:
    """The chain as a cached stage run_dir/chain; returns its summary."""
    sdir = Path(run_dir) / "chain"
    key = stage_key(
        cfg,
        data.fingerprint(),
        "chain",
        {"generations": generations, "chain": cfg.chain.model_dump(mode="json")},
    )
    cached = runs.stage_done(sdir, key)
    with stage_bar(reporter, f"chain: {generations} generations", cached) as upd:
        if not cached:
            with runs.stage(sdir, key) as tmp:
                runs.write_json(tmp / "results.json", run_chain(cfg, data, generations, upd))
    return summarize_chain(runs.read_json(sdir / "results.json"), cfg.confidence, cfg.seed)
