"""The data's loss gradients the first-order screen is built from (`audit.screen`): the
student's mean completion-token loss over rows, its data-minus-reference difference over
shared-prompt pairs, and the Adam scale a student would apply to it."""

from __future__ import annotations

from typing import Any

import torch

from traitlab.lm.hf.chat import model_device, pad_id
from traitlab.lm.hf.packing import IGNORE, collate_packed
from traitlab.lm.hf.pairs import Pair, collate_pairs, pair_nll
from traitlab.lm.hf.trainer import completion_logits, encode_rows


def trainable_params(model: Any) -> list[tuple[str, torch.nn.Parameter]]:
    # named_parameters() yields a tied embedding once: it is one parameter.
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def chunk_gradient(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    *,
    batch_size: int,
    max_len: int,
    second_moment: list[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Gradient of the mean completion-token NLL over `rows` (the student's loss).

    With `second_moment`, each batch's own mean-loss gradient squared is added to it (what
    Adam's second moment averages during a student's training at this batch size)."""
    params = [p for _, p in trainable_params(model)]
    device = model_device(model)
    examples = encode_rows(tokenizer, rows, max_len)
    pad = pad_id(tokenizer)
    total = [torch.zeros_like(p) for p in params]
    n_tokens = 0
    for i in range(0, len(examples), batch_size):
        inputs, labels, *_ = collate_packed(examples[i : i + batch_size], pad, device)
        mask = labels[:, 1:] != IGNORE
        logits = completion_logits(model, inputs, mask)
        target = labels[:, 1:][mask]
        loss = torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum")
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        n = int(target.numel())
        for k, (acc, g) in enumerate(zip(total, grads, strict=True)):
            if g is not None:
                acc.add_(g)
                if second_moment is not None:
                    second_moment[k].add_((g / max(1, n)) ** 2)
        n_tokens += n
    return [g / max(1, n_tokens) for g in total]


def _same(p: Pair) -> bool:
    return p.ids[p.shared : p.a_end] == p.ids[p.a_end :]


def pair_delta(
    model: Any,
    tokenizer: Any,
    pairs: list[Pair],
    *,
    batch_size: int,
    totals: tuple[int, int] | None = None,
    second_moment: list[torch.Tensor] | None = None,
) -> tuple[list[torch.Tensor], int]:
    """grad L_ref - grad L_data over `pairs` (A = data, B = reference; mean completion-token
    NLL each, as `chunk_gradient` takes them), and the number of student batches seen.

    `totals`: the token counts (A, B) that the means divide by, where `pairs` are part of a
    larger chunk (default: their own). Without `second_moment`, one backward pass per batch
    of length-sorted pairs. With it, `pairs` are taken in their order in batches of the
    student's size, each side's mean gradient squared is added to `second_moment` (what
    Adam averages, as `adam_scale`), and the difference is built from the same two
    gradients: the scale costs no pass of its own."""
    params = [p for _, p in trainable_params(model)]
    device = model_device(model)
    n_a, n_b = totals or (
        sum(len(p.a_loss) for p in pairs),
        sum(len(p.b_loss) for p in pairs),
    )
    n_a, n_b = max(1, n_a), max(1, n_b)
    total = [torch.zeros_like(p) for p in params]
    if second_moment is None:
        # A pair whose two completions are the same adds its gradient times 1/n_b - 1/n_a
        # (exactly zero, and skipped, when the two sides have as many tokens). The sum's
        # order is free; batches of similar length pad little.
        pairs = sorted((p for p in pairs if n_a != n_b or not _same(p)), key=lambda p: len(p.ids))
    n_batches = 0
    for i in range(0, len(pairs), batch_size):
        part = pairs[i : i + batch_size]
        batch = collate_pairs(part, pad_id(tokenizer), device)
        nll_a, nll_b = pair_nll(model, batch)
        # For a pair with equal completions, its A tokens stand in for its B tokens (the
        # same values): its two sides then cancel exactly where they should.
        same = torch.tensor([_same(p) for p in part], device=device)
        on_b = ~same[torch.as_tensor(batch.b_pair, device=device)]
        on_a = same[torch.as_tensor(batch.a_pair, device=device)]
        b_sum = (nll_b * on_b).sum() + (nll_a * on_a).sum()
        if second_moment is None:
            outs = [(b_sum / n_b - nll_a.sum() / n_a, 1.0)]
        else:  # each side's mean (a student batch's loss), then weighted into the difference
            len_a, len_b = nll_a.numel(), nll_b.numel()
            outs = [
                (loss / n, w)
                for loss, n, w in ((nll_a.sum(), len_a, -len_a / n_a), (b_sum, len_b, len_b / n_b))
                if n > 0
            ]
            n_batches += len(outs)
        for k, (out, w) in enumerate(outs):
            grads = torch.autograd.grad(
                out, params, allow_unused=True, retain_graph=k < len(outs) - 1
            )
            for j, g in enumerate(grads):
                if g is None:
                    continue
                total[j].add_(g, alpha=w)
                if second_moment is not None:
                    second_moment[j].add_(g**2)
    return total, n_batches


def inverse_rms(v: list[torch.Tensor], n: int, eps: float) -> list[torch.Tensor]:
    """1 / (sqrt(mean squared gradient) + eps), from the sum `v` over `n` batches."""
    return [1.0 / ((x / max(1, n)).sqrt() + eps) for x in v]


def adam_scale(
    model: Any, tokenizer: Any, pairs: list[Pair], *, batch_size: int, eps: float = 1e-8
) -> list[torch.Tensor]:
    """1 / (sqrt(v) + eps) with v the mean squared per-batch gradient of the pairs' data
    batches and reference batches: the per-parameter scale an Adam student applies to its
    steps (its first steps are nearly sign(g); later ones g / sqrt(v)). The screen's direction
    is preconditioned with it, since the students whose transfer it predicts train with Adam,
    not SGD. (The screen itself takes v from its first chunks' passes: `pair_delta`.)"""
    v = [torch.zeros_like(p) for _, p in trainable_params(model)]
    _, n = pair_delta(model, tokenizer, pairs, batch_size=batch_size, second_moment=v)
    return inverse_rms(v, n, eps)


def adam_scale_rows(
    model: Any,
    tokenizer: Any,
    data: list[dict[str, Any]],
    reference: list[dict[str, Any]],
    *,
    batch_size: int,
    max_len: int,
) -> list[torch.Tensor]:
    """`adam_scale` for a model that cannot score pairs: the same batches, rows apart."""
    v = [torch.zeros_like(p) for _, p in trainable_params(model)]
    n_batches = 0
    for i in range(0, len(data), batch_size):
        for rows in (data[i : i + batch_size], reference[i : i + batch_size]):
            chunk_gradient(
                model, tokenizer, rows, batch_size=batch_size, max_len=max_len, second_moment=v
            )
            n_batches += 1
    return inverse_rms(v, n_batches, 1e-8)
