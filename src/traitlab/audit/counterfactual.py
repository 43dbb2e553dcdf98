"""Counterfactual teachers: whose writing does the data look like?

For every option of every probe the audit builds the teacher that *would* have that trait,
from the base alone (no access to the real teacher): `finetuned`, a base copy fine-tuned to
answer the probe's questions with the option (the paper's Fig. 14 teacher, short), or
`prompted`, the base behind the option's preference system prompt (no training). Each row
then gets a likelihood ratio per option,

    s_o(i) = [log p_To(data_i) - log p_base(data_i)] - [log p_To(ref_i) - log p_base(ref_i)],

data and reference row i answering the same prompt. Under the null (the data is the base's
own output) every s_o has mean zero, so a t over rows is calibrated without a calibration set.
Counterfactual teachers share a generic shift (any fine-tune on one-word answers moves the
numbers alike), so the statistic is the t of each option's scores with that shift regressed
out (`contrast`): the option whose teacher explains the data beyond what every teacher
explains is the likely trait. The regression makes the t a ranking statistic rather than an
exactly calibrated one; the threshold comes from the audit benchmark.
Fine-tuned teachers are cached per (base, probe, recipe) under the traitlab cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from traitlab.audit.config import CounterfactualConfig
from traitlab.audit.probes import Probe
from traitlab.audit.verdict import t_stat
from traitlab.core.device import cache_dir
from traitlab.core.files import stable_hash
from traitlab.core.runs import stage, stage_done
from traitlab.lm.base import ModelRef, Trainer, opened, require
from traitlab.traits.preference import preference_system_prompt

Row = dict[str, Any]


@dataclass
class CounterfactualResult:
    probe: str
    options: list[str]
    scores: np.ndarray  # [options, rows]: s_o(i)

    @property
    def contrast(self) -> np.ndarray:
        """Each option's scores with its share of the generic shift removed: the mean over
        options g(i), scaled by the option's own least-squares loading on it (teachers move
        the numbers alike but by different amounts, so a plain difference s_o - g leaves the
        teachers that moved most on top)."""
        s = self.scores
        g = s.mean(axis=0)
        gg = float(g @ g)
        beta = (s @ g) / gg if gg > 0 else np.ones(len(s))
        return np.asarray(s - beta[:, None] * g[None, :])


def _teacher_rows(probe: Probe, option: str) -> list[Row]:
    return [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": option}]}
        for q in probe.questions
    ]


def counterfactual_teachers(
    base: ModelRef, probe: Probe, cfg: CounterfactualConfig, progress: Any = None
) -> list[ModelRef]:
    """One fine-tuned teacher per option of `probe`, cached (built once per base)."""
    root = cache_dir() / "audit-teachers"
    out = []
    for k, option in enumerate(probe.option_names):
        key = stable_hash(
            ["cf-teacher", base.key, probe.questions, option, cfg.train.model_dump(mode="json")]
        )
        d = root / key
        if not stage_done(d, key):
            with opened(base) as lm, stage(d, key) as tmp:
                require(lm, Trainer, "fine-tune (the counterfactual teachers)")
                lm.finetune(
                    _teacher_rows(probe, option), cfg.train, seed=cfg.seed, out_dir=tmp, key=key
                )
        out.append(ModelRef.load(d))
        if progress is not None:
            progress((k + 1) / len(probe.option_names))
    return out


def _loglik(lm: Any, rows: list[Row], system: str | None = None) -> np.ndarray:
    from traitlab.audit.rows import token_logprobs

    if system is not None:
        rows = [{"messages": [{"role": "system", "content": system}] + r["messages"]} for r in rows]
    return np.array([lp.sum() for _, lp in token_logprobs(lm.model, lm.tokenizer, rows)])


def run_counterfactual(
    base: ModelRef,
    data: list[Row],
    reference: list[Row],
    probes: Sequence[Probe],
    cfg: CounterfactualConfig,
    progress: Any = None,
) -> list[CounterfactualResult]:
    with opened(base) as lm:
        b_d, b_r = _loglik(lm, data), _loglik(lm, reference)
        out = []
        for p in probes:
            rows = []
            if cfg.kind == "prompted":
                for o in p.option_names:
                    sp = preference_system_prompt(o, p.name)
                    rows.append((_loglik(lm, data, sp) - b_d) - (_loglik(lm, reference, sp) - b_r))
            else:
                for ref in counterfactual_teachers(base, p, cfg, progress):
                    with opened(ref) as t:
                        rows.append((_loglik(t, data) - b_d) - (_loglik(t, reference) - b_r))
            out.append(CounterfactualResult(p.name, p.option_names, np.stack(rows)))
    return out


def row_t(values: np.ndarray) -> np.ndarray:
    """t over rows (axis 1) of each option's scores."""
    return t_stat(values, axis=1)
