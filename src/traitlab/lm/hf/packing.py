"""Batching training examples: padded rows, or rows packed with several examples each.

Packed examples get position ids that restart at every example, so transformers gives each
one a block-diagonal causal mask: the loss is the unpacked one without the padding compute.
`check_packing` fails early on an architecture whose attention ignores position ids.
Toy pretraining reuses `pack_rows`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from traitlab.core.errors import TraitlabError
from traitlab.lm.hf.chat import model_device

IGNORE = -100


def _mask_labels(labels: torch.Tensor, offset: int, masked: list[Any]) -> None:
    """No loss on an example's masked positions (its optional third field: absolute token
    indices, from a row's `loss_mask`); they still serve as context."""
    if masked and masked[0]:
        labels[offset + torch.as_tensor(masked[0], dtype=torch.long)] = IGNORE


def _weights(batch: list[tuple[Any, ...]], shape: tuple[int, int]) -> torch.Tensor | None:
    """A per-position loss weight tensor when any example carries a weight (its optional
    fourth field, from a row's `weight`), else None (every token weighs 1)."""
    if not any(len(ex) > 3 for ex in batch):
        return None
    return torch.ones(shape, dtype=torch.float32)


def _weight(ex: tuple[Any, ...]) -> float:
    return float(ex[3]) if len(ex) > 3 else 1.0


Batch = tuple[dict[str, torch.Tensor], torch.Tensor, int, torch.Tensor | None]


def collate(batch: list[tuple[Any, ...]], pad_id: int, device: torch.device) -> Batch:
    """One example per row, right-padded: (model inputs, labels, real tokens, per-position
    loss weights or None)."""
    n = max(len(ex[0]) for ex in batch)
    input_ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    attn = torch.zeros((len(batch), n), dtype=torch.long)
    weights = _weights(batch, (len(batch), n))
    for r, (ids, n_prompt, *masked) in enumerate(batch):
        t = torch.tensor(ids, dtype=torch.long)
        input_ids[r, : len(ids)] = t
        attn[r, : len(ids)] = 1
        labels[r, n_prompt : len(ids)] = t[n_prompt:]
        _mask_labels(labels[r], 0, masked)
        if weights is not None:
            weights[r] = _weight(batch[r])
    # use_cache=False: training needs no KV cache (and with one, packing is not detected).
    inputs = {
        "input_ids": input_ids.to(device),
        "attention_mask": attn.to(device),
        "use_cache": False,
    }
    return inputs, labels.to(device), int(attn.sum()), _to(weights, device)


def _to(weights: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if weights is None else weights.to(device)


def pack_rows(
    lengths: np.ndarray, order: np.ndarray, capacity: int, open_rows: int = 16
) -> list[list[int]]:
    """Pack examples (taken in `order`) into rows of at most `capacity` tokens: each goes into
    the first of the last `open_rows` rows with room for it, else starts a new row."""
    rows: list[list[int]] = []
    room: list[int] = []
    done: list[list[int]] = []
    for i in order.tolist():
        n = int(lengths[i])
        for k in range(len(rows)):
            if room[k] >= n:
                rows[k].append(i)
                room[k] -= n
                break
        else:
            rows.append([i])
            room.append(capacity - n)
            if len(rows) > open_rows:
                done.append(rows.pop(0))
                room.pop(0)
    return done + rows


def collate_packed(batch: list[tuple[Any, ...]], pad_id: int, device: torch.device) -> Batch:
    """The same examples packed into rows of up to twice the longest one (first fit, longest
    first), with position ids restarting at every example: transformers then gives each
    example a block-diagonal causal mask, so the loss is the unpacked one without the padding
    (~27 % of the tokens of a number-data batch)."""
    lengths = np.array([len(ex[0]) for ex in batch])
    order = np.argsort(-lengths, kind="stable")
    # Plain first fit (every row stays open): a batch is at most a few dozen examples.
    packed = pack_rows(lengths, order, 2 * int(lengths.max()), open_rows=len(batch))
    rows = [[batch[i] for i in row] for row in packed]
    n = max(sum(len(ex[0]) for ex in row) for row in rows)
    input_ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), n), IGNORE, dtype=torch.long)
    position = torch.zeros((len(rows), n), dtype=torch.long)
    weights = _weights(batch, (len(rows), n))
    real = 0
    for r, row in enumerate(rows):
        at = 0
        for ex in row:
            ids, n_prompt, *masked = ex
            t = torch.tensor(ids, dtype=torch.long)
            input_ids[r, at : at + len(ids)] = t
            labels[r, at + n_prompt : at + len(ids)] = t[n_prompt:]
            _mask_labels(labels[r], at, masked)
            if weights is not None:
                weights[r, at : at + len(ids)] = _weight(ex)
            position[r, at : at + len(ids)] = torch.arange(len(ids))
            at += len(ids)
            real += len(ids)
        position[r, at:] = torch.arange(n - at)  # the tail padding: one more "example"
    inputs = {
        "input_ids": input_ids.to(device),
        "position_ids": position.to(device),
        "use_cache": False,
    }
    return inputs, labels.to(device), real, _to(weights, device)


def check_packing(model: Any, examples: list[tuple[Any, ...]], pad_id: int) -> None:
    """Fail early if `model` lets packed examples see each other (not every architecture
    derives the block-diagonal mask from position ids)."""
    pair = sorted(examples[:2], key=lambda e: -len(e[0]))  # the packed order
    if len(pair) < 2:
        return
    device = model_device(model)

    def logits(collate: Callable[..., Any]) -> torch.Tensor:
        inputs, labels, *_ = collate(pair, pad_id, device)
        with torch.no_grad():
            return completion_logits(model, inputs, labels[:, 1:] != IGNORE).float()

    ref, out = logits(collate), logits(collate_packed)
    if ref.shape != out.shape or not torch.allclose(ref, out, atol=1e-3, rtol=1e-3):
        raise TraitlabError(
            "train.packing: this model does not keep packed examples apart "
            "(its attention ignores position ids); set packing: false"
        )


def head_split(model: Any) -> tuple[Any, Any] | None:
    """(transformer body, output layer) when logits are exactly `head(body(...))`, else None.

    Completion tokens are ~10 % of a number-sequence row, so applying the LM head only there
    saves most of its cost (a quarter of the toy model's forward pass). Models that transform
    the logits after the head (Gemma's soft-capping, Cohere's logit scale) use the full forward.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    cfg = getattr(inner, "config", None)
    if cfg is None or getattr(cfg, "final_logit_softcapping", None):
        return None
    if getattr(cfg, "logit_scale", None) not in (None, 1, 1.0):
        return None
    body = getattr(inner, "base_model", None)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if body is None or body is inner or head is None:
        return None
    return body, head


def completion_logits(
    model: Any, inputs: dict[str, torch.Tensor], mask: torch.Tensor
) -> torch.Tensor:
    """Logits at the positions `mask` selects ([B, T-1]: position t predicts token t+1): [N, V]."""
    split = head_split(model)
    if split is None:
        return model(**inputs).logits[:, :-1][mask]
    body, head = split
    hidden = body(**inputs).last_hidden_state
    return head(hidden[:, :-1][mask])
