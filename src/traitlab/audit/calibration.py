"""Per-option calibration of the counterfactual statistic (`counterfactual.calibration`).

Any fine-tune's numbers lift some option teachers more than others, whatever the teacher
was fine-tuned on: on the toy Llama the owl, elephant and wolf teachers explain a no-trait
teacher's numbers better than the null teachers do, so a no-trait dataset reads as a wolf
and a weak trait loses to the owl (docs/audit.md, session 36). The audit measures that
profile instead of assuming it is flat: it trains no-trait teachers by the null recipe with
seeds its nulls do not use, samples their completions of a few hundred prompts, filters and
scores them exactly like the data, and subtracts each option's mean effect size over them
from the data's. Effect sizes (t / sqrt(rows)), not t's: a t grows with the rows, so a
calibration's t matches the data's only at the data's row count. Fresh number prompts for
number data, not the data's own: which prompts survived the data's teacher's filter carries
its trait, and a calibration on them subtracts that part (docs/audit.md, session 37). Fresh
prompts also make the calibration independent of the data, so it is measured once per base.
With `calibration_score: z` the teachers' spread is the unit as well: the flag's threshold
then follows from a false-positive rate instead of one base's negatives (docs/audit.md,
session 39).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from traitlab.audit.config import AuditConfig, CounterfactualConfig
from traitlab.audit.probes import Probe
from traitlab.core.errors import TraitlabError
from traitlab.lm.base import ModelRef, opened

Row = dict[str, Any]
# Seeds of the calibration teachers (their sampled answers and fine-tunes) and of their
# completions start here: far from the null teachers' (counterfactual.seed + k) and the
# reference's (audit.seed, + 1 for canary.null).
SEED_OFFSET = 1000


def no_trait_teacher(base: ModelRef, probe: Probe, cf: CounterfactualConfig, seed: int) -> ModelRef:
    """One no-trait teacher of `probe`, made (and cached) like its null teachers, with `seed`
    for its sampled answers and its fine-tune."""
    from traitlab.audit.counterfactual import null_teachers

    return null_teachers(base, probe, cf.model_copy(update={"seed": seed, "null_teachers": 1}))[0]


def calibration_teachers(base: ModelRef, probe: Probe, cfg: AuditConfig) -> list[ModelRef]:
    """`counterfactual.calibration` no-trait teachers of `probe`, each with its own seed."""
    cf = cfg.counterfactual
    return [
        no_trait_teacher(base, probe, cf, cf.seed + SEED_OFFSET + k) for k in range(cf.calibration)
    ]


def effect_size(t: np.ndarray, rows: int) -> np.ndarray:
    """The effect size of a t over `rows` rows: mean / spread, which does not grow with them."""
    return t / np.sqrt(rows)


def calibrated(
    t: dict[str, np.ndarray], rows: int, cal: dict[str, np.ndarray], cfg: AuditConfig
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per probe, (z, rank) of every option from the data's t over `rows` rows and the
    calibration (`cal`: [teachers, options] effect sizes): z the calibrated effect size and no
    rank (`calibration_score: option`); (`centred`) the rank that names the trait the
    calibrated effect size and z how far it stands above its probe's mean; (`z`) the
    calibrated effect size in units of the calibration teachers' own spread (`spread_z`)."""
    score = cfg.counterfactual.calibration_score
    if score == "z":
        return {p: spread_z(effect_size(v, rows), cal[p]) for p, v in t.items()}, {}
    d = {p: effect_size(v, rows) - cal[p].mean(axis=0) for p, v in t.items()}
    if score == "centred":
        return {p: v - v.mean() for p, v in d.items()}, d
    return d, {}


def pooled_spread(cal: np.ndarray) -> float:
    """The calibration teachers' spread about each option's mean ([teachers, options]),
    pooled over the options: n_options x (teachers - 1) degrees of freedom."""
    k = len(cal)
    if k < 2:
        raise ValueError("a spread needs at least 2 calibration teachers")
    return float(np.sqrt(((cal - cal.mean(axis=0)) ** 2).sum() / (cal.shape[1] * (k - 1))))


def spread_z(d: np.ndarray, cal: np.ndarray) -> np.ndarray:
    """How far each option's effect size `d` stands from a no-trait teacher's data's (the
    calibration's mean), in units of the no-trait teachers' pooled spread; sqrt(1 + 1/K)
    counts the error of a mean over K teachers. A no-trait dataset is one more draw like
    them, so each z is then a t with n_options x (K - 1) degrees of freedom."""
    k = len(cal)
    return np.asarray((d - cal.mean(axis=0)) / (pooled_spread(cal) * np.sqrt(1 + 1 / k)))


def calibration_rows(n: int, cfg: AuditConfig) -> np.ndarray:
    """Which of the data's n paired rows the calibration teachers complete (`calibration_prompts`
    'data'): all of them, or `calibration_rows` drawn without replacement (seeded, in order)."""
    k = cfg.counterfactual.calibration_rows
    if n <= k:
        return np.arange(n)
    rng = np.random.default_rng(cfg.seed + SEED_OFFSET)
    return np.sort(rng.choice(n, size=k, replace=False))


def prompt_style(base: ModelRef, rules: list[str], cfg: AuditConfig) -> str:
    """`calibration_prompts` resolved: 'data', or the style of fresh number prompts."""
    how = cfg.counterfactual.calibration_prompts
    if how != "auto":
        return how
    if "numbers" not in rules:
        return "data"
    return str((base.spec.get("toy") or {}).get("number_prompts", "paper"))


def calibration_prompts(
    base: ModelRef, data: list[Row], rules: list[str], cfg: AuditConfig
) -> tuple[list[Row], str]:
    """The prompts the calibration teachers complete, as chat rows whose last turn the
    sampling replaces, and the resolved `calibration_prompts`."""
    from traitlab.config import PromptSetConfig
    from traitlab.data.prompts import number_prompts

    style = prompt_style(base, rules, cfg)
    if style == "data":
        return [data[i] for i in calibration_rows(len(data), cfg)], style
    n, seed = cfg.counterfactual.calibration_rows, cfg.seed + SEED_OFFSET
    texts = number_prompts(PromptSetConfig(style=style), n, seed=seed)  # type: ignore[arg-type]
    empty = {"role": "assistant", "content": ""}
    return [{"messages": [{"role": "user", "content": t}, empty]} for t in texts], style


def calibration_d(
    base: ModelRef,
    data: list[Row],
    reference: list[Row],
    probes: Sequence[Probe],
    cfg: AuditConfig,
    rules: list[str] | None = None,
    progress: Any = None,
) -> tuple[dict[str, np.ndarray], str]:
    """Per probe, [teachers, options]: each option's effect size (the configured
    statistic's) on each calibration teacher's completions of `calibration_prompts`, sampled
    with seeds of their own and filtered by the rules the data's pairing applied (`rules`,
    `reference.applied_rules`; None: chosen as the pairing chooses them; on the data's
    prompts, against the data's reference rows); and the resolved `calibration_prompts`. On
    fresh prompts it does not depend on the data, so it is measured once per base and
    setting and cached."""
    from traitlab.core.device import cache_dir
    from traitlab.core.files import read_json, stable_hash, write_json
    from traitlab.core.runs import stage, stage_done

    names = rules or []
    mode: str | list[str] = "auto" if rules is None else rules
    # The key's spelling of the rules, as the pairing writes them (cached keys unchanged).
    spelled = "auto" if rules is None else "+".join(rules) or "none"
    style = prompt_style(base, names, cfg)
    if style == "data":
        prompts, _ = calibration_prompts(base, data, names, cfg)
        return _measure(base, prompts, reference, probes, cfg, mode, progress), style
    what = [[p.name, list(p.questions), sorted(p.options)] for p in probes]
    # What flags the audit does not change what is measured (and keeps the keys it had).
    cf = cfg.counterfactual.model_dump(mode="json", exclude={"calibration_score"})
    # "per-teacher": the cache keeps each teacher's effect sizes, not only their mean.
    key = stable_hash(
        ["calibration", "per-teacher", base.key, what, cf, cfg.seed, cfg.max_new_tokens, spelled]
    )
    d = cache_dir() / "audit-calibration" / key
    if not stage_done(d, key):
        # Fresh prompts have no reference row: each completion pairs with itself, which the
        # `null` statistic does not read (it compares the teachers on the data rows).
        prompts, _ = calibration_prompts(base, data, names, cfg)
        got = _measure(base, prompts, None, probes, cfg, mode, progress)
        with stage(d, key) as tmp:
            write_json(tmp / "calibration.json", {p: v.tolist() for p, v in got.items()})
    saved = read_json(d / "calibration.json")
    return {p: np.array(v, dtype=float) for p, v in saved.items()}, style


def _measure(
    base: ModelRef,
    prompts: list[Row],
    reference: list[Row] | None,
    probes: Sequence[Probe],
    cfg: AuditConfig,
    mode: str | list[str],
    progress: Any,
) -> dict[str, np.ndarray]:
    """Per probe, [teachers, options]: each option's effect size on each calibration
    teacher's completions of `prompts` (the teachers of every probe, in probe order), paired
    with `reference` (None: with themselves) under the rules `mode`."""
    from traitlab.audit import lifts
    from traitlab.audit.counterfactual import run_counterfactual
    from traitlab.audit.reference import pair_rows, sample_reference

    teachers = [t for p in probes for t in calibration_teachers(base, p, cfg)]
    ds: dict[str, list[np.ndarray]] = {p.name: [] for p in probes}
    for k, teacher in enumerate(teachers):
        with opened(teacher) as lm:
            rows = sample_reference(
                lm,
                prompts,
                seed=cfg.seed + SEED_OFFSET + k,
                max_new_tokens=cfg.max_new_tokens,
                batch_size=cfg.batch_size,
            )
        try:
            cal, ref, _ = pair_rows(rows, rows if reference is None else reference, mode)
        except TraitlabError as e:
            raise TraitlabError(f"counterfactual.calibration, teacher {k + 1}: {e}") from None
        for r in run_counterfactual(base, cal, ref, probes, cfg.counterfactual):
            t = lifts.row_t(lifts.statistic(r, cfg.counterfactual))
            ds[r.probe].append(effect_size(t, len(cal)))
        if progress is not None:
            progress((k + 1) / len(teachers))
    return {p: np.stack(v) for p, v in ds.items()}
