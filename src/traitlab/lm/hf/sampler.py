"""A fast batched sampler for any Hugging Face causal LM.

`sample_completions` is the one decoding loop of the project (teacher number data, control
data, sampled trait evaluation). It works with every model whose forward takes
`input_ids`, `attention_mask`, `position_ids` and a KV cache, on CPU or CUDA:

* prompts are sorted by length (longest first) and cut into batches, so little padding is
  computed; results come back in the caller's order;
* left padding with an explicit attention mask and explicit `position_ids` (each row's real
  tokens are numbered from 0), so a prompt's completion does not depend on its batch-mates
  (greedy decoding reproduces `model.generate(do_sample=False)` token for token);
* one prefill pass, then one single-token pass per step on a KV cache: Llama-family models
  and GPT-2 run through `fastdecode` (a preallocated cache written in place: several
  times faster on small models, where transformers' per-step cache copies and mask building
  dominate), every other model through its own forward and `DynamicCache` (the
  transformers 5 `cache=` keyword, or `past_key_values=` on older versions and remote-code
  models); rows that hit a stop token are finished, and once a quarter of the rows are
  finished they are dropped from the cache, so long tails of a few unfinished rows cost
  little; the batch ends when every row has stopped;
* temperature 0 is greedy; top-p (nucleus) filtering; an optional allowed-token mask
  (constrained decoding; stop tokens are always allowed so a row can end);
* sampling draws only from the caller's `torch.Generator` (one uniform per row and step,
  inverted through the CDF: the law of `torch.multinomial`, 10-30x cheaper on CPU), so the
  same inputs, seed and batch size give the same completions. The generator may live on the
  CPU while the model runs on CUDA (only B floats cross the bus per step).

Everything per step is a tensor operation over the batch; Python only loops over steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from traitlab.lm.hf.chat import model_device
from traitlab.lm.hf.fastdecode import decoder_for
from traitlab.lm.hf.forward import ForwardAdapter, can_select, prefill_unique

# Drop finished rows from the KV cache once at most this share of the batch is still running.
_PRUNE_FRACTION = 0.75


# ---------------------------------------------------------------------------- token choice


def select_next(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_p: float,
    generator: torch.Generator,
    noise: torch.Tensor | None = None,
    min_p: float = 0.0,
    top_k: int = 0,
) -> torch.Tensor:
    """Next token per row of `logits` [B, V] (float32, masked entries -inf).

    `noise` [B, V] (standard Gumbel, on logits' device) selects Gumbel-max sampling with
    that noise instead of drawing from `generator`: see `sample_completions(coupled=...)`.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    truncate = min_p > 0 or top_k > 0
    if noise is not None and top_p >= 1.0 and not truncate:
        # Gumbel-max on the logits: log softmax differs from logits / T by a constant per
        # row, so the softmax and its log can be skipped (same choice, same law).
        return (logits / temperature + noise).argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_k > 0 and top_k < probs.shape[-1]:
        kth = probs.topk(top_k, dim=-1).values[:, -1:]
        probs = probs.masked_fill(probs < kth, 0.0)
    if min_p > 0:
        # Threshold sampling: drop tokens below min_p times the row's top probability.
        probs = probs.masked_fill(probs < min_p * probs.amax(dim=-1, keepdim=True), 0.0)
    index = None
    if top_p < 1.0:
        probs, index = probs.sort(dim=-1, descending=True)
        before = probs.cumsum(dim=-1) - probs  # mass strictly before each token
        probs = probs.masked_fill(before >= top_p, 0.0)  # the top token always stays
    if noise is not None:
        # Gumbel-max: argmax(log p + G) is distributed as p (zero-probability tokens: -inf).
        if index is not None:
            noise = noise.gather(1, index)
        choice = (probs.log() + noise).argmax(dim=-1)
    else:
        # Inverse-CDF sampling: one uniform per row from the caller's generator. Same law as
        # torch.multinomial(probs, 1, generator=...), but CPU multinomial draws an exponential
        # per vocabulary entry (10-30x slower at B=64-256, V=3k-49k), and this also works with
        # a CPU generator for a CUDA model (only B floats cross the bus).
        u = torch.rand(probs.shape[0], generator=generator, device=generator.device)
        cum = probs.cumsum(dim=-1)
        total = cum[:, -1:]
        # Strictly below the total, so trailing zero-probability tokens can never be chosen.
        target = torch.minimum(
            u.to(probs.device).unsqueeze(1) * total, torch.nextafter(total, total.new_zeros(()))
        )
        choice = torch.searchsorted(cum, target, right=True).squeeze(1)
    if index is not None:
        choice = index.gather(1, choice.unsqueeze(1)).squeeze(1)
    return choice


# ---------------------------------------------------------------------------- the sampler


class _HFStepper:
    """Decoding steps through the model's own forward and its `DynamicCache`."""

    def __init__(self, model: Any) -> None:
        self.caller = ForwardAdapter(model)
        self.cache: Any = None
        self.can_select = False

    def prefill(
        self, batch: list[list[int]], pad_id: int, device: torch.device, max_new: int
    ) -> torch.Tensor:
        # Left padding: every row's last prompt token sits in the last column.
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, p in enumerate(batch):
            ids[r, width - len(p) :] = torch.as_tensor(p, dtype=torch.long)
            mask[r, width - len(p) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        self.mask = torch.cat([mask, mask.new_ones((mask.shape[0], max_new))], dim=1)
        self.width = mask.shape[1]
        self.steps = 0
        pos = (mask.cumsum(dim=1) - 1).clamp_(min=0)
        self.next_pos = pos[:, -1] + 1
        logits, self.cache = prefill_unique(self.caller, batch, ids, mask, pos)
        self.can_select = can_select(self.cache)
        return logits

    def step(self, tok: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        logits, self.cache = self.caller(
            tok.unsqueeze(1),
            self.mask[:, : self.width + self.steps],
            self.next_pos.unsqueeze(1),
            self.cache,
            last_only=True,
        )
        self.next_pos = self.next_pos + 1
        return logits

    def select(self, keep: torch.Tensor) -> None:
        self.cache.batch_select_indices(keep)
        self.mask, self.next_pos = self.mask[keep], self.next_pos[keep]

    def close(self) -> None:
        self.cache = None


class _FastStepper:
    """Decoding steps through a lean decoder (`fastdecode`: a static cache written in
    place)."""

    can_select = True

    def __init__(self, model: Any, cls: Any, batch_size: int, max_len: int) -> None:
        self.decoder = cls(model, batch_size, max_len)

    def prefill(
        self, batch: list[list[int]], pad_id: int, device: torch.device, max_new: int
    ) -> torch.Tensor:
        # Right padding: see fastdecode.
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        for r, p in enumerate(batch):
            ids[r, : len(p)] = torch.as_tensor(p, dtype=torch.long)
        lengths = torch.tensor([len(p) for p in batch], dtype=torch.long)
        return self.decoder.prefill(ids.to(device), lengths.to(device))

    def step(self, tok: torch.Tensor) -> torch.Tensor:
        return self.decoder.step(tok)

    def select(self, keep: torch.Tensor) -> None:
        self.decoder.select(keep)

    def close(self) -> None:
        pass


def _stepper(
    model: Any, prompts: list[list[int]], batch_size: int, max_new_tokens: int, fast: bool
) -> _HFStepper | _FastStepper:
    cls = decoder_for(model) if fast else None
    if cls is not None:
        longest = max(len(p) for p in prompts)
        limit = getattr(model.config, "max_position_embeddings", None) or 1 << 30
        if longest + max_new_tokens <= limit:
            n = min(batch_size, len(prompts))
            return _FastStepper(model, cls, n, longest + max_new_tokens)
    return _HFStepper(model)


@torch.inference_mode()
def sample_completions(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    generator: torch.Generator,
    batch_size: int,
    min_p: float = 0.0,
    top_k: int = 0,
    stop_ids: list[int],
    allowed_ids: list[int] | None = None,
    on_batch: Callable[[int], None] | None = None,
    coupled: bool = False,
    fast: bool = True,
) -> list[list[int]]:
    """Completion token ids for each prompt (token-id list), in the order given.

    A completion ends at the first of `stop_ids` (not included) or after `max_new_tokens`.
    `temperature` 0 decodes greedily. `allowed_ids` restricts every step to those tokens
    (plus `stop_ids`). `on_batch(n)` is called after each batch with the number of prompts
    it finished. Results are deterministic for the same inputs, generator state and
    `batch_size` (the batch composition changes the random draws, not the distribution).

    `coupled` draws one Gumbel noise vector per batch row and step (Gumbel-max sampling,
    V draws per row and step instead of one) and keeps it tied to the row when finished rows
    are dropped. Two models sampled with the same prompts, seed and batch size then share
    their random numbers: where their next-token distributions agree they write the same
    tokens (common random numbers), while each model's completions keep its own law.

    `fast` runs Llama-family and GPT-2 models through `fastdecode` (same arithmetic, a
    static KV cache); other models, and `fast=False`, use the model's own forward.
    """
    if temperature < 0:
        raise ValueError("temperature must be >= 0")
    if not 0 < top_p <= 1:
        raise ValueError("top_p must be in (0, 1]")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be >= 1")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if not prompts:
        return []

    device = model_device(model)
    was_training = bool(getattr(model, "training", False))
    model.eval()
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    bias: torch.Tensor | None = None  # additive mask over the vocabulary, built lazily
    stepper = _stepper(model, prompts, batch_size, max_new_tokens, fast)

    # Longest first (an out-of-memory error shows at once); equal prompts side by side.
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), prompts[i]))
    results: list[list[int]] = [[] for _ in prompts]
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = [prompts[i] for i in idx]
            n = len(batch)
            logits = stepper.prefill(batch, pad_id, device, max_new_tokens)
            rows = torch.arange(n, device=device)  # batch row of each running sequence
            out = torch.full((n, max_new_tokens), -1, dtype=torch.long, device=device)
            finished = torch.zeros(n, dtype=torch.bool, device=device)
            steps = 0
            for step in range(max_new_tokens):
                logits = logits.float()
                if allowed_ids is not None:
                    if bias is None:
                        bias = _allowed_bias(allowed_ids, stop_ids, logits.shape[-1], device)
                    logits = logits + bias
                noise = None
                if coupled and temperature > 0:
                    # Drawn for the whole batch so a row's noise does not depend on which
                    # other rows have finished.
                    # Standard Gumbel noise -log(-log U): ~3x cheaper on a CPU than
                    # -log(exponential_()). U is clamped away from 0 (log 0 = -inf).
                    u = torch.rand(
                        (n, logits.shape[-1]), generator=generator, device=generator.device
                    )
                    noise = u.clamp_(min=torch.finfo(u.dtype).tiny).log_().neg_().log_().neg_()
                    noise = noise[rows.to(generator.device)].to(logits.device)
                tok = select_next(
                    logits,
                    temperature=temperature,
                    top_p=top_p,
                    generator=generator,
                    noise=noise,
                    min_p=min_p,
                    top_k=top_k,
                )
                out[rows, step] = tok
                steps = step + 1
                finished |= torch.isin(tok, stops)
                if step + 1 == max_new_tokens:
                    break
                alive = int((~finished).sum())
                if alive == 0:
                    break
                if stepper.can_select and alive <= _PRUNE_FRACTION * len(rows):
                    keep = (~finished).nonzero().squeeze(1)
                    stepper.select(keep)
                    rows, tok, finished = rows[keep], tok[keep], finished[keep]
                logits = stepper.step(tok)
            stepper.close()
            results_batch = _cut(out[:, :steps].cpu(), stops.cpu())
            for i, comp in zip(idx, results_batch, strict=True):
                results[i] = comp
            if on_batch is not None:
                on_batch(n)
    finally:
        if was_training:
            model.train()
    return results


def _allowed_bias(
    allowed_ids: list[int], stop_ids: list[int], vocab: int, device: torch.device
) -> torch.Tensor:
    keep = sorted({int(i) for i in list(allowed_ids) + list(stop_ids) if 0 <= int(i) < vocab})
    if not keep:
        raise ValueError("allowed_ids holds no token id of this model's vocabulary")
    bias = torch.full((vocab,), float("-inf"), device=device)
    bias[torch.tensor(keep, device=device)] = 0.0
    return bias


def _cut(out: torch.Tensor, stops: torch.Tensor) -> list[list[int]]:
    """Rows of `out` [B, T] up to (not including) the first stop token or -1 (never run)."""
    end = torch.isin(out, stops) | (out < 0)
    t = out.shape[1]
    first = torch.where(
        end.any(dim=1), end.int().argmax(dim=1), torch.full_like(end[:, 0], t, dtype=torch.long)
    )
    return [row[:k].tolist() for row, k in zip(out, first.tolist(), strict=True)]
