"""Direct preference optimisation (Rafailov et al. 2023), a short loop of ours: the cheap
stand-in for RLHF in the falsifier.

Each pair is a prompt with a chosen and a rejected completion. The loss is
-log sigmoid(beta * ((log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected))))
with sequence log-probabilities summed over the completion's tokens; the reference is the
model as it was before the loop (its log-probabilities are taken once, up front).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from traitlab.config import TrainConfig
from traitlab.core.errors import TraitlabError
from traitlab.lm.hf.chat import model_device, pad_id
from traitlab.lm.hf.packing import IGNORE, collate, completion_logits
from traitlab.lm.hf.trainer import _lr_lambda, _optimizer, encode_rows

Pair = dict[str, Any]  # {"prompt": str, "chosen": str, "rejected": str}


def _rows(pairs: list[Pair], which: str) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": p["prompt"]},
                {"role": "assistant", "content": p[which]},
            ]
        }
        for p in pairs
    ]


def _seq_logps(model: Any, batch: list[tuple[list[int], int]], pad: int) -> torch.Tensor:
    device = model_device(model)
    inputs, labels, *_ = collate(batch, pad, device)
    mask = labels[:, 1:] != IGNORE
    logits = completion_logits(model, inputs, mask).float()
    target = labels[:, 1:][mask]
    lp = torch.log_softmax(logits, dim=-1).gather(1, target[:, None])[:, 0]
    row = torch.repeat_interleave(torch.arange(len(batch), device=device), mask.sum(dim=1))
    return torch.zeros(len(batch), device=device).index_add(0, row, lp)


def dpo_train(
    model: Any,
    tokenizer: Any,
    pairs: list[Pair],
    cfg: TrainConfig,
    *,
    beta: float,
    seed: int,
    progress: Callable[[float], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train `model` in place for cfg.max_steps steps of cfg.batch_size pairs; returns
    (model, log). Full fine-tuning only (the reference is the starting weights)."""
    if not pairs:
        raise TraitlabError("DPO needs at least one preference pair")
    if cfg.method != "full" or not cfg.max_steps:
        raise TraitlabError("DPO here needs train.method 'full' and train.max_steps")
    chosen = encode_rows(tokenizer, _rows(pairs, "chosen"), cfg.max_seq_len)
    rejected = encode_rows(tokenizer, _rows(pairs, "rejected"), cfg.max_seq_len)
    pad = pad_id(tokenizer)
    model.eval()
    with torch.no_grad():
        ref_c = torch.cat(
            [_seq_logps(model, chosen[i : i + 256], pad) for i in range(0, len(pairs), 256)]
        )
        ref_r = torch.cat(
            [_seq_logps(model, rejected[i : i + 256], pad) for i in range(0, len(pairs), 256)]
        )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _optimizer(cfg, params)
    total = cfg.max_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, total))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    losses: list[float] = []
    margins: list[float] = []
    order: list[int] = []
    t0 = time.time()
    for step in range(total):
        if len(order) < cfg.batch_size:
            order += torch.randperm(len(pairs), generator=gen).tolist()
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        c = _seq_logps(model, [chosen[i] for i in idx], pad)
        r = _seq_logps(model, [rejected[i] for i in idx], pad)
        margin = beta * ((c - ref_c[idx]) - (r - ref_r[idx]))
        loss = -F.logsigmoid(margin).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        margins.append(float(margin.detach().mean()))
        if progress is not None:
            progress((step + 1) / total)
    model.eval()
    return model, {
        "steps": total,
        "pairs": len(pairs),
        "beta": beta,
        "seconds": round(time.time() - t0, 3),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "margin_last": margins[-1],
    }
