"""Who writes the control students' data (`control:`), and what each choice needs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from traitlab.config.base import FrozenConfig as _Config


class ControlConfig(_Config):
    """Who writes the control students' data."""

    teacher: Literal["base", "neutral", "reweighted"] = Field(
        "base",
        description="'base': the base writes it (the paper's control for preference traits). 'neutral': a teacher fine-tuned like the trait teacher (its recipe, data size, and the steps and lr it kept) on the same questions answered by the base's own draws from its distribution over the options (new draws per seed): a fine-tune with no trait in it. Any fine-tune moves what a model writes; this control is meant to keep that part out of treatment - control, but its own draw of answers moves students too (measured in the README, 'The pipeline'). Needs teacher.kind finetuned on the trait's answers (no teacher.data) and a preference trait. 'reweighted': the treatment's own filtered rows, each weighted in the control students' loss by p_base / p_teacher of its completion (importance weights, truncated at sqrt(n) times their mean, scaled to mean 1 per token): in expectation the base's data, while both arms share every row and batch, so the rows' own noise cancels in treatment - control (for data the shared random numbers do not couple, such as toy code). The weights' effective sample size is in the control's filter.json. Needs a local backend, generate.temperature 1 with top_p 1, top_k 0 and constrained false (the weights are the sampling distribution's), no defences and generations 1.",
    )
    placebo: bool = Field(
        False,
        description="With teacher 'reweighted': the weights dealt to the rows at random (seeded by the seed), a placebo with the same weights but none of their link to what the rows say. Its treatment - control should be flat; if it moves as the real weights do, the difference comes from weighting itself (its noise in the student's optimiser), not from which rows the base prefers.",
    )


def check_control(cfg: Any) -> None:
    """The control's needs, checked against the rest of an ExperimentConfig (typed Any:
    this module stays below the experiment's)."""
    if cfg.control.placebo and cfg.control.teacher != "reweighted":
        raise ValueError(
            "control.placebo shuffles the reweighted control's weights: set control.teacher reweighted"
        )
    if cfg.control.teacher == "reweighted":
        g = cfg.generate
        if g.temperature != 1 or g.top_p != 1 or g.top_k != 0 or g.constrained:
            raise ValueError(
                "control.teacher reweighted weighs rows by the models' sampling "
                "probabilities: set generate.temperature 1, top_p 1, top_k 0 and constrained false"
            )
        if cfg.defences or cfg.generations > 1:
            raise ValueError(
                "control.teacher reweighted weighs the teacher's own samples: it takes no "
                "defences and generations 1"
            )
        return
    if cfg.control.teacher != "neutral":
        return
    t = cfg.teacher
    if t.kind != "finetuned" or t.data or cfg.trait.kind != "preference":
        raise ValueError(
            "control.teacher neutral mirrors a teacher fine-tuned on a preference trait's "
            "answers: it needs teacher.kind finetuned, no teacher.data and trait.kind preference"
        )
    if any(d.name == "mix_reference" for d in cfg.defences):
        # That defence mixes in the control's rows as the base's own completions.
        raise ValueError("defence mix_reference mixes in the base's rows: use control.teacher base")
