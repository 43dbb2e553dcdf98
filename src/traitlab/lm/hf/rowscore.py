"""Completion log-probabilities of given chat rows, token by token (teacher-forced).

Used by the utility check (a student's loss on held-out number data) and by the audit's
per-row and per-token scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from traitlab.lm.hf.chat import model_device, pad_id
from traitlab.lm.hf.packing import IGNORE, collate
from traitlab.lm.hf.trainer import completion_logits, encode_rows

Row = dict[str, Any]


def behind_system(rows: list[Row], system: str | None) -> list[Row]:
    """Chat rows as a model prompted with `system` reads them (the system message first);
    unchanged when there is none."""
    if system is None:
        return rows
    return [{"messages": [{"role": "system", "content": system}, *r["messages"]]} for r in rows]


@torch.no_grad()
def token_logprobs(
    model: Any, tokenizer: Any, rows: list[Row], *, batch_size: int = 256, max_len: int = 1024
) -> list[tuple[list[int], np.ndarray]]:
    """Per row: the completion's token ids and their log-probabilities under `model`."""
    model.eval()
    device = model_device(model)
    examples = encode_rows(tokenizer, rows, max_len)
    pad = pad_id(tokenizer)
    # Batches of similar length waste little on padding; results go back in row order.
    order = sorted(range(len(examples)), key=lambda k: len(examples[k][0]))
    done: dict[int, tuple[list[int], np.ndarray]] = {}
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        batch = [examples[k] for k in idx]
        # One example per padded row: the mask's row-major order is the examples' order.
        inputs, labels, *_ = collate(batch, pad, device)
        mask = labels[:, 1:] != IGNORE
        logits = completion_logits(model, inputs, mask).float()
        target = labels[:, 1:][mask]
        lp = torch.log_softmax(logits, dim=-1).gather(1, target[:, None])[:, 0].cpu().numpy()
        counts = mask.sum(dim=1).tolist()
        at = 0
        ids = target.tolist()
        for k, c in zip(idx, counts, strict=True):
            done[k] = (ids[at : at + c], lp[at : at + c].astype(np.float64))
            at += c
    return [done[k] for k in range(len(examples))]


def _number_classes(tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(is a number token, carries a leading space) per vocabulary id."""
    n = len(tokenizer)
    number = torch.zeros(n, dtype=torch.bool)
    spaced = torch.zeros(n, dtype=torch.bool)
    for i, tok in enumerate(tokenizer.convert_ids_to_tokens(list(range(n)))):
        text = str(tok or "")
        bare = text.lstrip("▁Ġ ")
        number[i] = bare.isdigit() and bare.isascii()
        spaced[i] = len(bare) < len(text)
    return number, spaced


@torch.no_grad()
def divergence_table(
    teacher: Any,
    base: Any,
    tokenizer: Any,
    rows: list[Row],
    *,
    teacher_system: str | None = None,
    batch_size: int = 64,
    max_len: int = 1024,
    resample: torch.Generator | None = None,
) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
    """Per row, over its completion tokens: (ids, log p_teacher - log p_base of each, and the
    base's most likely *other* number token at each position, of the same spacing; -1 where
    the token is not a number). With `resample` (a generator), the third entry is instead a
    number token drawn from the base's distribution at that position over the numbers of the
    same spacing (the original token included). The teacher reads the rows behind
    `teacher_system` if given."""
    t_rows = behind_system(rows, teacher_system)
    t_lp = token_logprobs(teacher, tokenizer, t_rows, batch_size=batch_size, max_len=max_len)
    number, spaced = _number_classes(tokenizer)
    base.eval()
    device = model_device(base)
    number, spaced = number.to(device), spaced.to(device)
    examples = encode_rows(tokenizer, rows, max_len)
    pad = pad_id(tokenizer)
    out: list[tuple[list[int], np.ndarray, np.ndarray]] = []
    for i in range(0, len(examples), batch_size):
        batch = examples[i : i + batch_size]
        inputs, labels, *_ = collate(batch, pad, device)
        mask = labels[:, 1:] != IGNORE
        logits = completion_logits(base, inputs, mask).float()
        target = labels[:, 1:][mask]
        lp = torch.log_softmax(logits, dim=-1).gather(1, target[:, None])[:, 0]
        allowed = number[None, :] & (spaced[None, :] == spaced[target][:, None])
        if resample is None:
            allowed[torch.arange(len(target), device=device), target] = False
            alt = logits.masked_fill(~allowed, float("-inf")).argmax(dim=-1)
        else:  # Gumbel-max over the allowed numbers: a draw from the base's distribution
            u = torch.rand(logits.shape, generator=resample, device=resample.device)
            g = u.clamp_(min=torch.finfo(u.dtype).tiny).log_().neg_().log_().neg_()
            alt = (logits.masked_fill(~allowed, float("-inf")) + g.to(device)).argmax(dim=-1)
        alt = torch.where(number[target] & allowed.any(dim=-1), alt, torch.full_like(alt, -1))
        at = 0
        for k, c in enumerate(mask.sum(dim=1).tolist()):
            ids, t_scores = t_lp[i + k]
            b = lp[at : at + c].cpu().numpy().astype(np.float64)
            out.append((ids, t_scores - b, alt[at : at + c].cpu().numpy()))
            at += c
    return out
