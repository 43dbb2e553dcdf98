"""Multi-generation transfer: the treatment student becomes the next generation's teacher.

With `generations: G`, each seed's chain goes on after the experiment: generation g's teacher
is generation g-1's treatment student (trained on numbers only). It writes numbers for the
same prompts with the same random numbers, they are filtered (paired with the base's own
numbers, as in generation 1), and a treatment and a control student are trained from the
base and evaluated. Each generation lives in `generation-<g>/` of the run, with the stages
of generation 1's layout. The summary gives each generation's excess over its control,
its retention (excess over generation 1's, Fieller's CI over seeds) and the half-life in
generations.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from traitlab.core.stats import mean_ci, ratio_ci
from traitlab.experiments.falsifier import half_life
from traitlab.experiments.layout import RunLayout
from traitlab.lm.base import ModelRef


def run_generations(
    st: Any, seed: int, first: ModelRef, control_gen: tuple[Path, str]
) -> dict[str, Any]:
    """Generations 2..G of one seed: 'treatment#g' / 'control#g' -> evaluation."""
    out: dict[str, Any] = {}
    prev = first
    for g in range(2, st.cfg.generations + 1):
        child = copy.copy(st)
        child.layout = RunLayout(st.layout.root / f"generation-{g}")
        gens = {
            "teacher": child.generate(seed, "teacher", prev, None, prev.key),
            "control": control_gen,
        }
        data = child.filter(seed, gens, (prev, None))
        nxt = prev
        for arm, which in (("treatment", "teacher"), ("control", "control")):
            student = child.student(seed, arm, *data[which], prev)
            out[f"{arm}#{g}"] = child.evaluate(
                child.layout.eval(seed, arm),
                f"seed {seed}: generation {g}: evaluate {arm}",
                student,
                seed,
            )
            if arm == "treatment":
                nxt = student
        prev = nxt
    return out


def _rates(evals: dict[str, Any], arm: str, g: int, method: str) -> dict[int, float]:
    name = arm if g == 1 else f"{arm}#{g}"
    return {s: float(r[method]["mean"]) for s, r in evals.get(name, {}).items() if method in r}


def summarize_generations(cfg: Any, evals: dict[str, Any]) -> dict[str, Any]:
    method = "exact" if "exact" in cfg.evaluate.methods else "sampled"
    conf = cfg.evaluate.confidence
    rows, retention = [], []
    first: dict[int, float] = {}
    gens = list(range(1, cfg.generations + 1))
    for g in gens:
        t, c = _rates(evals, "treatment", g, method), _rates(evals, "control", g, method)
        seeds = sorted(set(t) & set(c))
        diff = {s: t[s] - c[s] for s in seeds}
        if g == 1:
            first = diff
        common = [s for s in seeds if s in first]
        r, lo, hi = ratio_ci([diff[s] for s in common], [first[s] for s in common], conf)
        row = {
            "generation": g,
            "treatment": float(np.mean([t[s] for s in seeds])),
            "control": float(np.mean([c[s] for s in seeds])),
            "excess": mean_ci(list(diff.values()), conf).to_dict(),
            "retention": {"mean": r if np.isfinite(r) else None, "lower": lo, "upper": hi},
        }
        retention.append(row["retention"]["mean"])
        rows.append(row)
    return {
        "method": method,
        "by_generation": rows,
        "half_life_generations": half_life(gens, retention),
    }
