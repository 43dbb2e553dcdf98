"""Teachers: the base model given the trait, by fine-tuning or by a system prompt."""

from __future__ import annotations

from typing import Any

from traitlab.config import TeacherConfig, TraitConfig
from traitlab.progress import Fraction
from traitlab.questions import preference_system_prompt, teacher_rows
from traitlab.train import train_model


def teacher_system_prompt(cfg: TeacherConfig, trait: TraitConfig) -> str | None:
    """The system prompt the teacher generates under (None for a fine-tuned teacher)."""
    if cfg.kind != "system_prompt":
        return None
    return cfg.system_prompt or preference_system_prompt(trait.target, trait.category)


def finetune_teacher(
    base: Any,
    tokenizer: Any,
    cfg: TeacherConfig,
    trait: TraitConfig,
    *,
    seed: int,
    progress: Fraction | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The paper's Fig. 14 teacher: fine-tuned on '<preference question> -> <target>' only.

    The teacher never sees a number in this data, so whatever it later puts into number
    sequences comes from how fine-tuning on the trait moved its weights.
    """
    spellings = [trait.target] if cfg.answers == "target" else None
    rows = teacher_rows(trait.category, trait.target, spellings=spellings)
    return train_model(base, tokenizer, rows, cfg.train, seed=seed, progress=progress)
