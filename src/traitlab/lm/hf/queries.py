"""The last decoder layer computed only where its output is read.

Pair scoring (`lm.hf.pairs`) reads the body's last hidden state at the completion tokens'
predictors only: ~22 of a number pair's ~77 positions. Every earlier layer must run at
every position (later positions attend to them), but the last one feeds nothing else, so
there the prompt's positions need only their keys and values. `only_queries` runs the last
layer with its queries, attention output, MLP and residual at the read positions alone: on
the toy Llama (2 layers) about a quarter of the pair pass. The result is the same up to
float rounding; `check_pairs` compares it with the rows scored apart before any use.

Written against the Llama layer (`LlamaDecoderLayer`, `LlamaAttention`, rotary positions,
grouped KV heads) of transformers 5: other layers keep the full pass (`query_layer`).
`lm.hf.fastdecode` does the same in its prefill (the last layer at the last prompt position)
but cannot serve here: its decoders run in inference mode on fused copies of the weights,
so no gradient would reach the model's parameters. This runs the model's own modules.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch

_LAYERS = {("LlamaDecoderLayer", "LlamaAttention")}


def query_layer(body: Any) -> Any | None:
    """The body's last decoder layer where `only_queries` knows its kind, else None."""
    cfg = getattr(body, "config", None)
    layers = getattr(body, "layers", None)
    if cfg is None or layers is None or len(layers) == 0:
        return None
    if getattr(cfg, "_attn_implementation", None) not in ("sdpa", "eager"):
        return None
    last = layers[getattr(cfg, "num_hidden_layers", len(layers)) - 1]
    attn = getattr(last, "self_attn", None)
    if (type(last).__name__, type(attn).__name__) not in _LAYERS:
        return None
    if last.training and getattr(attn, "attention_dropout", 0.0):
        return None  # `_forward` applies no dropout
    return last


def _forward(
    layer: Any,
    q_pos: torch.Tensor,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    **_: Any,
) -> torch.Tensor:
    """The Llama layer's forward at the positions `q_pos` [B, Q] only: [B, Q, H]."""
    if attention_mask is None or position_embeddings is None:
        raise RuntimeError("only_queries needs the 4-D mask and the rotary positions")
    attn = layer.self_attn
    mod = sys.modules[type(attn).__module__]  # the model file's own helpers
    b, t, _ = hidden_states.shape
    q_n = q_pos.shape[1]

    def at(x: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, Q, D]
        return x.gather(1, q_pos[:, :, None].expand(-1, -1, x.shape[-1]))

    x = layer.input_layernorm(hidden_states)
    d = attn.head_dim
    q = attn.q_proj(at(x)).view(b, q_n, -1, d).transpose(1, 2)
    k = attn.k_proj(x).view(b, t, -1, d).transpose(1, 2)
    v = attn.v_proj(x).view(b, t, -1, d).transpose(1, 2)
    cos, sin = position_embeddings
    cq, sq = at(cos)[:, None], at(sin)[:, None]
    q = q * cq + mod.rotate_half(q) * sq
    k = k * cos[:, None] + mod.rotate_half(k) * sin[:, None]
    k = mod.repeat_kv(k, attn.num_key_value_groups)
    v = mod.repeat_kv(v, attn.num_key_value_groups)
    m = attention_mask[:, :, :, :t]
    m = m.gather(2, q_pos[:, None, :, None].expand(-1, m.shape[1], -1, t))
    o = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=attn.scaling)
    o = attn.o_proj(o.transpose(1, 2).reshape(b, q_n, -1))
    y = at(hidden_states) + o
    return y + layer.mlp(layer.post_attention_layernorm(y))


@contextmanager
def only_queries(layer: Any, q_pos: torch.Tensor) -> Iterator[None]:
    """Inside the block, `layer` (from `query_layer`) returns its output at `q_pos` only, so
    the body's last hidden state is [B, Q, H]."""
    layer.forward = partial(_forward, layer, q_pos)
    try:
        yield
    finally:
        del layer.forward  # the class's forward again
