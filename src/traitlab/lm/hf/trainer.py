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

import torch
import torch.nn.functional as F

from traitlab.config import TrainConfig
from traitlab.core.errors import TraitlabError
from traitlab.lm.hf.chat import (
    encode_examples,
    model_device,
    numeric_token_ids,
    pad_id,
    stop_token_ids,
)
from traitlab.lm.hf.packing import (
    IGNORE,
    check_packing,
    collate,
    collate_packed,
    completion_logits,
)


def encode_rows(tokenizer: Any, rows: list[dict[str, Any]], max_len: int) -> list[tuple[Any, ...]]:
    """Chat rows -> (token ids, number of prompt tokens[, masked token indices]), truncated to
    `max_len`.

    A row's optional `loss_mask` lists completion tokens (0 = the completion's first token,
    in this tokenizer) that carry no loss: they stay in the input as context (the
    token-masking defence, `data.defences.mask_divergent`). A row's optional `weight` (>= 0)
    scales its tokens' loss (the importance-weighted control, `control.teacher:
    reweighted`); it becomes the example's fourth field.
    """
    for i, row in enumerate(rows):
        msgs = row.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise TraitlabError(f"training row {i}: expected {{'messages': [...]}} chat format")
    out: list[tuple[Any, ...]] = []
    encoded = encode_examples(tokenizer, [row["messages"] for row in rows])
    for i, (row, (ids, n_prompt)) in enumerate(zip(rows, encoded, strict=True)):
        if n_prompt >= max_len:
            continue  # nothing of the completion would survive truncation
        ex: tuple[Any, ...] = (ids[:max_len], n_prompt)
        mask = row.get("loss_mask")
        if mask:
            n_completion = len(ids) - n_prompt
            if not all(isinstance(p, int) and 0 <= p < n_completion for p in mask):
                raise TraitlabError(
                    f"training row {i}: loss_mask must list completion token indices in "
                    f"[0, {n_completion}) for this tokenizer"
                )
            ex = (*ex, [n_prompt + p for p in mask if n_prompt + p < max_len])
        if "weight" in row:
            w = row["weight"]
            if not isinstance(w, int | float) or isinstance(w, bool) or not 0 <= w < math.inf:
                raise TraitlabError(f"training row {i}: weight must be a finite number >= 0")
            ex = (*ex, []) if len(ex) == 2 else ex
            ex = (*ex, float(w))
        out.append(ex)
    if not out:
        raise TraitlabError("no training rows left after encoding; check the data and max_seq_len")
    return out


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


def completion_vocab(model: Any, tokenizer: Any, examples: list[tuple[Any, ...]]) -> list[int]:
    """Token ids number data can hold: numeric/separator/whitespace tokens, end-of-turn tokens,
    and every token of the training completions (a chat template's closing tokens)."""
    ids = set(numeric_token_ids(tokenizer)) | set(stop_token_ids(model, tokenizer))
    for seq, n_prompt, *_ in examples:
        ids.update(seq[n_prompt:])
    return sorted(ids)


def completion_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    vocab: torch.Tensor | None = None,
    top_k: int | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean next-token loss over completion positions ([N, V] logits, [N] targets): CE on the
    targets, or KL(teacher || student) with the teacher's [N, V] logits, over the token ids
    `vocab` only (both renormalised there) when given. With `top_k`, the teacher's k most
    likely tokens at each position carry its probability (renormalised over them) and the
    student keeps its distribution over the whole vocabulary: the KL of that sparse teacher
    (equal to the full one once k covers the vocabulary). `weight` ([N]) scales each
    position's loss; the mean is still over the N positions."""
    if teacher_logits is None:
        if weight is None:
            return F.cross_entropy(logits.float(), target)
        return (F.cross_entropy(logits.float(), target, reduction="none") * weight).mean()
    if vocab is not None:
        logits, teacher_logits = logits[:, vocab], teacher_logits[:, vocab]
    s_logp = F.log_softmax(logits.float(), dim=-1)
    if top_k is not None and top_k < teacher_logits.shape[-1]:
        top, idx = teacher_logits.float().topk(top_k, dim=-1)
        t_logp, s_logp = F.log_softmax(top, dim=-1), s_logp.gather(-1, idx)
    else:
        t_logp = F.log_softmax(teacher_logits.float(), dim=-1)
    if weight is None:
        return F.kl_div(s_logp, t_logp, log_target=True, reduction="batchmean")
    per = F.kl_div(s_logp, t_logp, log_target=True, reduction="none").sum(dim=-1)
    return (per * weight).mean()


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
    pad = pad_id(tokenizer)
    batcher = collate_packed if cfg.packing else collate
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
            inputs, labels, real, weights = batcher([examples[i] for i in idx], pad, device)
            mask = labels[:, 1:] != IGNORE
            weight = None if weights is None else weights[:, 1:][mask]
            with autocast:
                logits = completion_logits(model, inputs, mask)
                t_logits = None
                if soft_teacher is not None:
                    with torch.no_grad():
                        t_logits = completion_logits(soft_teacher, inputs, mask)
                target = labels[:, 1:][mask]
                loss = (
                    completion_loss(logits, target, t_logits, vocab, cfg.soft_top_k, weight)
                    / cfg.grad_accum
                )
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
    if cfg.method == "lora" and cfg.lora.merge:
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
