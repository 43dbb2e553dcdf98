"""Theorem 1 on the experiment's MLPs: where the sign holds and where it breaks.

For each draw k (a fresh initialisation theta_0 = model k's init, a digit batch and a noise
batch from model k's own generator) and each teacher:

* one SGD step of size eps on the digit cross-entropy (class logits): theta_T = theta_0 - eps g;
* the fully trained teacher of the main experiment's recipe (`full_run`),

the student's first step is -grad of the distillation loss on the noise batch (the aux
logits, the experiment's loss), taken at

* the shared init theta_0 (Theorem 1's setting), or
* a different init (model k's cross-init).

Reported per condition: the share of draws with dtheta_S . dtheta_T > 0, the cosine, and the
share whose step lowers the teacher's digit loss to first order. Measured in float64 so that
tiny eps are not lost to rounding.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from traitlab.core import runs
from traitlab.core.progress import stage_bar
from traitlab.mnist.batched import derive_seed, sample_noise
from traitlab.mnist.config import MnistConfig
from traitlab.mnist.data import Digits
from traitlab.mnist.experiment import (
    N_CLASSES,
    aux_columns,
    init_models,
    stage_key,
    train_teachers,
)
from traitlab.mnist.report import write_theory_report
from traitlab.mnist.run import load_average, open_run
from traitlab.theory import (
    apply_delta,
    distillation_loss,
    gradient,
    measure_alignment,
    summarize_alignments,
)


def _ce_loss(x: torch.Tensor, y: torch.Tensor):
    def loss_fn(model: nn.Module) -> torch.Tensor:
        return F.cross_entropy(model(x)[:, :N_CLASSES], y)

    return loss_fn


def run_theory(cfg: MnistConfig, data: Digits, progress: Any = None) -> dict[str, Any]:
    """Alignment measurements over `cfg.theory.draws` draws (pure computation, no files)."""
    th = cfg.theory
    n = th.draws
    prog = progress or (lambda f: None)
    t0 = time.perf_counter()
    tcfg = cfg.model_copy(update={"n_models": n, "device": "cpu"})
    init = init_models(tcfg, data.d_in, "init")
    cross = init_models(tcfg, data.d_in, "cross_init")
    full = None
    if th.full_run:
        full = train_teachers(tcfg, data, init, progress=lambda f: prog(0.5 * f))
    aux = aux_columns(cfg)
    eps_list = list(th.step_sizes)
    keys = [f"eps={e:g}" for e in eps_list] + (["full_run"] if full is not None else [])
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {
        k: {"shared_init": [], "cross_init": []} for k in keys
    }
    start = 0.5 if full is not None else 0.0
    for k in range(n):
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "theory_batches", k))
        idx = torch.randperm(len(data.x_train), generator=g)[: th.teacher_batch]
        xd = data.x_train[idx].double()
        yd = data.y_train[idx]
        noise = sample_noise(cfg.student.noise, th.noise_batch, data.d_in, g, data.x_train).double()
        m0 = init.to_module(k).double()
        mx = cross.to_module(k).double()
        teacher_loss = _ce_loss(xd, yd)
        g_t = gradient(m0, teacher_loss)
        teachers: dict[str, nn.Module] = {f"eps={e:g}": apply_delta(m0, g_t, -e) for e in eps_list}
        if full is not None:
            teachers["full_run"] = full.to_module(k).double()
        for key, teacher in teachers.items():
            student_loss = distillation_loss(
                teacher,
                noise,
                kind=cfg.student.loss,
                temperature=cfg.student.temperature,
                select=aux,
            )
            for cond, start_model in (("shared_init", None), ("cross_init", mx)):
                a = measure_alignment(
                    m0,
                    teacher,
                    student_loss,
                    student_model=start_model,
                    teacher_loss_fn=teacher_loss,
                )
                raw[key][cond].append(a.to_dict())
        prog(start + (1 - start) * (k + 1) / n)
    return {
        "draws": n,
        "step_sizes": eps_list,
        "teachers": keys,
        "raw": raw,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def summarize_theory(raw: dict[str, Any], confidence: float) -> dict[str, Any]:
    from traitlab.theory import Alignment

    rows = []
    for key in raw["teachers"]:
        for cond in ("shared_init", "cross_init"):
            items = [Alignment(**a) for a in raw["raw"][key][cond]]
            rows.append(
                {"teacher": key, "student_start": cond, **summarize_alignments(items, confidence)}
            )
    return {
        "draws": raw["draws"],
        "step_sizes": raw["step_sizes"],
        "rows": rows,
        "seconds": raw["seconds"],
    }


def theory_run(
    cfg: MnistConfig,
    run_dir: Any,
    *,
    reporter: Any = None,
    config_passed: Any = None,
    plots: bool = True,
) -> dict[str, Any]:
    """`run_theory` as a cached stage of a run directory: manifest, summary, report, DONE."""
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    load_start = load_average()
    with open_run(run_dir, cfg, "theory", config_passed, {}) as (data, resolved):
        return _theory_run(cfg, data, resolved, run_dir, reporter, plots, t0, load_start)


def _theory_run(
    cfg: MnistConfig,
    data: Any,
    resolved: dict[str, Any],
    run_dir: Any,
    reporter: Any,
    plots: bool,
    t0: float,
    load_start: Any,
) -> dict[str, Any]:
    sdir = run_dir / "theory"
    key = stage_key(
        cfg.model_copy(update={"device": "cpu"}),
        data.fingerprint(),
        "theory",
        cfg.theory.model_dump(mode="json"),
    )
    cached = runs.stage_done(sdir, key)
    with stage_bar(reporter, f"theory: {cfg.theory.draws} draws", cached) as upd:
        if not cached:
            with runs.stage(sdir, key) as tmp:
                runs.write_json(tmp / "results.json", run_theory(cfg, data, upd))
    raw = runs.read_json(sdir / "results.json")
    summary = {
        "kind": "theory",
        "name": cfg.name,
        "config_hash": runs.stable_hash(resolved),
        "data": data.describe(),
        "seed": cfg.seed,
        **summarize_theory(raw, cfg.confidence),
        "timing": {"total_seconds": round(time.perf_counter() - t0, 3)},
        "machine": {
            **runs.machine_info(),
            "load_average": {"start": load_start, "end": load_average()},
        },
    }
    if plots:
        summary["report"] = write_theory_report(run_dir, summary, raw)
    runs.write_json(run_dir / "summary.json", summary)
    runs.mark_done(run_dir, runs.stable_hash(summary))
    return summary
