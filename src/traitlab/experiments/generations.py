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

from traitlab.experiments.falsifier import half_life, primary_method, retention_rows
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


def summarize_generations(cfg: Any, evals: dict[str, Any]) -> dict[str, Any]:
    method = primary_method(cfg)
    gens = list(range(1, cfg.generations + 1))
    names = [
        ("treatment", "control") if g == 1 else (f"treatment#{g}", f"control#{g}") for g in gens
    ]
    rows = retention_rows(evals, names, method, cfg.evaluate.confidence)
    return {
        "method": method,
        "by_generation": [
            {"generation": g, "treatment": r.pop("rate"), **r}
            for g, r in zip(gens, rows, strict=True)
        ],
        "half_life_generations": half_life(gens, [r["retention"]["mean"] for r in rows]),
    }
