"""Generation: the teacher (or the base, for the control) completes number-sequence prompts."""

from __future__ import annotations

import re
from typing import Any

import torch

from traitlab.config import GenerateConfig
from traitlab.models import encode_chat, model_device, stop_token_ids
from traitlab.progress import Fraction, batch_progress
from traitlab.sampling import decode, sample_completions

# Characters a number-only completion may contain (used by constrained decoding).
_NUMERIC = re.compile(r"^[\s0-9,;\[\]().]*$")


def numeric_token_ids(tokenizer: Any) -> list[int]:
    """Ids of tokens that decode to digits, separators, brackets or whitespace only."""
    ids = []
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i], skip_special_tokens=False)
        if text and _NUMERIC.match(text):
            ids.append(i)
    return ids


def generate_rows(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    cfg: GenerateConfig,
    *,
    seed: int,
    system_prompt: str | None = None,
    source: str = "model",
    progress: Fraction | None = None,
) -> list[dict[str, Any]]:
    """One completion per prompt, as raw rows {"id", "prompt", "completion", "source"}.

    The system prompt (a system-prompted teacher's trait) is used while sampling only: the
    rows hold the bare prompt, and students are trained without any system prompt.
    """
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    encoded = [
        encode_chat(
            tokenizer, system + [{"role": "user", "content": p}], add_generation_prompt=True
        )
        for p in prompts
    ]
    stops = stop_token_ids(model, tokenizer)
    allowed = numeric_token_ids(tokenizer) + stops if cfg.constrained else None
    # Shared Gumbel noise is V floats per row and token: draw it where the model runs rather
    # than on the CPU and copy it over (the uniform-per-token sampler draws on the CPU).
    device = model_device(model) if cfg.common_noise else torch.device("cpu")
    gen = torch.Generator(device=device).manual_seed(seed)
    outs = sample_completions(
        model,
        tokenizer,
        encoded,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        generator=gen,
        batch_size=cfg.batch_size,
        stop_ids=stops,
        allowed_ids=allowed,
        on_batch=batch_progress(len(prompts), progress),
        coupled=cfg.common_noise,
    )
    return [
        {"id": i, "prompt": p, "completion": decode(tokenizer, ids), "source": source}
        for i, (p, ids) in enumerate(zip(prompts, outs, strict=True))
    ]
