"""Generation: the teacher (or the base, for the control) completes the modality's prompts."""

from __future__ import annotations

from typing import Any

from traitlab.config import GenerateConfig
from traitlab.core.progress import Fraction
from traitlab.lm.base import SamplingParams


def sampling_params(cfg: GenerateConfig) -> SamplingParams:
    """The generate config's sampling parameters, as every backend takes them."""
    return SamplingParams(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        min_p=cfg.min_p,
        top_k=cfg.top_k,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        numbers_only=cfg.constrained,
        coupled=cfg.common_noise,
    )


def generate_rows(
    lm: Any,
    prompts: list[str],
    cfg: GenerateConfig,
    *,
    seed: int,
    system_prompt: str | None = None,
    source: str = "model",
    progress: Fraction | None = None,
) -> list[dict[str, Any]]:
    """One completion per prompt from an opened model (any `Sampler`), as raw rows
    {"id", "prompt", "completion", "source"}.

    The system prompt (a system-prompted teacher's trait) is used while sampling only: the
    rows hold the bare prompt, and students are trained without any system prompt.
    """
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages = [system + [{"role": "user", "content": p}] for p in prompts]
    texts = lm.complete(messages, sampling_params(cfg), seed=seed, progress=progress)
    return [
        {"id": i, "prompt": p, "completion": text, "source": source}
        for i, (p, text) in enumerate(zip(prompts, texts, strict=True))
    ]
