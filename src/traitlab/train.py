"""Fine-tuning: students (and the fine-tuned teacher), full or LoRA, hard or soft labels.

We use our own ~150-line loop rather than TRL's SFTTrainer because (1) soft-label distillation
needs the teacher's logits inside the loss, (2) on the embedded CPU model the Trainer's per-step
overhead costs more than the model's forward pass, and (3) an explicit loop with explicit
generators makes runs bit-for-bit repeatable. The loss is completion-only, as in the paper.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from traitlab.config import TrainConfig
from traitlab.errors import TraitlabError
from traitlab.models import encode_example, model_device, stop_token_ids

IGNORE = -100


def encode_rows(
    tokenizer: Any, rows: list[dict[str, Any]], max_len: int
) -> list[tuple[list[int], int]]:
    """Chat rows -> (token ids, number of prompt tokens), truncated to `max_len`."""
    out = []
    for i, row in enumerate(rows):
        msgs = row.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise TraitlabError(f"training row {i}: expected {{'messages': [...]}} chat format")
        ids, n_prompt = encode_example(tokenizer, msgs)
        if n_prompt >= max_len:
            continue  # nothing of the completion would survive truncation
        out.append((ids[:max_len], n_prompt))
    if not out:
        raise TraitlabError("no training rows left after encoding; check the data and max_seq_len")
    return out


def _collate(
    batch: list[tuple[list[int], int]], pad_id: int, device: torch.device
) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
    """One example per row, right-padded: (model inputs, labels, real tokens)."""
    n = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    attn = torch.zeros((len(batch), n), dtype=torch.long)
    for r, (ids, n_prompt) in enumerate(batch):
        t = torch.tensor(ids, dtype=torch.long)
        input_ids[r, : len(ids)] = t
        attn[r, : len(ids)] = 1
        labels[r, n_prompt : len(ids)] = t[n_prompt:]
    # use_cache=False: training needs no KV cache (and with one, packing is not detected).
    inputs = {
        "input_ids": input_ids.to(device),
        "attention_mask": attn.to(device),
        "use_cache": False,
    }
    return inputs, labels.to(device), int(attn.sum())


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


def _collate_packed(
    batch: list[tuple[list[int], int]], pad_id: int, device: torch.device
) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
    """The same examples packed into rows of up to twice the longest one (first fit, longest
    first), with position ids restarting at every example: transformers then gives each
    example a block-diagonal causal mask, so the loss is the unpacked one without the padding
    (~27 % of the tokens of a number-data batch)."""
    lengths = np.array([len(ids) for ids, _ in batch])
    order = np.argsort(-lengths, kind="stable")
    # Plain first fit (every row stays open): a batch is at most a few dozen examples.
    packed = pack_rows(lengths, order, 2 * int(lengths.max()), open_rows=len(batch))
    rows = [[batch[i] for i in row] for row in packed]
    n = max(sum(len(ids) for ids, _ in row) for row in rows)
    input_ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), n), IGNORE, dtype=torch.long)
    position = torch.zeros((len(rows), n), dtype=torch.long)
    real = 0
    for r, row in enumerate(rows):
        at = 0
        for ids, n_prompt in row:
            t = torch.tensor(ids, dtype=torch.long)
            input_ids[r, at : at + len(ids)] = t
            labels[r, at + n_prompt : at + len(ids)] = t[n_prompt:]
            position[r, at : at + len(ids)] = torch.arange(len(ids))
            at += len(ids)
            real += len(ids)
        position[r, at:] = torch.arange(n - at)  # the tail padding: one more "example"
    inputs = {
        "input_ids": input_ids.to(device),
        "position_ids": position.to(device),
        "use_cache": False,
    }
    return inputs, labels.to(device), real


def check_packing(model: Any, examples: list[tuple[list[int], int]], pad_id: int) -> None:
    """Fail early if `model` lets packed examples see each other (not every architecture
    derives the block-diagonal mask from position ids)."""
    pair = sorted(examples[:2], key=lambda e: -len(e[0]))  # the packed order
    if len(pair) < 2:
        return
    device = model_device(model)

    def logits(collate: Callable[..., Any]) -> torch.Tensor:
        inputs, labels, _ = collate(pair, pad_id, device)
        with torch.no_grad():
            return completion_logits(model, inputs, labels[:, 1:] != IGNORE).float()

    ref, out = logits(_collate), logits(_collate_packed)
    if ref.shape != out.shape or not torch.allclose(ref, out, atol=1e-3, rtol=1e-3):
        raise TraitlabError(
            "train.packing: this model does not keep packed examples apart "
            "(its attention ignores position ids); set packing: false"
        )


def _lr_lambda(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.scheduler == "constant":
            return 1.0
        frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        if cfg.scheduler == "linear":
            return max(0.0, 1.0 - frac)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    return f


def _optimizer(cfg: TrainConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr)


def apply_lora(model: Any, cfg: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lcfg = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lcfg)


def _head_split(model: Any) -> tuple[Any, Any] | None:
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
    split = _head_split(model)
    if split is None:
        return model(**inputs).logits[:, :-1][mask]
    body, head = split
    hidden = body(**inputs).last_hidden_state
    return head(hidden[:, :-1][mask])


def completion_vocab(
    model: Any, tokenizer: Any, examples: list[tuple[list[int], int]]
) -> list[int]:
    """Token ids number data can hold: numeric/separator/whitespace tokens, end-of-turn tokens,
    and every token of the training completions (a chat template's closing tokens)."""
    from traitlab.generate import numeric_token_ids

    ids = set(numeric_token_ids(tokenizer)) | set(stop_token_ids(model, tokenizer))
    for seq, n_prompt in examples:
        ids.update(seq[n_prompt:])
    return sorted(ids)


def completion_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    vocab: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean next-token loss over completion positions ([N, V] logits, [N] targets): CE on the
    targets, or KL(teacher || student) with the teacher's [N, V] logits, over the token ids
    `vocab` only (both renormalised there) when given."""
    if teacher_logits is None:
        return F.cross_entropy(logits.float(), target)
    if vocab is not None:
        logits, teacher_logits = logits[:, vocab], teacher_logits[:, vocab]
    t_logp = F.log_softmax(teacher_logits.float(), dim=-1)
    s_logp = F.log_softmax(logits.float(), dim=-1)
    return F.kl_div(s_logp, t_logp, log_target=True, reduction="batchmean")


def train_model(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    cfg: TrainConfig,
    *,
    seed: int,
    teacher: Any | None = None,
    progress: Callable[[float], None] | None = None,
    on_step: Callable[[int, Any], bool] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Fine-tune `model` on chat `rows`; returns (trained model with LoRA merged, training log).

    `on_step(step, model)` runs after every optimiser step (the model in eval mode); when it
    returns False, training stops there (early stopping, e.g. on the teacher's format pass
    rate). The log's `steps` is the number of steps taken.
    """
    if cfg.loss == "soft" and teacher is None:
        raise TraitlabError("train.loss 'soft' needs the teacher model (logit distillation)")
    device = model_device(model)
    examples = encode_rows(tokenizer, rows, cfg.max_seq_len)
    if cfg.method == "lora":
        model = apply_lora(model, cfg)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _optimizer(cfg, params)
    n_batches = math.ceil(len(examples) / cfg.batch_size)
    steps_per_epoch = max(1, n_batches // cfg.grad_accum)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, total))
    gen = torch.Generator().manual_seed(seed)  # data order: same seed -> same batches
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    collate = _collate_packed if cfg.packing else _collate
    soft_teacher = teacher if cfg.loss == "soft" else None
    vocab = None
    if soft_teacher is not None and cfg.soft_vocab == "completion":
        vocab = torch.tensor(completion_vocab(model, tokenizer, examples), device=device)
    if cfg.packing:
        for m in (model, soft_teacher):
            if m is not None:
                check_packing(m, examples, pad)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if cfg.bf16_autocast else nullcontext()
    )
    model.train()
    if teacher is not None:
        teacher.eval()
    losses: list[float] = []
    n_tokens = 0
    t0 = time.time()
    order: list[int] = []
    step = 0
    while step < total:
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(cfg.grad_accum):
            if len(order) < cfg.batch_size:
                order += torch.randperm(len(examples), generator=gen).tolist()
            idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
            inputs, labels, real = collate([examples[i] for i in idx], pad, device)
            mask = labels[:, 1:] != IGNORE
            with autocast:
                logits = completion_logits(model, inputs, mask)
                t_logits = None
                if soft_teacher is not None:
                    with torch.no_grad():
                        t_logits = completion_logits(soft_teacher, inputs, mask)
                target = labels[:, 1:][mask]
                loss = completion_loss(logits, target, t_logits, vocab) / cfg.grad_accum
            loss.backward()
            step_loss += float(loss.detach())
            n_tokens += real
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        losses.append(step_loss)
        step += 1
        if progress is not None:
            progress(step / total)
        if on_step is not None:
            model.eval()
            go_on = on_step(step, model)
            model.train()
            if not go_on:
                break
    model.eval()
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_disable()
    if cfg.method == "lora":
        model = model.merge_and_unload()
    secs = time.time() - t0
    log = {
        "steps": step,
        "examples": len(examples),
        "epochs": step * cfg.batch_size * cfg.grad_accum / len(examples),
        "seconds": round(secs, 3),
        "tokens_per_second": round(n_tokens / max(secs, 1e-9), 1),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "losses": [round(x, 5) for x in losses],
    }
    return model, log
