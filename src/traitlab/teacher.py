"""Teachers: the base model given the trait, by fine-tuning or by a system prompt."""

from __future__ import annotations

from typing import Any

from traitlab.config import ModelConfig, TeacherConfig, TraitConfig
from traitlab.errors import TraitlabError
from traitlab.evaluate import answer_token_sequences
from traitlab.models import load_tokenizer, model_source
from traitlab.progress import Fraction
from traitlab.questions import answer_spellings, get_trait, preference_system_prompt, teacher_rows
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


def check_trait(cfg: ModelConfig, trait: TraitConfig) -> None:
    """Refuse a trait target the model's tokenizer cannot write (unknown tokens only): its
    teacher would learn `<unk>` and every rate would read 0."""
    if cfg.name == "toy":
        from traitlab.toy.tokenizer import build_tokenizer

        tok = build_tokenizer(model_max_length=cfg.toy.max_len)
    else:
        tok = load_tokenizer(model_source(cfg), cfg)
    target = trait.target
    if not answer_token_sequences(tok, "", [], target, answer_spellings(target)):
        hint = ""
        if cfg.name == "toy":
            hint = f"; the toy model knows: {', '.join(get_trait(trait.category).options)}"
        raise TraitlabError(
            f"trait.target '{target}': the model's tokenizer cannot spell it (unknown tokens){hint}"
        )
