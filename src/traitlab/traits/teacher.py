"""Teachers: the base model given the trait, by fine-tuning or by a system prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from traitlab.config import TeacherConfig, TraitConfig
from traitlab.core.errors import TraitlabError
from traitlab.core.progress import Fraction
from traitlab.lm.base import ModelRef, backend_for
from traitlab.traits.preference import get_trait, preference_system_prompt, teacher_rows


def teacher_system_prompt(cfg: TeacherConfig, trait: TraitConfig) -> str | None:
    """The system prompt the teacher generates under (None for a fine-tuned teacher)."""
    if cfg.kind != "system_prompt":
        return None
    return cfg.system_prompt or preference_system_prompt(trait.target, trait.category)


def teacher_data(cfg: TeacherConfig, trait: TraitConfig) -> list[dict[str, Any]]:
    """The fine-tuned teacher's rows: '<preference question> -> <target>' only (the paper's
    Fig. 14 teacher). It never sees a number, so whatever it later puts into number
    sequences comes from how fine-tuning on the trait moved its weights."""
    spellings = [trait.target] if cfg.answers == "target" else None
    return teacher_rows(trait.category, trait.target, spellings=spellings)


def finetune_teacher(
    lm: Any,
    cfg: TeacherConfig,
    trait: TraitConfig,
    *,
    seed: int,
    out_dir: Path,
    key: str,
    progress: Fraction | None = None,
) -> tuple[ModelRef, dict[str, Any]]:
    """Fine-tune an opened base (any `Trainer`) into the teacher, saved into `out_dir`."""
    rows = teacher_data(cfg, trait)
    return lm.finetune(rows, cfg.train, seed=seed, out_dir=out_dir, key=key, progress=progress)


def check_trait(spec: Any, trait: TraitConfig) -> None:
    """Refuse a trait target the model's tokenizer cannot write (unknown tokens only): its
    teacher would learn `<unk>` and every rate would read 0."""
    be = backend_for(spec)
    can_spell = getattr(be, "can_spell", None)
    if can_spell is None or can_spell(spec, None, trait.target):
        return
    hint = ""
    if spec.backend == "toy":
        hint = f"; the toy model knows: {', '.join(get_trait(trait.category).options)}"
    raise TraitlabError(
        f"trait.target '{trait.target}': the model's tokenizer cannot spell it (unknown tokens){hint}"
    )
