"""Calling a Hugging Face causal LM's forward pass with a KV cache, whatever its signature.

Shared by the sampler and the scorer: keyword names differ between transformers versions and
wrappers (`cache=` / `past_key_values=`, `logits_to_keep`), and caches differ in whether rows
can be dropped or repeated (`batch_select_indices`).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch


def _uses_new_cache_name() -> bool:
    """transformers >= 5.2x names the KV cache `cache`; older versions `past_key_values`."""
    try:
        from transformers.modeling_outputs import CausalLMOutputWithPast
    except ImportError:  # pragma: no cover
        return False
    return "cache" in getattr(CausalLMOutputWithPast, "__dataclass_fields__", {})


class ForwardAdapter:
    """Calls a causal LM's forward with the keywords its signature takes."""

    def __init__(self, model: Any) -> None:
        self.model = model
        try:
            params = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):  # pragma: no cover
            params = {}
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        if "cache" in params:
            self.cache_kw = "cache"
        elif "past_key_values" in params:
            self.cache_kw = "past_key_values"
        else:  # a wrapper (e.g. PEFT) forwarding **kwargs: use the library's convention
            self.cache_kw = "cache" if _uses_new_cache_name() else "past_key_values"
        self.position_ids = "position_ids" in params or var_kw
        self.keep_kw = next(
            (k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None
        )

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: Any,
        last_only: bool,
    ) -> tuple[torch.Tensor, Any]:
        kw: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "use_cache": True,
        }
        if self.position_ids:
            kw["position_ids"] = position_ids
        if cache is not None:
            kw[self.cache_kw] = cache
        if last_only and self.keep_kw is not None:
            kw[self.keep_kw] = 1
        out = self.model(**kw)
        new_cache = getattr(out, "cache", None)
        if new_cache is None:
            new_cache = getattr(out, "past_key_values", None)
        return out.logits[:, -1, :], new_cache


def can_select(cache: Any) -> bool:
    if cache is None or not hasattr(cache, "batch_select_indices"):
        return False
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return all(hasattr(layer, "batch_select_indices") for layer in layers)
    return True


def prefill_unique(
    caller: ForwardAdapter,
    batch: list[list[int]],
    ids: torch.Tensor,
    mask: torch.Tensor,
    pos: torch.Tensor,
) -> tuple[torch.Tensor, Any]:
    """Prefill pass; repeated prompts (n samples per question) are computed once and their
    KV cache rows repeated, when the cache supports row selection."""
    slot: dict[tuple[int, ...], int] = {}
    uniq: list[int] = []  # batch row of each distinct prompt
    inv: list[int] = []  # distinct-prompt slot of each batch row
    for r, p in enumerate(batch):
        k = tuple(p)
        if k not in slot:
            slot[k] = len(uniq)
            uniq.append(r)
        inv.append(slot[k])
    if len(uniq) < len(batch):
        u = torch.tensor(uniq, device=ids.device)
        logits, cache = caller(ids[u], mask[u], pos[u], None, last_only=True)
        if can_select(cache):
            sel = torch.tensor(inv, device=ids.device)
            cache.batch_select_indices(sel)
            return logits[sel], cache
    return caller(ids, mask, pos, None, last_only=True)
