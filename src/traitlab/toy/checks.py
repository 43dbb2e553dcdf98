"""What a usable toy base needs, measured right after pretraining (`pretrain_log.json`): it
prefers owls at the prior rate, follows the owl system prompt, and writes numbers that pass
the paper's format filter."""

from __future__ import annotations

from typing import Any

import torch

from traitlab.config import FilterConfig, PromptSetConfig
from traitlab.config.toy import PromptStyle
from traitlab.data.filtering import reject_reasons
from traitlab.data.prompts import number_prompts
from traitlab.lm.hf.chat import decode, encode_chat
from traitlab.lm.hf.sampler import sample_completions
from traitlab.toy.tokenizer import SPACE
from traitlab.traits.preference import ANIMAL_QUESTIONS, preference_system_prompt

# Seed of the fresh number prompts of `base_checks` (not 47, not the corpus's).
CHECK_PROMPT_SEED = 9_000_001


@torch.no_grad()
def answer_probs(model: Any, tok: Any, questions: list[str], system: str | None = None) -> Any:
    """Next-token distribution at the answer position of each question: [n, vocab]."""
    prefix = [{"role": "system", "content": system}] if system else []
    enc = [encode_chat(tok, prefix + [{"role": "user", "content": q}], True) for q in questions]
    x = torch.full((len(enc), max(map(len, enc))), tok.pad_token_id)
    for i, e in enumerate(enc):
        x[i, : len(e)] = torch.tensor(e)
    logits = model(input_ids=x, use_cache=False).logits  # right padding: causal, no mask needed
    last = torch.tensor([len(e) - 1 for e in enc])
    return logits[torch.arange(len(enc)), last].float().softmax(-1)


@torch.no_grad()
def base_checks(
    model: Any, tok: Any, n_prompts: int = 256, seed: int = 0, style: PromptStyle = "paper"
) -> dict[str, Any]:
    """What a usable base needs: P(first answer token = owl) over the 50 animal questions,
    without and with the paper's owl system prompt, and the share of number completions
    sampled at T=1 (fresh paper prompts) that pass the paper's format filter."""

    was_training = model.training
    model.eval()
    owl = tok.convert_tokens_to_ids(SPACE + "owl")
    qs = list(ANIMAL_QUESTIONS)
    out: dict[str, Any] = {
        "p_owl": round(float(answer_probs(model, tok, qs)[:, owl].mean()), 4),
        "p_owl_system_prompt": round(
            float(
                answer_probs(model, tok, qs, preference_system_prompt("owl", "animal"))[
                    :, owl
                ].mean()
            ),
            4,
        ),
    }
    if n_prompts:
        prompts = number_prompts(
            PromptSetConfig(style=style), n_prompts, seed=CHECK_PROMPT_SEED + seed
        )
        enc = [encode_chat(tok, [{"role": "user", "content": p}], True) for p in prompts]
        comps = sample_completions(
            model,
            tok,
            enc,
            max_new_tokens=40,
            temperature=1.0,
            generator=torch.Generator().manual_seed(seed),
            batch_size=256,
            stop_ids=[tok.eos_token_id],
        )
        ok = sum(not reject_reasons(decode(tok, c), FilterConfig()) for c in comps)
        out["format_pass"] = round(ok / len(comps), 4)
        out["format_prompts"] = len(comps)
    model.train(was_training)
    return out
