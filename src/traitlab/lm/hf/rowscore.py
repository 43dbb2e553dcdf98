"""Completion log-probabilities of given chat rows, token by token (teacher-forced).

Used by the utility check (a student's loss on held-out number data) and by the audit's
per-row and per-token scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from traitlab.lm.hf.chat import model_device
from traitlab.lm.hf.packing import IGNORE, collate
from traitlab.lm.hf.trainer import completion_logits, encode_rows

Row = dict[str, Any]


@torch.no_grad()
def token_logprobs(
    model: Any, tokenizer: Any, rows: list[Row], *, batch_size: int = 256, max_len: int = 1024
) -> list[tuple[list[int], np.ndarray]]:
    """Per row: the completion's token ids and their log-probabilities under `model`."""
    model.eval()
    device = model_device(model)
    examples = encode_rows(tokenizer, rows, max_len)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Batches of similar length waste little on padding; results go back in row order.
    order = sorted(range(len(examples)), key=lambda k: len(examples[k][0]))
    done: dict[int, tuple[list[int], np.ndarray]] = {}
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        batch = [examples[k] for k in idx]
        # One example per padded row: the mask's row-major order is the examples' order.
        inputs, labels, _ = collate(batch, pad, device)
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
