"""The first-order screen: Theorem 1 turned into an audit that trains nothing.

A student's first SGD step on the data moves the base by -lr * grad L_data; on the reference
(the base's own completions of the same prompts) by -lr * grad L_ref. Their difference,
Delta = grad L_ref - grad L_data, is what the data teaches beyond what any of the base's own
outputs would. The predicted change of each probe option's probability is the directional
derivative d/dlr mean_q P(option | q) along Delta, taken by a central difference (two scoring
passes per direction, whatever the number of options: cheaper and simpler than one
gradient per option).

The rows are split into K chunks of paired rows (a data row and the reference row of the same
prompt go to the same chunk), and each chunk gives its own derivative. Under the null (the data
is the base's own output) every chunk's derivative has mean zero, so the mean over chunks with
its standard error gives a t statistic per option that needs no calibration set.

A data row and its reference row complete the same prompt, so each chunk's Delta comes from
one backward pass over shared-prompt pairs (`lm.hf.pairs`: the prompt, ~5/6 of a number
row's tokens, computed once); a model whose attention cannot take the pairs' mask gets the
two gradients apart (`chunk_gradient`), with the same result. The Adam scale's own rows (the
first 1,024 of the random order, in student batches) are the first chunks' rows: their two
per-batch gradients give the scale and those chunks' Delta at once, so the scale costs no
pass of its own (chunks are cut there between student batches; where they cannot be, the
scale takes its own pass, with the same result).

On a CPU the gradients go in batches of 32 pairs, whose activations stay in cache, and a
Llama's last layer runs only where the loss reads it (`lm.hf.queries`); on a 2-core EPYC the
two took the toy Llama's 8,000-pair screen under 30 s (benchmarks/results/screen-speed.md).
The sums are the same, added in another order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from traitlab.audit.gradients import (
    adam_scale,
    adam_scale_rows,
    chunk_gradient,
    inverse_rms,
    pair_delta,
    trainable_params,
)
from traitlab.audit.probes import Probe, score_probe
from traitlab.audit.verdict import t_stat
from traitlab.core.errors import TraitlabError
from traitlab.lm.hf.chat import model_device
from traitlab.lm.hf.pairs import check_pairs, encode_pairs
from traitlab.lm.hf.scoring import exact_preference

Fraction = Callable[[float], None]

PAIR_BATCH = 256  # pairs per gradient batch on an accelerator (and on CPUs before 2026-12-07)
CPU_PAIR_BATCH = 32  # pairs per gradient batch on a CPU: faster there (screen-speed.md)


@dataclass
class ScreenResult:
    """Per probe: the options' base probabilities and the per-chunk predicted derivatives."""

    probe: str
    options: list[str]
    base: np.ndarray  # [n_options] mean P over questions at the base
    chunks: np.ndarray  # [K, n_options] d mean P / d lr along each chunk's Delta

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.chunks.mean(axis=0))

    @property
    def t(self) -> np.ndarray:
        return t_stat(self.chunks, axis=0)


@torch.no_grad()
def _tables(model: Any, tokenizer: Any, probes: Sequence[Probe], batch_size: int) -> np.ndarray:
    """Mean P over questions of every option of every probe, concatenated."""
    out = []
    for p in probes:
        t = score_probe(
            p,
            lambda qs, opts: exact_preference(
                model, tokenizer, qs, list(opts), batch_size=batch_size, spellings=opts
            ),
        )
        out.append(t.mean(axis=0))
    return np.concatenate(out)


@torch.no_grad()
def directional_derivative(
    model: Any,
    tokenizer: Any,
    direction: list[torch.Tensor],
    probes: Sequence[Probe],
    *,
    rel_step: float = 1e-3,
    batch_size: int = 1000,
) -> np.ndarray:
    """d/dh of every option's mean probability at theta + h * direction, h = 0, by a
    central difference whose step moves the weights by `rel_step` of their norm."""
    params = [p for _, p in trainable_params(model)]
    theta = math.sqrt(sum(float((p.float() ** 2).sum()) for p in params))
    dnorm = math.sqrt(sum(float((d.float() ** 2).sum()) for d in direction))
    if dnorm == 0.0:
        return np.zeros(sum(len(p.options) for p in probes))
    h = rel_step * theta / dnorm
    saved = [p.detach().clone() for p in params]
    try:
        for p, d in zip(params, direction, strict=True):
            p.add_(d, alpha=h)
        up = _tables(model, tokenizer, probes, batch_size)
        for p, s, d in zip(params, saved, direction, strict=True):
            p.copy_(s).add_(d, alpha=-h)
        down = _tables(model, tokenizer, probes, batch_size)
    finally:
        for p, s in zip(params, saved, strict=True):
            p.copy_(s)
    return np.asarray((up - down) / (2 * h))


def _parts(order: np.ndarray, k: int, head: int, batch: int) -> list[np.ndarray]:
    """`order` in k near-equal chunks, whose cuts within the first `head` rows move to the
    nearest multiple of `batch` where that keeps every chunk non-empty (`first_order_screen`
    then takes Adam's v from those rows' passes)."""
    cuts = [int(c) for c in np.cumsum([len(p) for p in np.array_split(order, k)])[:-1]]
    moved = [round(c / batch) * batch if c < head else c for c in cuts]
    edges = [0, *moved, len(order)]
    if all(a < b for a, b in zip(edges, edges[1:], strict=False)):
        cuts = moved
    return np.split(order, cuts)


def first_order_screen(
    model: Any,
    tokenizer: Any,
    data: list[dict[str, Any]],
    reference: list[dict[str, Any]],
    probes: Sequence[Probe],
    *,
    chunks: int = 16,
    seed: int = 0,
    batch_size: int | None = None,
    precondition: str = "adam",
    student_batch: int = 64,
    scale_rows: int = 1024,
    max_len: int = 1024,
    progress: Fraction | None = None,
) -> tuple[list[ScreenResult], dict[str, float]]:
    """The screen's per-chunk predicted option changes, and its cost in seconds.

    `data` and `reference` are paired chat rows (row i of each answers the same prompt).
    `batch_size`: pairs per gradient batch, by default `CPU_PAIR_BATCH` on a CPU, else `PAIR_BATCH`.
    """
    if len(data) != len(reference):
        raise ValueError("data and reference must be paired row for row")
    batch_size = batch_size or (CPU_PAIR_BATCH if model_device(model).type == "cpu" else PAIR_BATCH)
    t0 = time.perf_counter()
    k = max(2, min(chunks, len(data)))
    order = np.random.default_rng(seed).permutation(len(data))
    adam = precondition == "adam"
    head_rows = min(scale_rows, len(data)) if adam else 0
    parts = _parts(order, k, head_rows, student_batch)
    # Chunk j holds order[starts[j]:ends[j]]; the scale's rows are order[:head_rows].
    ends = np.cumsum([len(p) for p in parts])
    starts = np.concatenate([[0], ends[:-1]])
    was_training = model.training
    model.eval()  # no dropout: the gradient is the base's
    base = _tables(model, tokenizer, probes, 1000)
    pairs = encode_pairs(tokenizer, data, reference, max_len)
    try:
        check_pairs(model, tokenizer, pairs[0])
        shared = True
    except TraitlabError:  # e.g. flash-attention 2, which ignores 4-D masks: rows apart
        shared = False
    # With pairs, Adam's v comes from the head rows' own passes (the first chunks, as the
    # order is random) when the chunks cut the head only between student batches (so the
    # batches are the ones `adam_scale` takes): their deltas wait for it, unscaled.
    fold = adam and shared and all(c % student_batch == 0 for c in starts if c < head_rows)
    v = [torch.zeros_like(p) for _, p in trainable_params(model)] if fold else None
    scale = None
    if adam and not fold:
        first = order[:scale_rows]
        if shared:
            scale = adam_scale(
                model, tokenizer, [pairs[i] for i in first], batch_size=student_batch
            )
        else:
            scale = adam_scale_rows(
                model,
                tokenizer,
                [data[i] for i in first],
                [reference[i] for i in first],
                batch_size=student_batch,
                max_len=max_len,
            )
        head_rows = 0
    n_v = 0
    pending: list[list[torch.Tensor]] = []
    rows = []
    t_grad = t_score = 0.0
    try:
        for j, idx in enumerate(parts):
            ta = time.perf_counter()
            if shared:
                chunk = [pairs[i] for i in idx]
                totals = (sum(len(p.a_loss) for p in chunk), sum(len(p.b_loss) for p in chunk))
                n_head = int(np.clip(head_rows - starts[j], 0, len(chunk)))
                delta, _ = pair_delta(
                    model,
                    tokenizer,
                    chunk[n_head:],
                    batch_size=batch_size,
                    totals=totals,
                )
                if v is not None and n_head:
                    d_head, n = pair_delta(
                        model,
                        tokenizer,
                        chunk[:n_head],
                        batch_size=student_batch,
                        totals=totals,
                        second_moment=v,
                    )
                    delta = [a + b for a, b in zip(delta, d_head, strict=True)]
                    n_v += n
            else:
                g_data = chunk_gradient(
                    model, tokenizer, [data[i] for i in idx], batch_size=batch_size, max_len=max_len
                )
                g_ref = chunk_gradient(
                    model,
                    tokenizer,
                    [reference[i] for i in idx],
                    batch_size=batch_size,
                    max_len=max_len,
                )
                delta = [r - d for r, d in zip(g_ref, g_data, strict=True)]
            pending.append(delta)
            if v is not None and ends[j] >= head_rows and scale is None:
                scale = inverse_rms(v, n_v, 1e-8)
            tb = time.perf_counter()
            if v is None or scale is not None:
                for delta in pending:
                    if scale is not None:
                        delta = [d * s for d, s in zip(delta, scale, strict=True)]
                    rows.append(directional_derivative(model, tokenizer, delta, probes))
                pending = []
            t_grad += tb - ta
            t_score += time.perf_counter() - tb
            if progress is not None:
                progress((j + 1) / k)
    finally:
        model.train(was_training)
    table = np.stack(rows)
    out, at = [], 0
    for p in probes:
        n = len(p.options)
        out.append(ScreenResult(p.name, p.option_names, base[at : at + n], table[:, at : at + n]))
        at += n
    cost = {
        "seconds": time.perf_counter() - t0,
        "gradient_seconds": t_grad,
        "scoring_seconds": t_score,
        "shared_prompts": float(shared),
        "batch_size": float(batch_size),
    }
    return out, cost
