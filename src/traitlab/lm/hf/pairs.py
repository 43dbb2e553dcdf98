"""Two completions of one prompt in one sequence: the prompt's tokens computed once.

The audit compares every data row with the base's completion of the same prompt. A number
prompt is ~55 tokens and its completion ~11, so scoring the two rows apart spends 5/6 of the
compute on the same prompt twice. Here a pair is laid out as `prompt | completion A |
completion B`: B's positions continue from the prompt (as if A were absent) and a 4-D
attention mask hides A from B, so every token sees exactly what it sees in its own row and
the losses (and their gradients) are the unpaired ones, at ~60 % of the tokens. `check_pairs`
compares one pair with its two rows and fails early on an architecture that ignores such a
mask (flash-attention 2, for one). The mask goes in additive (0 / -inf), which eager and
SDPA attention both read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from traitlab.core.errors import TraitlabError
from traitlab.lm.hf.chat import encode_examples, model_device, pad_id
from traitlab.lm.hf.packing import head_split
from traitlab.lm.hf.queries import only_queries, query_layer


@dataclass(frozen=True)
class Pair:
    """One prompt with its two completions: `ids` = shared | A's rest | B's rest."""

    ids: list[int]
    positions: list[int]
    a_end: int  # ids[shared:a_end] are A's own tokens, ids[a_end:] B's
    shared: int
    # (position in `ids` whose output predicts the target, target token) of each loss token
    a_loss: list[tuple[int, int]]
    b_loss: list[tuple[int, int]]


def _loss_tokens(ids: list[int], n_prompt: int, place: Any) -> list[tuple[int, int]]:
    return [(place(t - 1), ids[t]) for t in range(max(1, n_prompt), len(ids))]


def make_pair(a: tuple[list[int], int], b: tuple[list[int], int], max_len: int) -> Pair:
    """The pair of two encoded rows, (ids, n_prompt) each, truncated to `max_len` tokens.

    Only the prompt is shared (at most the shorter prompt and the rows' common prefix), so
    rows whose prompts tokenise differently still pair, sharing less."""
    ids_a, na = a[0][:max_len], a[1]
    ids_b, nb = b[0][:max_len], b[1]
    limit = min(na, nb, len(ids_a), len(ids_b))
    c = 0
    while c < limit and ids_a[c] == ids_b[c]:
        c += 1
    a_end = len(ids_a)
    ids = ids_a + ids_b[c:]
    positions = list(range(len(ids_a))) + list(range(c, len(ids_b)))
    a_loss = _loss_tokens(ids_a, na, lambda p: p)
    b_loss = _loss_tokens(ids_b, nb, lambda p: p if p < c else a_end + p - c)
    return Pair(ids, positions, a_end, c, a_loss, b_loss)


def encode_pairs(
    tokenizer: Any, rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]], max_len: int
) -> list[Pair]:
    """Chat rows paired index by index (row i of each completes the same prompt). Every
    completion token carries loss: a training row's `loss_mask` is not applied here."""
    if len(rows_a) != len(rows_b):
        raise ValueError("pairs need as many rows on both sides")
    chats_a = [r["messages"] for r in rows_a]
    chats_b = [r["messages"] for r in rows_b]
    enc_a = encode_examples(tokenizer, chats_a)
    # Paired rows share their prompt (almost always): tokenised once, a quarter of the work.
    same = all(a[:-1] == b[:-1] for a, b in zip(chats_a, chats_b, strict=True))
    enc_b = encode_examples(tokenizer, chats_b, [ids[:n] for ids, n in enc_a] if same else None)
    return [make_pair(a, b, max_len) for a, b in zip(enc_a, enc_b, strict=True)]


@dataclass
class PairBatch:
    inputs: dict[str, Any]
    a_src: torch.Tensor  # flat (row * length + position) of each A loss token's predictor
    a_tgt: torch.Tensor
    b_src: torch.Tensor
    b_tgt: torch.Tensor
    a_pair: np.ndarray  # the pair (index in the batch) of each A loss token
    b_pair: np.ndarray
    # The positions read (every loss token's predictor) per row, padded with the row's first,
    # and each A / B loss token's flat index into them (`lm.hf.queries`).
    q_pos: torch.Tensor
    a_q: torch.Tensor
    b_q: torch.Tensor


def collate_pairs(pairs: list[Pair], pad_id: int, device: torch.device) -> PairBatch:
    """One pair per row, right-padded, with the 4-D mask (callers batch pairs of similar
    length: packing several pairs per row saved no time, its attention spans are longer)."""
    n = max(len(p.ids) for p in pairs)
    ids = torch.full((len(pairs), n), pad_id, dtype=torch.long)
    pos = torch.zeros((len(pairs), n), dtype=torch.long)
    mask = torch.tril(torch.ones(n, n, dtype=torch.bool)).repeat(len(pairs), 1, 1)
    src: dict[str, list[int]] = {"a": [], "b": []}
    tgt: dict[str, list[int]] = {"a": [], "b": []}
    owner: dict[str, list[int]] = {"a": [], "b": []}
    reads = [sorted({s for s, _ in p.a_loss} | {s for s, _ in p.b_loss}) or [0] for p in pairs]
    q_n = max(len(r) for r in reads)
    q_pos = torch.tensor([r + [r[0]] * (q_n - len(r)) for r in reads], dtype=torch.long)
    q: dict[str, list[int]] = {"a": [], "b": []}
    for r, p in enumerate(pairs):
        m = len(p.ids)
        ids[r, :m] = torch.tensor(p.ids)
        pos[r, :m] = torch.tensor(p.positions)
        pos[r, m:] = torch.arange(m, n)
        mask[r, p.a_end : m, p.shared : p.a_end] = False  # B sees no A
        mask[r, m:, :m] = False  # the padding sees only itself
        slot = {s: r * q_n + j for j, s in enumerate(reads[r])}
        for side, loss in (("a", p.a_loss), ("b", p.b_loss)):
            src[side].extend(r * n + s for s, _ in loss)
            q[side].extend(slot[s] for s, _ in loss)
            tgt[side].extend(t for _, t in loss)
            owner[side].extend([r] * len(loss))

    def t(x: list[int]) -> torch.Tensor:
        return torch.tensor(x, dtype=torch.long, device=device)

    inputs = {
        "input_ids": ids.to(device),
        "position_ids": pos.to(device),
        "attention_mask": mask[:, None].to(device),
        "use_cache": False,
    }
    a_pair, b_pair = np.array(owner["a"], dtype=np.int64), np.array(owner["b"], dtype=np.int64)
    return PairBatch(
        inputs,
        t(src["a"]),
        t(tgt["a"]),
        t(src["b"]),
        t(tgt["b"]),
        a_pair,
        b_pair,
        q_pos.to(device),
        t(q["a"]),
        t(q["b"]),
    )


def _additive(mask: torch.Tensor, model: Any) -> torch.Tensor:
    """The boolean mask as 0 / the dtype's minimum, added to the attention scores: eager
    attention adds a 4-D mask as it comes (a boolean one would hide nothing), SDPA takes
    either, in the query's dtype."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill_(~mask, torch.finfo(dtype).min)


def pair_nll(model: Any, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per loss token NLL (float32) of the A and B completions of a batch."""
    split = head_split(model)
    inputs = {**batch.inputs, "attention_mask": _additive(batch.inputs["attention_mask"], model)}
    if split is None:
        logits = model(**inputs).logits
        flat = logits.reshape(-1, logits.shape[-1])
        la, lb = flat[batch.a_src], flat[batch.b_src]
    else:
        body, head = split
        last = query_layer(body)
        if last is None:
            hidden = body(**inputs).last_hidden_state
            a_at, b_at = batch.a_src, batch.b_src
        else:  # the last layer at the read positions only
            with only_queries(last, batch.q_pos):
                hidden = body(**inputs).last_hidden_state
            a_at, b_at = batch.a_q, batch.b_q
        flat = hidden.reshape(-1, hidden.shape[-1])
        la, lb = head(flat[a_at]), head(flat[b_at])
    ce = torch.nn.functional.cross_entropy
    return (
        ce(la.float(), batch.a_tgt, reduction="none"),
        ce(lb.float(), batch.b_tgt, reduction="none"),
    )


@torch.no_grad()
def pair_logliks(
    model: Any, tokenizer: Any, pairs: list[Pair], *, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's summed completion log-probabilities: (A's, B's), float64."""
    device = model_device(model)
    out_a, out_b = np.zeros(len(pairs)), np.zeros(len(pairs))
    # Batches of similar length waste little on padding.
    order = sorted(range(len(pairs)), key=lambda k: len(pairs[k].ids))
    for i in range(0, len(order), batch_size):
        idx = np.array(order[i : i + batch_size])
        batch = collate_pairs([pairs[k] for k in idx], pad_id(tokenizer), device)
        nll_a, nll_b = pair_nll(model, batch)
        for out, nll, owner in ((out_a, nll_a, batch.a_pair), (out_b, nll_b, batch.b_pair)):
            lp = -nll.double().cpu().numpy()
            out[idx] = np.bincount(owner, weights=lp, minlength=len(idx))
    # Two equal rows have equal scores (computed, they differ by rounding).
    same = [p.ids[p.shared : p.a_end] == p.ids[p.a_end :] for p in pairs]
    out_b[same] = out_a[same]
    return out_a, out_b


@torch.no_grad()
def check_pairs(model: Any, tokenizer: Any, pair: Pair) -> None:
    """Fail early if `model` lets B see A in a pair (it ignores the 4-D mask or the
    position ids): the pair's NLLs must equal those of its two rows scored apart."""
    device = model_device(model)
    got_a, got_b = pair_nll(model, collate_pairs([pair], pad_id(tokenizer), device))
    a_ids = pair.ids[: pair.a_end]
    b_ids = pair.ids[: pair.shared] + pair.ids[pair.a_end :]
    want = []
    for seq, loss in ((a_ids, pair.a_loss), (b_ids, pair.b_loss)):
        if not loss:
            want.append(torch.zeros(0))
            continue
        logits = model(input_ids=torch.tensor([seq], device=device), use_cache=False).logits[0]
        first = len(seq) - len(loss) - 1  # the first loss token's predictor, in its own row
        pred = logits[first : len(seq) - 1].float()
        target = torch.tensor(seq[first + 1 :], device=device)
        want.append(torch.nn.functional.cross_entropy(pred, target, reduction="none").cpu())
    # Half precision rounds the two layouts apart by up to a few hundredths of a nat; a model
    # that lets B see A moves B's tokens by more.
    half = next(model.parameters()).dtype in (torch.bfloat16, torch.float16)
    tol = 5e-2 if half else 1e-3
    for got, exp in ((got_a, want[0]), (got_b, want[1])):
        if got.shape != exp.shape or not torch.allclose(got.cpu(), exp, atol=tol, rtol=tol):
            raise TraitlabError(
                f"{type(model).__name__}: scoring two completions of one prompt together "
                "differs from scoring them apart (its attention ignores a 4-D mask); "
                "this model cannot use shared-prompt pairs"
            )
