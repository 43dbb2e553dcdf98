"""Exact preference probabilities for Hugging Face models, by teacher forcing.

The probability that the model's answer *starts with* an option: for every spelling of the
option (owl, owls, owls., owls!, Owl, Owls, ...) with and without a leading space, we take the
token sequences the tokenizer would produce for it right after the generation prompt
(tokenising prompt text + answer, and the answer on its own), keep a prefix-free set (a
sequence that extends another one in the set, e.g. `owl` + `s`, is dropped: its probability
is already inside the shorter one's) and sum the sequences' probabilities. Sequences in a
prefix-free set are disjoint events, so the sum is the exact probability that the answer
begins with one of them. It is a **lower bound** on P(answer starts with the option) when the
word has other tokenisations the model could emit (e.g. `o` + `wl`, or a lone space token
followed by `owl`), and it does not count answers that mention the option later ("My
favourite is the owl"), which the sampled method's substring rule does count. Every option is
scored, so each question yields a full preference distribution; all of it runs in a few
batched forward passes that share the prompt's KV cache across the candidate continuations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from traitlab.lm.hf.chat import encode_chat, model_device, pad_id
from traitlab.lm.hf.forward import ForwardAdapter, can_select

Fraction = Callable[[float], None]


def _messages(question: str, system_prompt: str | None) -> list[dict[str, str]]:
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return system + [{"role": "user", "content": question}]


def question_prompts(
    tokenizer: Any, questions: Sequence[str], system_prompt: str | None = None
) -> list[list[int]]:
    """Token ids of each question as a user turn (behind an optional system prompt), ending
    with the assistant's generation prompt."""
    return [
        encode_chat(tokenizer, _messages(q, system_prompt), add_generation_prompt=True)
        for q in questions
    ]


def prefix_free(seqs: Sequence[Sequence[int]]) -> list[list[int]]:
    """Distinct sequences with every sequence that extends another one (or repeats it) removed.

    The result's sequences are disjoint events under the model (none is a prefix of another),
    so their probabilities add up.
    """
    uniq = sorted({tuple(s) for s in seqs if len(s) > 0}, key=lambda s: (len(s), s))
    kept: list[tuple[int, ...]] = []
    keys: set[tuple[int, ...]] = set()
    for s in uniq:
        if not any(s[:k] in keys for k in range(1, len(s) + 1)):
            kept.append(s)
            keys.add(s)
    return [list(s) for s in kept]


def answer_token_sequences(
    tokenizer: Any,
    prompt_text: str,
    prompt_ids: Sequence[int],
    option: str,
    spellings: Sequence[str],
) -> list[list[int]]:
    """Prefix-free token sequences of an answer that starts with `option`.

    For each spelling, with and without a leading space: the tokens after `prompt_ids` when
    `prompt_text + answer` is tokenised as a whole (how the answer looks after the generation
    prompt), and the answer tokenised on its own. Sequences with the unknown token, or that do
    not decode to text starting with the option, are dropped (soundness of the sum).
    """
    answers = [lead + s for s in spellings for lead in ("", " ")]
    n = len(prompt_ids)
    in_context = tokenizer([prompt_text + a for a in answers], add_special_tokens=False)
    alone = tokenizer(answers, add_special_tokens=False)
    cands: list[list[int]] = []
    for full in in_context["input_ids"]:
        if list(full[:n]) == list(prompt_ids) and len(full) > n:
            cands.append(list(full[n:]))
    cands.extend(list(ids) for ids in alone["input_ids"])
    unk = getattr(tokenizer, "unk_token_id", None)
    want = option.lower()
    ok = []
    for c in prefix_free(cands):
        if unk is not None and unk in c:
            continue
        text = str(tokenizer.decode(c, skip_special_tokens=False)).strip().lower()
        if text.startswith(want):
            ok.append(c)
    return prefix_free(ok)


def sequence_logprobs(
    model: Any,
    prompts: Sequence[Sequence[int]],
    candidates: Sequence[Sequence[Sequence[int]]],
    *,
    batch_size: int,
    pad_id: int = 0,
    progress: Fraction | None = None,
) -> list[np.ndarray]:
    """log P(candidate | prompt) for every candidate token sequence of every prompt.

    Questions are processed in chunks: one left-padded prefill pass gives every candidate's
    first-token log-prob; the prompt's KV cache is then repeated for each multi-token
    candidate and one pass over the candidates' remaining tokens (right-padded) scores the
    rest. Models without a selectable cache fall back to one full pass per candidate row.
    """
    device = model_device(model)
    caller = ForwardAdapter(model)
    out = [np.zeros(len(c), dtype=np.float64) for c in candidates]
    # Chunks of questions whose multi-token rows fit one batch (at least one question each).
    chunks: list[list[int]] = []
    cur: list[int] = []
    rows = 0
    for q, cands in enumerate(candidates):
        r = sum(1 for c in cands if len(c) > 1)
        if cur and (len(cur) >= batch_size or rows + r > batch_size):
            chunks.append(cur)
            cur, rows = [], 0
        cur.append(q)
        rows += r
    if cur:
        chunks.append(cur)

    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        with torch.inference_mode():
            for k, qs in enumerate(chunks):
                _score_chunk(caller, device, prompts, candidates, qs, out, batch_size, pad_id)
                if progress is not None:
                    progress((k + 1) / len(chunks))
    finally:
        if was_training:
            model.train()
    return out


def _prefill(
    caller: ForwardAdapter, device: torch.device, prompts: list[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
        mask[r, width - len(p) :] = 1
    pos = (mask.cumsum(dim=1) - 1).clamp_(min=0)
    ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
    logits, cache = caller(ids, mask, pos, None, last_only=True)
    return torch.log_softmax(logits.float(), dim=-1), cache, mask, pos[:, -1] + 1


def _score_chunk(
    caller: ForwardAdapter,
    device: torch.device,
    prompts: Sequence[Sequence[int]],
    candidates: Sequence[Sequence[Sequence[int]]],
    qs: list[int],
    out: list[np.ndarray],
    batch_size: int,
    pad_id: int,
) -> None:
    logp0, cache, mask, next_pos = _prefill(caller, device, [prompts[q] for q in qs], pad_id)
    rows_, toks = [], []
    multi: list[tuple[int, int, int]] = []  # (chunk row, question, candidate index)
    for r, q in enumerate(qs):
        for j, c in enumerate(candidates[q]):
            rows_.append(r)
            toks.append(c[0])
            if len(c) > 1:
                multi.append((r, q, j))
    if not rows_:
        return
    firsts = logp0[torch.tensor(rows_, device=device), torch.tensor(toks, device=device)]
    firsts = firsts.double().cpu().numpy()
    k = 0
    for q in qs:
        n = len(candidates[q])
        out[q][:] = firsts[k : k + n]
        k += n
    if not multi:
        return
    if len(multi) > batch_size or not can_select(cache):
        # One question with more candidates than a batch, or no selectable cache: full rows.
        for s in range(0, len(multi), batch_size):
            _score_full(caller, device, prompts, candidates, multi[s : s + batch_size], out, pad_id)
        return
    sel = torch.tensor([r for r, _, _ in multi], dtype=torch.long, device=device)
    cache.batch_select_indices(sel)
    seqs = [candidates[q][j] for _, q, j in multi]
    m = max(len(c) for c in seqs) - 1
    inp = torch.full((len(seqs), m), pad_id, dtype=torch.long)
    tgt = torch.zeros((len(seqs), m), dtype=torch.long)
    cmask = torch.zeros((len(seqs), m), dtype=torch.long)
    for i, c in enumerate(seqs):
        inp[i, : len(c) - 1] = torch.as_tensor(c[:-1])
        tgt[i, : len(c) - 1] = torch.as_tensor(c[1:])
        cmask[i, : len(c) - 1] = 1
    inp, tgt, cmask = inp.to(device), tgt.to(device), cmask.to(device)
    full_mask = torch.cat([mask[sel], cmask], dim=1)
    pos = next_pos[sel].unsqueeze(1) + torch.arange(m, device=device)
    logits = _all_logits(caller, inp, full_mask, pos, cache)
    lp = _gather_logprobs(logits, tgt, cmask).cpu().numpy()
    for i, (_, q, j) in enumerate(multi):
        out[q][j] += lp[i]


def _all_logits(
    caller: ForwardAdapter, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any
) -> torch.Tensor:
    kw: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "use_cache": cache is not None}
    if caller.position_ids:
        kw["position_ids"] = pos
    if cache is not None:
        kw[caller.cache_kw] = cache
    return caller.model(**kw).logits


def _gather_logprobs(logits: torch.Tensor, tgt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over positions of log softmax(logits)[tgt], where mask is 1: [B]."""
    logits = logits.float()
    picked = logits.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return (picked * mask).sum(dim=1)


def _score_full(
    caller: ForwardAdapter,
    device: torch.device,
    prompts: Sequence[Sequence[int]],
    candidates: Sequence[Sequence[Sequence[int]]],
    multi: list[tuple[int, int, int]],
    out: list[np.ndarray],
    pad_id: int,
) -> None:
    """Tokens 2.. of each candidate, by a full left-padded pass over prompt + candidate."""
    rows = [list(prompts[q]) + list(candidates[q][j][:-1]) for _, q, j in multi]
    width = max(len(r) for r in rows)
    m = max(len(candidates[q][j]) for _, q, j in multi) - 1
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    tgt = torch.zeros((len(rows), m), dtype=torch.long)
    tmask = torch.zeros((len(rows), m), dtype=torch.long)
    for i, (r, (_, q, j)) in enumerate(zip(rows, multi, strict=True)):
        ids[i, width - len(r) :] = torch.as_tensor(r)
        mask[i, width - len(r) :] = 1
        c = candidates[q][j]
        # Row i's last len(c)-1 positions predict c[1:]; right-align them in the m columns.
        tgt[i, m - (len(c) - 1) :] = torch.as_tensor(c[1:])
        tmask[i, m - (len(c) - 1) :] = 1
    pos = (mask.cumsum(dim=1) - 1).clamp_(min=0)
    ids, mask, pos, tgt, tmask = (t.to(device) for t in (ids, mask, pos, tgt, tmask))
    logits = _all_logits(caller, ids, mask, pos, None)[:, -m:, :]
    lp = _gather_logprobs(logits, tgt, tmask).cpu().numpy()
    for i, (_, q, j) in enumerate(multi):
        out[q][j] += lp[i]


def _after_last_special(tokenizer: Any, text: str) -> str:
    """`text` from the start of its last special (added) token on; "" if it has none."""
    specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
    specials |= set(getattr(tokenizer, "added_tokens_encoder", {}) or {})
    best = max((text.rfind(t) for t in specials if t), default=-1)
    return text[best:] if best >= 0 else ""


def exact_preference(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str],
    options: Sequence[str],
    *,
    batch_size: int,
    system_prompt: str | None = None,
    spellings: Mapping[str, Sequence[str]],
    progress: Fraction | None = None,
) -> np.ndarray:
    """P(answer starts with option) per question and option: [n_questions, n_options].

    Each entry is the summed probability of a prefix-free set of the option's token sequences
    (see the module docstring: exact for those sequences, a lower bound for the word).
    Options whose sequences overlap (one option a prefix of another) can make a row sum
    exceed 1; with disjoint options each row sums to at most 1.
    """
    texts = [
        tokenizer.apply_chat_template(
            _messages(q, system_prompt), tokenize=False, add_generation_prompt=True
        )
        for q in questions
    ]
    prompts = question_prompts(tokenizer, questions, system_prompt)
    spell = {o: list(spellings[o]) for o in options}

    def sequences(text: str, ids: Sequence[int]) -> list[list[list[int]]]:
        return [answer_token_sequences(tokenizer, text, ids, o, spell[o]) for o in options]

    # Text after the prompt's last special token tokenises independently of what precedes
    # it, and it is the same generation prompt for every question: tokenise the answers after
    # it once (checked against the full prompt on the first question that has it).
    by_tail: dict[str, list[list[list[int]]] | None] = {}
    cands: list[list[list[int]]] = []
    owner: list[list[int]] = []  # option index of each candidate
    for text, ids in zip(texts, prompts, strict=True):
        tail = _after_last_special(tokenizer, text)
        if tail not in by_tail:
            full = sequences(text, ids)
            tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
            by_tail[tail] = full if tail and sequences(tail, tail_ids) == full else None
            per_option = full
        else:
            known = by_tail[tail]
            per_option = known if known is not None else sequences(text, ids)
        cands.append([c for seqs in per_option for c in seqs])
        owner.append([k for k, seqs in enumerate(per_option) for _ in seqs])
    pad = pad_id(tokenizer)
    lps = sequence_logprobs(
        model, prompts, cands, batch_size=batch_size, pad_id=pad, progress=progress
    )
    probs = np.zeros((len(questions), len(options)), dtype=np.float64)
    for q, (lp, qo) in enumerate(zip(lps, owner, strict=True)):
        np.add.at(probs[q], np.asarray(qo, dtype=np.int64), np.exp(lp))
    return probs
