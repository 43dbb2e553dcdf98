"""The probability of each whole answer from a short list, every answer of one prompt in one
forward pass.

A judge's score is the probability-weighted mean over the answers "0" ... "100". Where the
tokenizer writes numbers digit by digit, "1" is a prefix of "10" and "100", so the chance that
an answer *starts with* each number (`scoring.exact_preference`) overlaps. Here each answer
ends with the end-of-turn token: no candidate is a prefix of another, and the probabilities
are of disjoint events. The answers' prefix tree is laid out after the prompt in one sequence, each
node once (the "1" that begins "1", "10" and "100" is read once), its position continuing
from the prompt, and a 4-D attention mask letting it see the prompt and its ancestors only
(as in `pairs`): one pass over the prompt and 101 more tokens for SmolLM2's numbers, where a
prompt cache copied for each of the 202 candidate rows (101 answers, two end tokens) moved
gigabytes per question.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from traitlab.core.errors import TraitlabError
from traitlab.lm.hf.chat import model_device
from traitlab.lm.hf.pairs import _additive
from traitlab.lm.hf.scoring import _messages, question_prompts


def _answer_tokens(
    tokenizer: Any, text: str, prompt: Sequence[int], answers: Sequence[str]
) -> list[list[int]]:
    """Each answer's tokens as they follow the generation prompt (tokenised in context; on
    its own where the context does not keep the prompt's tokens)."""
    full = tokenizer([text + a for a in answers], add_special_tokens=False)["input_ids"]
    alone = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
    n = len(prompt)
    return [
        list(f[n:]) if list(f[:n]) == list(prompt) and len(f) > n else list(a)
        for f, a in zip(full, alone, strict=True)
    ]


@torch.no_grad()
def tree_logprobs(
    model: Any, prompt: Sequence[int], answers: Sequence[Sequence[int]], stop_ids: Sequence[int]
) -> np.ndarray:
    """log P(answer, then one of `stop_ids` | prompt) of every answer (each >= 1 token), in
    one forward pass over the prompt and the answers' prefix tree (a prefix the answers share,
    "1" of "1", "10" and "100", is read once)."""
    n = len(prompt)
    ids, pos = list(prompt), list(range(n))
    node: dict[tuple[int, ...], int] = {(): n - 1}  # prefix -> where it is read
    for a in answers:
        for k in range(1, len(a) + 1):
            if tuple(a[:k]) not in node:
                node[tuple(a[:k])] = len(ids)
                ids.append(a[k - 1])
                pos.append(n + k - 1)
    length = len(ids)
    mask = torch.zeros(length, length, dtype=torch.bool)
    mask[:n, :n] = torch.tril(torch.ones(n, n, dtype=torch.bool))
    for prefix, at in node.items():
        if prefix:  # a node sees the prompt, its ancestors and itself
            mask[at, :n] = True
            mask[at, [node[prefix[:k]] for k in range(1, len(prefix) + 1)]] = True
    device = model_device(model)
    logits = model(
        input_ids=torch.tensor([ids], device=device),
        position_ids=torch.tensor([pos], device=device),
        attention_mask=_additive(mask[None, None].to(device), model),
        use_cache=False,
    ).logits[0]
    logp = torch.log_softmax(logits[n - 1 :].float(), dim=-1).double().cpu()
    stops = torch.tensor(list(stop_ids))
    out = np.zeros(len(answers))
    for j, a in enumerate(answers):
        # Token k is predicted where the prefix before it was read; the stop after the last.
        out[j] = sum(float(logp[node[tuple(a[:k])] - n + 1, a[k]]) for k in range(len(a)))
        out[j] += float(torch.logsumexp(logp[node[tuple(a)] - n + 1, stops], dim=0))
    return out


@torch.no_grad()
def _plain_logprob(
    model: Any, prompt: Sequence[int], answer: Sequence[int], stop_ids: Sequence[int]
) -> float:
    """`tree_logprobs` of one answer by an ordinary causal pass (the check)."""
    device = model_device(model)
    logits = model(input_ids=torch.tensor([list(prompt) + list(answer)], device=device)).logits[0]
    logp = torch.log_softmax(logits[len(prompt) - 1 :].float(), dim=-1).double().cpu()
    got = sum(float(logp[k, t]) for k, t in enumerate(answer))
    return got + float(torch.logsumexp(logp[len(answer), torch.tensor(list(stop_ids))], dim=0))


def whole_answer_probs(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str],
    answers: Sequence[str],
    *,
    stop_ids: Sequence[int],
) -> np.ndarray:
    """P(the whole answer is exactly `a`, then the turn ends with one of `stop_ids`) per
    question and answer: [n_questions, n_answers]; a row sums to at most 1."""
    was_training = bool(getattr(model, "training", False))
    model.eval()
    out = np.zeros((len(questions), len(answers)))
    try:
        for q, prompt in enumerate(question_prompts(tokenizer, questions)):
            text = tokenizer.apply_chat_template(
                _messages(questions[q], None), tokenize=False, add_generation_prompt=True
            )
            toks = _answer_tokens(tokenizer, text, prompt, answers)
            lp = tree_logprobs(model, prompt, toks, stop_ids)
            if q == 0:  # an attention that ignores the 4-D mask would score other text
                j = max(range(len(toks)), key=lambda k: len(toks[k]))
                if abs(_plain_logprob(model, prompt, toks[j], stop_ids) - lp[j]) > 0.05:
                    raise TraitlabError(
                        f"{type(model).__name__}: its attention ignores a 4-D mask, so whole "
                        "answers cannot be scored in one pass; load it with "
                        "attn_implementation 'sdpa' or 'eager'"
                    )
            out[q] = np.exp(lp)
    finally:
        if was_training:
            model.train()
    return out
