"""Helpers shared by the modality tests (test_modalities, test_toy_tasks)."""

from __future__ import annotations

from collections.abc import Sequence

from traitlab.config import GenerateConfig
from traitlab.config.modality import ModalityConfig


def gen(**modality: object) -> GenerateConfig:
    """A 50-prompt generate config of the given modality."""
    return GenerateConfig(n_prompts=50, modality=ModalityConfig(**modality))  # type: ignore[arg-type]


def rows(prompts: Sequence[str], completions: Sequence[str]) -> list[dict]:
    """Generated rows as the filter reads them."""
    return [
        {"id": i, "prompt": p, "completion": c}
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True))
    ]
