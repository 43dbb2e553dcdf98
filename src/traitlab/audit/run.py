"""`audit_dataset` and `audit_model`: run the detectors, write audit.json, rows.jsonl and
report.html into the output directory (audit.json last: its presence means the rest is there).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from traitlab.audit.baselines import run_baseline
from traitlab.audit.canary import run_canaries
from traitlab.audit.config import NULL_STATISTICS, AuditConfig
from traitlab.audit.probes import (
    build_probes,
    check_probes,
    probe_table,
)
from traitlab.audit.reference import (
    pair_rows,
    prompt_of,
    sample_reference,
    second_reference,
    subset,
)
from traitlab.audit.report import render
from traitlab.audit.verdict import audit_verdict, findings, verdict
from traitlab.core.device import cache_dir
from traitlab.core.errors import TraitlabError
from traitlab.core.files import atomic_write_text, read_jsonl, stable_hash, write_json, write_jsonl
from traitlab.data.rows import chat_completion
from traitlab.lm.base import ModelRef, opened

Row = dict[str, Any]
SCHEMA_VERSION = 1
# Detectors that read token log-probabilities or gradients of the weights themselves.
LOCAL_ONLY = ("counterfactual", "screen", "rows")


def _canary_statistic(r: Any, cfg: Any) -> np.ndarray | None:
    """What the canary's findings rank and flag by: its effect (`canary.threshold`), its z in
    units of the two references' gap (`canary.null`), else (None) the robust z over options."""
    if cfg.threshold is not None:
        return np.asarray(r.diff.mean(axis=0))
    return r.null_z() if cfg.null else None


def _local(lm: Any, what: str) -> tuple[Any, Any]:
    """The torch model and tokenizer behind an opened local model (hf, toy)."""
    if not (hasattr(lm, "model") and hasattr(lm, "tokenizer")):
        raise TraitlabError(
            f"the {what} needs a local model (hf or toy backend); drop it from audit.detectors"
        )
    return lm.model, lm.tokenizer


def _bars(progress: Any) -> Any:
    """name -> a fraction callback on the reporter's bar of that name (or None)."""
    if progress is None:
        return lambda name: None

    def bar(name: str) -> Any:
        cb = progress.named(name)
        return lambda f: cb("", f)

    return bar


def audit_pairs(
    base: ModelRef,
    data: list[Row],
    cfg: AuditConfig,
    reference: list[Row] | None = None,
    progress: Any = None,
    lm: Any = None,
) -> tuple[list[Row], list[Row], dict[str, Any]]:
    """The data rows and their reference rows, paired as the audit pairs them (`pair_rows`);
    without a `reference`, the base writes it (`sample_reference`, the audit's seed; `lm`:
    the base already opened, else it is opened for this)."""
    if reference is None:
        # Cached by content for local bases: auditing the same data again (another config,
        # detector or threshold), or data with the same prompts (a run's teacher and control
        # numbers), reuses the base's completions. An API model may change behind its name.
        spec = [prompt_of(r) for r in data], cfg.seed, cfg.max_new_tokens, cfg.batch_size
        key = stable_hash(["audit-reference", base.key, *spec])
        path = cache_dir() / "audit-references" / f"{key}.jsonl"
        local = base.backend in ("toy", "hf")
        if local and path.is_file():
            reference = read_jsonl(path)
        else:
            with contextlib.nullcontext(lm) if lm is not None else opened(base) as base_lm:
                reference = sample_reference(
                    base_lm,
                    data,
                    seed=cfg.seed,
                    max_new_tokens=cfg.max_new_tokens,
                    batch_size=cfg.batch_size,
                    progress=progress,
                )
            if local:
                write_jsonl(path, reference)
    return pair_rows(data, reference, cfg.reference_filter)


def audit_dataset(
    data: list[Row],
    base: ModelRef,
    cfg: AuditConfig,
    out_dir: Path,
    *,
    reference: list[Row] | None = None,
    teacher: ModelRef | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Audit chat rows for what they would teach `base`; returns (and writes) audit.json."""
    step = _bars(progress)
    local = sorted(set(cfg.detectors) & set(LOCAL_ONLY))
    if local and base.backend not in ("hf", "toy"):
        raise TraitlabError(
            f"audit.detectors {', '.join(local)} need a local model (hf or toy backend), "
            f"not '{base.backend}'; drop them from audit.detectors"
        )
    probes = build_probes(cfg)
    check_probes(base, probes)
    out_dir.mkdir(parents=True, exist_ok=True)
    cost: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    bar = step("reference") if reference is None else None  # no bar for a given reference
    data_p, ref_p, info = audit_pairs(base, data, cfg, reference, bar)
    if reference is None:
        cost["reference"] = {"seconds": round(time.perf_counter() - t0, 2)}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        canary_dir = Path(tmp) / "canary"
        if "counterfactual" in cfg.detectors:
            from traitlab.audit import counterfactual as cf
            from traitlab.audit import lifts

            t = time.perf_counter()
            res_c = cf.run_counterfactual(
                base, data_p, ref_p, probes, cfg.counterfactual, progress=step("teachers")
            )
            stat = {r.probe: lifts.statistic(r, cfg.counterfactual) for r in res_c}
            # 'null': the option whose teacher explains the data best (largest mean log-ratio
            # over the null) is the likely trait, and its t decides the flag; a t alone would
            # favour a teacher that explains less but more evenly (ft-cat: dolphin).
            null = cfg.counterfactual.statistic in NULL_STATISTICS
            t_rows = {p: lifts.row_t(v) for p, v in stat.items()}
            cal: dict[str, np.ndarray] = {}
            rank: dict[str, np.ndarray] = {}
            if cfg.counterfactual.calibration:
                # Calibrated: each option's effect size above what no-trait fine-tunes'
                # numbers give it; the largest names the option. Effect sizes, not t's: the
                # calibration scores fewer rows than the data (calibration.py).
                from traitlab.audit.calibration import calibrated, calibration_d
                from traitlab.audit.reference import applied_rules

                rules = applied_rules(info)  # the data's rules filter its calibration too
                cal, cal_prompts = calibration_d(
                    base, data_p, ref_p, probes, cfg, rules, step("calibration")
                )
                if cfg.counterfactual.calibration_score == "null_first":
                    # The plain statistic's findings too: its verdict comes first.
                    results["counterfactual-null"] = lifts.counterfactual_findings(
                        res_c, stat, t_rows, by_effect=null
                    )
                t_rows, rank = calibrated(t_rows, len(data_p), cal, cfg)
                null = False
            results["counterfactual"] = lifts.counterfactual_findings(
                res_c, stat, t_rows, by_effect=null, rank=rank
            )
            cost["counterfactual"] = {
                "seconds": round(time.perf_counter() - t, 2),
                "rows": len(data_p),
                "kind": cfg.counterfactual.kind,
            }
            extra["counterfactual"] = {
                "statistic": cfg.counterfactual.statistic,
                "null": {r.probe: r.null[0] for r in res_c},
                "scores": "counterfactual.npz",
            }
            if cal:  # each option's mean effect size on no-trait fine-tunes' numbers
                extra["counterfactual"]["calibration"] = {
                    r.probe: dict(
                        zip(r.options, map(float, cal[r.probe].mean(axis=0)), strict=True)
                    )
                    for r in res_c
                }
                extra["counterfactual"]["calibration_teachers"] = {
                    r.probe: cal[r.probe].tolist() for r in res_c
                }
                extra["counterfactual"]["calibration_prompts"] = cal_prompts
            if cfg.counterfactual.kind == "both":  # which of its two teachers each score is from
                extra["counterfactual"]["kinds"] = {
                    r.probe: dict(zip(r.options, r.kinds, strict=True)) for r in res_c
                }
            lifts.save_scores(res_c, out_dir / "counterfactual.npz")
        if "canary" in cfg.detectors:
            t = time.perf_counter()
            data_c, ref_c, null_c = data_p, ref_p, None
            if cfg.canary.null:
                with opened(base) as lm:
                    data_c, ref_c, null_c = second_reference(
                        lm,
                        data_p,
                        ref_p,
                        info,
                        seed=cfg.seed + 1,
                        max_new_tokens=cfg.max_new_tokens,
                        batch_size=cfg.batch_size,
                        progress=step("second reference"),
                    )
            res = run_canaries(
                base,
                data_c,
                ref_c,
                probes,
                cfg.canary,
                seed=cfg.seed,
                work_dir=Path(tmp),
                keep=canary_dir if "rows" in cfg.detectors else None,
                batch_size=cfg.batch_size,
                progress=step("canaries"),
                null=null_c,
            )
            results["canary"] = {
                r.probe: findings(r.options, r.diff, z=_canary_statistic(r, cfg.canary))
                for r in res
            }
            cost["canary"] = {
                "seconds": round(time.perf_counter() - t, 2),
                "rows": min(len(data_c), cfg.canary.rows or len(data_c)),
                "seeds": len(cfg.canary.seeds),
                "null": cfg.canary.null,
            }
        if "screen" in cfg.detectors:
            from traitlab.audit.screen import first_order_screen

            t = time.perf_counter()
            idx = subset(len(data_p), cfg.screen.rows, cfg.seed)
            with opened(base) as lm:
                model, tok = _local(lm, "first-order screen")
                res_s, c = first_order_screen(
                    model,
                    tok,
                    [data_p[i] for i in idx],
                    [ref_p[i] for i in idx],
                    probes,
                    chunks=cfg.screen.chunks,
                    seed=cfg.seed,
                    precondition=cfg.screen.precondition,
                    progress=step("screen"),
                )
            results["screen"] = {r.probe: findings(r.options, r.chunks) for r in res_s}
            cost["screen"] = {
                "seconds": round(time.perf_counter() - t, 2),
                "gradient_seconds": round(c["gradient_seconds"], 2),
                "scoring_seconds": round(c["scoring_seconds"], 2),
                "rows": len(idx),
                "shared_prompts": bool(c["shared_prompts"]),
            }
        for kind in ("icl", "prompted"):
            if kind in cfg.detectors:
                t = time.perf_counter()
                with opened(base) as lm:
                    res_b = run_baseline(
                        lm,
                        kind,
                        data_p,
                        ref_p,
                        probes,
                        rows_per_set=cfg.icl_rows,
                        sets=cfg.icl_sets,
                        seed=cfg.seed,
                        batch_size=cfg.batch_size,
                    )
                results[kind] = {r.probe: findings(r.options, r.sets) for r in res_b}
                cost[kind] = {"seconds": round(time.perf_counter() - t, 2)}
        scored: list[Row] = []
        if "rows" in cfg.detectors:  # with canary: the config checks it
            scored = _row_scores(base, canary_dir, teacher, data_p, cfg, cost, extra)
    audit = {
        "schema_version": SCHEMA_VERSION,
        "kind": "dataset",
        "base": base.model_dump(mode="json", exclude={"spec"}),
        "teacher": teacher.key if teacher else None,
        "config": cfg.model_dump(mode="json"),
        "data": info,
        "detectors": results,
        "cost": cost,
        "verdict": audit_verdict(results, cfg),
        **extra,
    }
    audit["cost"]["total_seconds"] = {"seconds": round(time.perf_counter() - t0, 2)}
    _write(out_dir, audit, scored)
    return audit


def _row_scores(
    base: ModelRef,
    canary_dir: Path,
    teacher: ModelRef | None,
    rows: list[Row],
    cfg: AuditConfig,
    cost: dict[str, Any],
    extra: dict[str, Any],
) -> list[Row]:
    from traitlab.audit.rows import shift_scores, token_logprobs, top_tokens

    t = time.perf_counter()
    with opened(base) as lm:
        model, tok = _local(lm, "per-row scores")
        base_lp = token_logprobs(model, tok, rows)
    with opened(ModelRef.load(canary_dir)) as lm:
        scored = shift_scores(tok, base_lp, token_logprobs(lm.model, tok, rows))
    if teacher is not None:
        with opened(teacher) as lm:
            model, _ = _local(lm, "teacher divergence")
            div = shift_scores(tok, base_lp, token_logprobs(model, tok, rows))
        for r, d in zip(scored, div, strict=True):
            r["divergence"] = d["score"]
            r["divergence_tokens"] = d["tokens"]
    order = sorted(scored, key=lambda r: -r["score"])[: cfg.top_rows]
    extra["top_rows"] = [
        {"row": r["row"], "score": r["score"], "completion": chat_completion(rows[r["row"]])}
        for r in order
    ]
    extra["top_tokens"] = top_tokens(scored, cfg.top_rows)
    cost["rows"] = {"seconds": round(time.perf_counter() - t, 2), "rows": len(rows)}
    return scored


def _write(out_dir: Path, audit: dict[str, Any], scored: list[Row]) -> None:
    if scored:
        write_jsonl(out_dir / "rows.jsonl", scored)
    atomic_write_text(out_dir / "report.html", render(audit))
    write_json(out_dir / "audit.json", audit)


def audit_model(
    model: ModelRef,
    base: ModelRef,
    cfg: AuditConfig,
    out_dir: Path,
    *,
    samples: int = 20,
    progress: Any = None,
) -> dict[str, Any]:
    """What moved between `base` and `model` (trained on data of unknown provenance): the same
    probes, per question, beside a red-teaming baseline (sampled answers to generic prompts
    scanned for every option's name)."""
    from traitlab.audit.redteam import mention_rates

    probes = build_probes(cfg)
    check_probes(base, probes)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tabs = {}
    rates = {}
    for name, ref in (("model", model), ("base", base)):
        with opened(ref) as lm:
            tabs[name] = [probe_table(lm, p, cfg.batch_size) for p in probes]
            rates[name] = mention_rates(
                lm, probes, samples=samples, seed=cfg.seed, batch_size=cfg.batch_size
            )
    results = {
        "probes": {
            p.name: findings(p.option_names, tabs["model"][j] - tabs["base"][j])
            for j, p in enumerate(probes)
        },
        "redteam": {
            p.name: findings(p.option_names, rates["model"][j] - rates["base"][j])
            for j, p in enumerate(probes)
        },
    }
    v = verdict(results, cfg.z_threshold, order=("probes",))
    audit = {
        "schema_version": SCHEMA_VERSION,
        "kind": "model",
        "model": model.key,
        "base": base.key,
        "config": cfg.model_dump(mode="json"),
        "data": {
            "questions": {p.name: len(p.questions) for p in probes},
            "redteam_samples": samples,
        },
        "detectors": results,
        "cost": {"total": {"seconds": round(time.perf_counter() - t0, 2)}},
        "verdict": v,
    }
    _write(out_dir, audit, [])
    return audit
