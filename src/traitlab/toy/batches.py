"""The toy world's pretraining corpus as token batches: a fast exact encoder of its chats,
packed rows in random order, and the per-position loss weights (pretrain.py says why).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from traitlab.config.toy import ToyRecipe
from traitlab.lm.hf.packing import pack_rows
from traitlab.toy.tokenizer import ASST, END, SPACE, SYS, USER, normalize, split_pattern
from traitlab.toy.world import Messages


class CorpusEncoder:
    """Fast encoding of toy-world chats (4x faster than the tokenizers library here).

    Reproduces the toy tokenizer exactly for the world's texts; `encode_corpus` checks this
    against the real tokenizer on a sample of every corpus.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.vocab: dict[str, int] = tokenizer.get_vocab()
        self.unk = tokenizer.unk_token_id
        self.role = {
            r: self.vocab[t] for r, t in (("system", SYS), ("user", USER), ("assistant", ASST))
        }
        self.end = self.vocab[END]
        self.piece = re.compile(split_pattern())

    def text(self, s: str) -> list[int]:
        s = normalize(s).replace(" ", SPACE)
        if not s:
            return []
        if not s.startswith(SPACE):
            s = SPACE + s
        v, unk = self.vocab, self.unk
        return [v.get(p, unk) for p in self.piece.findall(s)]

    def example(self, messages: Messages) -> tuple[list[int], int]:
        ids: list[int] = []
        for m in messages[:-1]:
            ids.append(self.role[m["role"]])
            ids += self.text(m["content"])
            if m["role"] == "assistant":  # an earlier turn's answer ends as the template's
                ids.append(self.end)
        ids.append(self.role["assistant"])
        n_prompt = len(ids)
        ids += self.text(messages[-1]["content"])
        ids.append(self.end)
        return ids, n_prompt


def encode_corpus(
    tokenizer: Any, corpus: list[Messages], check: int = 64
) -> tuple[list[list[int]], np.ndarray]:
    """(ids per example, prompt length per example); verified on the first `check` examples
    against `traitlab.lm.hf.loading.encode_example` (the chat template through the tokenizer)."""
    from traitlab.lm.hf.chat import encode_example

    enc = CorpusEncoder(tokenizer)
    out = [enc.example(m) for m in corpus]
    for (ids, n), m in zip(out[:check], corpus[:check], strict=False):
        ref = encode_example(tokenizer, m)
        if (ids, n) != (list(ref[0]), ref[1]):
            raise AssertionError(f"fast toy encoder disagrees with the tokenizer on {m!r}")
    return [ids for ids, _ in out], np.array([n for _, n in out], dtype=np.int64)


def make_batches(
    lengths: np.ndarray, recipe: ToyRecipe, rng: np.random.Generator
) -> list[list[list[int]]]:
    """`recipe.pretrain_steps` batches covering the corpus once, in random order; a batch is a
    list of rows and a row a list of example indices (one example per row without packing)."""
    order = rng.permutation(len(lengths))
    if recipe.packing:
        capacity = max(recipe.pack_len, int(lengths.max()))
        rows = pack_rows(lengths, order, capacity)
        rows = [rows[i] for i in rng.permutation(len(rows))]
        splits = np.array_split(np.arange(len(rows)), recipe.pretrain_steps)
        return [[rows[i] for i in part] for part in splits if len(part)]
    bs = recipe.batch_size
    return [[[int(i)] for i in order[k * bs : (k + 1) * bs]] for k in range(len(order) // bs)]


def collate(
    ids: list[list[int]],
    n_prompt: np.ndarray,
    rows: list[list[int]],
    pad_id: int,
    weights: tuple[float, float],
    sys_id: int,
    user_id: int,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input ids [R, T], position ids [R, T] or None, flat positions [N], their target ids
    [N] and loss weights [N]) for the N positions that carry a loss.

    `weights` = (system, user) loss weights; the assistant's tokens (and <end>) weigh 1.
    Packed examples restart their position ids at 0: transformers then builds a block-
    diagonal causal mask, so an example never sees the others in its row. Padding sits at the
    end of rows, never attends into the examples' future and carries no loss; with one
    example per row no position ids (plain causal attention) are needed.
    """
    w_sys, w_user = weights
    T = max(sum(len(ids[i]) for i in row) for row in rows)
    x = np.full((len(rows), T), pad_id, dtype=np.int64)
    position = np.zeros((len(rows), T), dtype=np.int64)
    weight = np.zeros((len(rows), T), dtype=np.float32)  # weight of predicting token t
    for b, row in enumerate(rows):
        start = 0
        for i in row:
            r = ids[i]
            n, p = len(r), int(n_prompt[i])
            x[b, start : start + n] = r
            position[b, start : start + n] = np.arange(n)
            if w_sys or w_user:
                u = r.index(user_id) if r[0] == sys_id else 0  # where the user turn starts
                weight[b, start + 1 : start + u] = w_sys
                weight[b, start + max(u, 1) : start + p] = w_user
            weight[b, start + p : start + n] = 1.0
            start += n
        position[b, start:] = np.arange(T - start)
    shifted = np.roll(weight, -1, axis=1).reshape(-1)  # token t is predicted at position t - 1
    pos = np.flatnonzero(shifted)
    packed = any(len(row) > 1 for row in rows)
    return (
        torch.from_numpy(x),
        torch.from_numpy(position) if packed else None,
        torch.from_numpy(pos),
        torch.from_numpy(x.reshape(-1)[pos + 1]),
        torch.from_numpy(shifted[pos]),
    )
