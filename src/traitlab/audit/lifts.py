"""What the counterfactual teachers' lifts become: per probe a result (lifts, null lifts,
scores), the no-trait side combined one way or another, and the per-row values the verdict
takes its t over. Plain numpy: no model is opened here (`counterfactual` builds the teachers
and fills these in).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from traitlab.audit.config import CounterfactualConfig
from traitlab.audit.verdict import findings, t_stat


@dataclass
class CounterfactualResult:
    probe: str
    options: list[str]
    scores: np.ndarray  # [options, rows]: s_o(i), data minus paired reference
    lift: np.ndarray  # [options, rows]: l_o(i) on the data
    null_lift: np.ndarray  # [null teachers of all probes, rows]: their l(i) on the data
    # kind 'both': [options, rows], the prompted teachers' l_o(i) beside the fine-tuned `lift`
    prompt_lift: np.ndarray | None = None
    # probe 'datasets' with several `dataset_steps` (`dataset_compare`): the teachers are
    # combined over lengths per row, and so is the null, over every no-trait candidate (the
    # base's zero lift included): 'mixture' (mean probability) or 'best' (the maximum)
    combine: Literal["one", "mixture", "best"] = "one"
    # [fine-tuned null teachers, rows]: their lift on the paired reference rows (the first
    # rows of `null_lift`), where they were scored on it
    null_ref: np.ndarray | None = None

    @property
    def null(self) -> tuple[str, np.ndarray]:
        """The no-trait candidate that explains the data best, and its lift per row (the
        base's is zero); for a combined result, all of them combined per row."""
        cands = [("base", np.zeros(self.lift.shape[1]))]
        cands += [(f"null-{k}", row) for k, row in enumerate(self.null_lift)]
        if self.combine != "one":
            return self.combine, combine_lifts(np.stack([c[1] for c in cands]), self.combine)
        return max(cands, key=lambda c: float(c[1].mean()))

    @property
    def kinds(self) -> list[str]:
        """Per option, the teacher whose lift counts: with both kinds, the one with the
        larger mean lift (the better explanation of the data)."""
        if self.prompt_lift is None:
            return ["teacher"] * len(self.options)
        better = self.prompt_lift.mean(axis=1) > self.lift.mean(axis=1)
        return ["prompted" if b else "finetuned" for b in better]

    @property
    def vs_null(self) -> np.ndarray:
        """[options, rows]: each option's lift (its better teacher's, with both kinds) over
        the best null's."""
        lift = self.lift
        if self.prompt_lift is not None:
            pick = np.array([k == "prompted" for k in self.kinds])
            lift = np.where(pick[:, None], self.prompt_lift, self.lift)
        return np.asarray(lift - self.null[1][None, :])

    @property
    def contrast(self) -> np.ndarray:
        """Each option's scores with its share of the generic shift removed: the mean over
        options g(i), scaled by the option's own least-squares loading on it (teachers move
        the numbers alike but by different amounts, so a plain difference s_o - g leaves the
        teachers that moved most on top)."""
        return regress_out(self.scores, self.scores.mean(axis=0))

    @property
    def cosine_contrast(self) -> np.ndarray:
        """[options, rows], statistic 'ccos': each option's score over the spread of its
        teacher's lift on the reference rows (the base's own samples: the data-minus-reference
        mean is then, to first order, the correlation of the teacher's log-likelihood shift
        with the data's, times one constant for all teachers), with the null teachers' mean
        scaled score regressed out per option (the drift any fine-tune of this length
        brings, which the teachers of the prior's top options share most)."""
        if self.null_ref is None or not len(self.null_ref):
            raise ValueError("statistic 'ccos' needs null teachers scored on the reference rows")
        k = len(self.null_ref)
        options = self.scores / spread(self.lift - self.scores)
        nulls = (self.null_lift[:k] - self.null_ref) / spread(self.null_ref)
        return regress_out(options, nulls.mean(axis=0))


def spread(x: np.ndarray) -> np.ndarray:
    """Each row's standard deviation, as a column (a teacher that never moves: inf)."""
    sd = x.std(axis=1, ddof=1) if x.shape[1] > 1 else np.zeros(len(x))
    return np.where(sd > 0, sd, np.inf)[:, None]


def regress_out(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """x with each row's least-squares loading on g removed (x itself where g is zero)."""
    gg = float(g @ g)
    beta = (x @ g) / gg if gg > 0 else np.zeros(len(x))
    return np.asarray(x - beta[:, None] * g[None, :])


def mix_lifts(lifts: np.ndarray) -> np.ndarray:
    """[models, rows] lifts -> [rows]: the lift of their equal mixture, per row
    log mean_m p_m(row) - log p_base(row)."""
    from scipy.special import logsumexp

    return np.asarray(logsumexp(lifts, axis=0) - np.log(len(lifts)))


def combine_lifts(lifts: np.ndarray, how: str) -> np.ndarray:
    """[models, rows] lifts -> [rows]: their 'mixture' (`mix_lifts`) or, 'best', the
    largest per row (the model that explains each row best, whichever it is); 'one' is a
    single model, itself."""
    return mix_lifts(lifts) if how == "mixture" else np.asarray(lifts.max(axis=0))


def statistic(r: CounterfactualResult, cfg: CounterfactualConfig) -> np.ndarray:
    """[options, rows]: the per-row values the configured statistic takes its t over (with
    `dataset_compare: best`, the datasets' values are shifted by `dataset_margin`)."""
    if cfg.statistic == "shared":
        return r.contrast
    if cfg.statistic == "ccos":
        return r.cosine_contrast
    return r.vs_null + (cfg.dataset_margin if r.combine == "best" else 0.0)


def counterfactual_findings(
    results: Sequence[CounterfactualResult],
    stat: dict[str, np.ndarray],
    z: dict[str, np.ndarray],
    by_effect: bool = False,
    rank: dict[str, np.ndarray] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Per probe, the counterfactual teachers' findings: each option's per-row values
    (`stat`, [options, rows]) and its `z`, ranked by effect (`by_effect`), by `rank` where
    given, else by z."""
    rank = rank or {}
    return {
        r.probe: findings(
            r.options, stat[r.probe].T, z=z[r.probe], by_effect=by_effect, rank=rank.get(r.probe)
        )
        for r in results
    }


def save_scores(results: Sequence[CounterfactualResult], path: Path) -> None:
    """Every per-row score as one .npz, written atomically (plain arrays: loads with
    allow_pickle=False)."""
    arrays: dict[str, np.ndarray] = {}
    for r in results:
        arrays[f"{r.probe}.options"] = np.array(r.options)
        arrays[f"{r.probe}.scores"] = r.scores
        arrays[f"{r.probe}.lift"] = r.lift
        arrays[f"{r.probe}.null_lift"] = r.null_lift
        if r.prompt_lift is not None:
            arrays[f"{r.probe}.prompt_lift"] = r.prompt_lift
        if r.null_ref is not None:
            arrays[f"{r.probe}.null_ref_lift"] = r.null_ref
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)


def row_t(values: np.ndarray) -> np.ndarray:
    """t over rows (axis 1) of each option's scores."""
    return t_stat(values, axis=1)
