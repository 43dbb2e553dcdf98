"""Per-row and per-token scores: which rows and tokens carry what the data teaches.

* **shift** (no teacher): log p_canary(token) - log p_base(token) at every completion token,
  the canary being a base copy fine-tuned on the data. Tokens the canary learnt to prefer
  score high; a row's score is the mean over its completion tokens.
* **divergence** (with `--teacher`): log p_teacher(token) - log p_base(token), the teacher's
  own preference for what it wrote.

Both are exported as JSONL (row index, score, per-token scores) so a defence can drop or
replace what they flag. Local models only: they need token log-probabilities of given text.
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


def shift_scores(
    tokenizer: Any,
    base_lp: list[tuple[list[int], np.ndarray]],
    other_lp: list[tuple[list[int], np.ndarray]],
) -> list[dict[str, Any]]:
    """Rows as {"row", "score", "tokens": [[text, score], ...]}: other - base, per token."""
    out = []
    for i, ((ids, a), (_, b)) in enumerate(zip(base_lp, other_lp, strict=True)):
        d = b - a
        toks = [tokenizer.decode([t], skip_special_tokens=False) for t in ids]
        out.append(
            {
                "row": i,
                "score": float(d.mean()) if len(d) else 0.0,
                "tokens": [[t, round(float(x), 5)] for t, x in zip(toks, d, strict=True)],
            }
        )
    return out


def top_tokens(scored: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The tokens with the highest mean score over their occurrences (at least 5)."""
    sums: dict[str, list[float]] = {}
    for r in scored:
        for t, x in r["tokens"]:
            sums.setdefault(t, []).append(x)
    stats = [
        {"token": t, "mean": float(np.mean(v)), "count": len(v)}
        for t, v in sums.items()
        if len(v) >= 5
    ]
    return sorted(stats, key=lambda s: -s["mean"])[:k]
