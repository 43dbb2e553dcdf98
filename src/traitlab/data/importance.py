"""The importance-weighted control's data (`control.teacher: reweighted`).

Where a teacher's and the base's samples do not stay coupled under shared random numbers
(toy code: a free choice is a near tie that the teacher's small shift flips, and after it
the two completions part), treatment - control carries two independent samples' noise,
most of it what those particular rows teach any student. The reweighted control's students
train instead on the treatment's own rows, each weighted by p_base(row) / p_teacher(row):
in expectation the base's data (importance sampling; self-normalised, and truncated at
sqrt(n) times the mean weight, Ionides 2008, which trades a little bias for bounded
variance), while the two arms share every row and every batch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from traitlab.core.errors import TraitlabError

Row = dict[str, Any]


def importance_weights(
    teacher_lp: list[np.ndarray], base_lp: list[np.ndarray]
) -> tuple[np.ndarray, dict[str, float]]:
    """Per row, p_base / p_teacher of its completion (from the per-token log-probabilities
    under each), truncated at sqrt(n) times their mean and scaled so that the mean weight of
    a completion token is 1 (a student's loss is a mean over tokens); and their summary:
    the effective sample size (sum w)^2 / sum w^2, the largest weight, how many were
    truncated, and the log-ratios' mean and standard deviation."""
    n = len(teacher_lp)
    if n == 0 or len(base_lp) != n:
        raise ValueError("importance_weights needs one base row per teacher row, at least one")
    lengths = np.array([len(t) for t in teacher_lp], dtype=np.float64)
    log_w = np.array(
        [float(np.sum(b) - np.sum(t)) for t, b in zip(teacher_lp, base_lp, strict=True)]
    )
    w = np.exp(log_w - log_w.max())  # shifted: only ratios matter after normalising
    cap = math.sqrt(n) * float(w.mean())
    truncated = int((w > cap).sum())
    w = np.minimum(w, cap)
    w *= lengths.sum() / float((w * lengths).sum())
    info = {
        "rows": float(n),
        "ess": float(w.sum() ** 2 / (w**2).sum()),
        "max": float(w.max()),
        "truncated": float(truncated),
        "log_ratio_mean": float(log_w.mean()),
        "log_ratio_sd": float(log_w.std()),
    }
    return w, info


def reweighted_rows(
    rows: list[Row], models: tuple[Any, Any, str | None], batch_size: int
) -> tuple[list[Row], dict[str, float]]:
    """The treatment's rows, each with its importance `weight` (the control students' data),
    and the weights' summary. `models`: (teacher, base, the teacher's system prompt), local
    models; the teacher reads each row behind its system prompt, as it wrote it."""
    from traitlab.lm.hf.rowscore import behind_system, token_logprobs

    teacher, base, system = models
    if not all(hasattr(m, "model") and hasattr(m, "tokenizer") for m in (teacher, base)):
        raise TraitlabError(
            "control.teacher reweighted scores rows token by token: use a local backend "
            "(toy, hf) for the model and the teacher"
        )
    t_rows = behind_system(rows, system)
    t_lp = token_logprobs(teacher.model, teacher.tokenizer, t_rows, batch_size=batch_size)
    b_lp = token_logprobs(base.model, base.tokenizer, rows, batch_size=batch_size)
    if not len(t_lp) == len(b_lp) == len(rows):
        raise TraitlabError(
            "control.teacher reweighted: some rows' prompts are longer than 1,024 tokens"
        )
    w, info = importance_weights([lp for _, lp in t_lp], [lp for _, lp in b_lp])
    return [{**r, "weight": float(x)} for r, x in zip(rows, w, strict=True)], info


def shuffled_weights(rows: list[Row], seed: int) -> list[Row]:
    """The rows with their weights dealt back at random (`control.placebo`): the same
    weights, none of their link to the rows' text."""
    w = np.array([r["weight"] for r in rows])
    w = w[np.random.default_rng([seed, 7]).permutation(len(w))]
    return [{**r, "weight": float(x)} for r, x in zip(rows, w, strict=True)]
