"""Per-option calibration of the counterfactual statistic (`counterfactual.calibration`).

Any fine-tune's numbers lift some option teachers more than others, whatever the teacher
was fine-tuned on: on the toy Llama the owl, elephant and wolf teachers explain a no-trait
teacher's numbers better than the null teachers do, so a no-trait dataset reads as a wolf
and a weak trait loses to the owl (docs/audit.md, session 36). The audit measures that
profile instead of assuming it is flat: it trains no-trait teachers by the null recipe with
seeds its nulls do not use, samples their completions of the data's prompts, filters and
scores them exactly like the data, and subtracts each option's mean t over them from the
data's t.
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


def calibration_t(
    base: ModelRef,
    data: list[Row],
    reference: list[Row],
    probes: Sequence[Probe],
    cfg: AuditConfig,
    rules: str = "auto",
    progress: Any = None,
) -> dict[str, np.ndarray]:
    """Per probe, each option's mean t (the configured statistic's, over rows) on the
    calibration teachers' numbers: their completions of the data's prompts, sampled with
    seeds of their own, paired with the reference and filtered by the rules the data's
    pairing used (`rules`: its `reference_filter`, e.g. 'numbers', 'a+b' or 'none')."""
    from traitlab.audit import lifts
    from traitlab.audit.counterfactual import run_counterfactual
    from traitlab.audit.reference import pair_rows, sample_reference

    mode: str | list[str] = rules if rules in ("auto", "none") else rules.split("+")
    teachers = [t for p in probes for t in calibration_teachers(base, p, cfg)]
    ts: dict[str, list[np.ndarray]] = {p.name: [] for p in probes}
    for k, teacher in enumerate(teachers):
        with opened(teacher) as lm:
            rows = sample_reference(
                lm,
                data,
                seed=cfg.seed + SEED_OFFSET + k,
                max_new_tokens=cfg.max_new_tokens,
                batch_size=cfg.batch_size,
            )
        try:
            cal, ref, _ = pair_rows(rows, reference, mode)
        except TraitlabError as e:
            raise TraitlabError(f"counterfactual.calibration, teacher {k + 1}: {e}") from None
        for r in run_counterfactual(base, cal, ref, probes, cfg.counterfactual):
            ts[r.probe].append(lifts.row_t(lifts.statistic(r, cfg.counterfactual)))
        if progress is not None:
            progress((k + 1) / len(teachers))
    return {p: np.mean(v, axis=0) for p, v in ts.items()}
