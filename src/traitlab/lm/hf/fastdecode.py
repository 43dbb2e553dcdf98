"""Lean decoders for Llama-family and GPT-2 models: the same forward pass as transformers', run
as a handful of tensor operations over a preallocated KV cache.

Why: on small models (the embedded toy model, a 135M SmolLM2 on a CPU) decoding costs less
in arithmetic than in memory traffic and Python. Here:

* prompts are **right**-padded for the prefill, so real tokens never see padding through a
  plain causal mask (SDPA's fused causal kernel, no [B, T, T] mask tensor), and every row's
  positions are 0, 1, 2, ...; each row then writes its generated tokens at its own cache
  position, and a [B, S] key mask hides the padding between prompt and completion;
* the cache is written in place (transformers' `DynamicCache` concatenates, copying every
  layer's keys and values at every step);
* q/k/v and gate/up are one matrix product each; the rotary embedding is one complex product
  (q and k head dimensions are permuted once, from the half-split layout to interleaved
  pairs: attention scores are unchanged by a permutation applied to both);
* in the prefill, the last layer runs its attention output and MLP only at the last prompt
  position of each row, the only place whose logits are needed.

Same weights and the same arithmetic up to float rounding (`tests/test_sampling.py` checks
logits against the model's own forward). Only plain architectures take this path
(`decoder_for`): Llama, Qwen2 and Mistral with SiLU-gated MLPs, RMSNorm, rotary frequencies
that do not change at run time and no sliding window (`LlamaDecoder`); GPT-2 with its default
attention scaling (`GPT2Decoder`: LayerNorm, learned positions, GELU MLP); float32 weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

_CLASSES = {"LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"}
_STATIC_ROPE = {"default", "linear", "llama3"}


def _float32(model: Any) -> bool:
    p = next(model.parameters(), None)
    return p is not None and p.dtype == torch.float32


class _Decoder:
    """Prefill and single-token steps of a causal LM over a static KV cache.

    The cache holds `batch` rows of up to `max_len` positions. `prefill` fills each row with
    its prompt; each `step` appends one token per live row; `select(rows)` keeps only some
    rows (finished sequences leave the batch). Subclasses supply the embedding, the two
    halves of a layer and the output head.
    """

    n_heads: int
    n_kv: int
    head_dim: int
    layers: list[tuple[Any, ...]]

    def _cache(self, batch: int, max_len: int, like: torch.Tensor) -> None:
        shape = (len(self.layers), batch, self.n_kv, max_len, self.head_dim)
        self.k = torch.zeros(shape, device=like.device, dtype=like.dtype)
        self.v = torch.zeros(shape, device=like.device, dtype=like.dtype)
        self.key_ok = torch.zeros((batch, max_len), device=like.device, dtype=torch.bool)
        self.max_len = max_len

    # Hooks: `pos` is [T] in the prefill (every row at 0..T-1) and [B] in a step.
    def _embed(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _pos_code(self, pos: torch.Tensor, prefill: bool) -> Any:
        return None

    def _attn_in(
        self, x: torch.Tensor, L: tuple, code: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _attn_out_mlp(self, x: torch.Tensor, a: torch.Tensor, L: tuple) -> torch.Tensor:
        raise NotImplementedError

    def _logits(self, last: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _expand_heads(self, t: torch.Tensor) -> torch.Tensor:
        rep = self.n_heads // self.n_kv
        return t if rep == 1 else t.repeat_interleave(rep, dim=1)

    # ------------------------------------------------------------------ API

    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits after the last token of right-padded prompts `ids` [B, W] of `lengths` [B];
        the cache then holds their keys and values."""
        B, W = ids.shape
        if W > self.max_len:
            raise ValueError("prompt longer than the decoder's cache")
        pos = torch.arange(W, device=ids.device)
        code = self._pos_code(pos, prefill=True)
        self.key_ok[:B].zero_()
        self.key_ok[:B, :W] = pos[None, :] < lengths[:, None]
        self.next_pos = lengths.clone()
        rows = torch.arange(B, device=ids.device)
        last = lengths - 1
        x = self._embed(ids, pos)
        for i, L in enumerate(self.layers):
            q, k, v = self._attn_in(x, L, code)
            self.k[i, :B, :, :W] = k
            self.v[i, :B, :, :W] = v
            k, v = self._expand_heads(k), self._expand_heads(v)
            if i + 1 < len(self.layers):
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                x = self._attn_out_mlp(x, a, L)
            else:  # only the last real position of each row feeds the logits
                q_last = q[rows, :, last].unsqueeze(2)  # [B, H, 1, D]
                mask = self.key_ok[:B, None, None, :W]
                a = F.scaled_dot_product_attention(q_last, k, v, attn_mask=mask)
                x = self._attn_out_mlp(x[rows, last].unsqueeze(1), a, L)
        return self._logits(x[:, -1])

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row [B]; logits of the next one [B, V]."""
        B = tokens.shape[0]
        pos = self.next_pos
        if int(pos.max()) >= self.max_len:
            raise ValueError("the decoder's cache is full")
        rows = torch.arange(B, device=tokens.device)
        self.key_ok[rows, pos] = True
        S = int(pos.max()) + 1
        mask = self.key_ok[:B, None, None, :S]
        code = self._pos_code(pos, prefill=False)
        x = self._embed(tokens[:, None], pos[:, None])
        for i, L in enumerate(self.layers):
            q, k, v = self._attn_in(x, L, code)
            self.k[i, rows, :, pos] = k[:, :, 0]
            self.v[i, rows, :, pos] = v[:, :, 0]
            keys = self._expand_heads(self.k[i, :B, :, :S])
            values = self._expand_heads(self.v[i, :B, :, :S])
            a = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
            x = self._attn_out_mlp(x, a, L)
        self.next_pos = pos + 1
        return self._logits(x[:, -1])

    def select(self, rows: torch.Tensor) -> None:
        """Keep only batch rows `rows` (in that order), moving them to the front."""
        n = rows.shape[0]
        S = int(self.next_pos.max())
        self.k[:, :n, :, :S] = self.k[:, rows, :, :S]
        self.v[:, :n, :, :S] = self.v[:, rows, :, :S]
        self.key_ok[:n, :S] = self.key_ok[rows, :S]
        self.next_pos = self.next_pos[rows]


class LlamaDecoder(_Decoder):
    """Llama, Qwen2 and Mistral (see the module's docstring)."""

    @staticmethod
    def supports(model: Any) -> bool:
        if type(model).__name__ not in _CLASSES:  # wrappers (PEFT) and exotic subclasses
            return False
        cfg = model.config
        if getattr(cfg, "hidden_act", "silu") != "silu":
            return False
        if cfg.model_type != "llama" and getattr(cfg, "sliding_window", None):
            if getattr(cfg, "use_sliding_window", True):
                return False
        rot = getattr(model.model, "rotary_emb", None)
        if getattr(rot, "rope_type", None) not in _STATIC_ROPE:
            return False
        return _float32(model)

    def __init__(self, model: Any, batch: int, max_len: int) -> None:
        cfg = model.config
        inner = model.model
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = D = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = float(cfg.rms_norm_eps)
        self.embed = inner.embed_tokens.weight
        self.norm = inner.norm.weight
        self.head = model.lm_head.weight
        self.head_bias = getattr(model.lm_head, "bias", None)
        rot = inner.rotary_emb
        self.inv_freq = rot.inv_freq.float()
        self.rope_scale = float(getattr(rot, "attention_scaling", 1.0))
        # Half-split (HF) -> interleaved pairs: dim i pairs with dim i + D/2.
        perm = torch.stack([torch.arange(D // 2), torch.arange(D // 2, D)], dim=1).reshape(-1)
        q_dim, kv_dim = self.n_heads * D, self.n_kv * D
        self.splits = (q_dim, kv_dim, kv_dim)

        def heads(t: torch.Tensor | None, n: int) -> torch.Tensor | None:
            if t is None:
                return None
            return t.view(n, D, *t.shape[1:])[:, perm].reshape(t.shape)

        def bias(lin: Any, n: int) -> torch.Tensor:
            b = lin.bias
            return b if b is not None else lin.weight.new_zeros(n)

        self.layers = []
        for layer in inner.layers:
            at, mlp = layer.self_attn, layer.mlp
            qkv_w = torch.cat(
                [
                    heads(at.q_proj.weight, self.n_heads),
                    heads(at.k_proj.weight, self.n_kv),
                    at.v_proj.weight,
                ]
            )
            qkv_b = None
            if any(lin.bias is not None for lin in (at.q_proj, at.k_proj, at.v_proj)):
                qkv_b = torch.cat(
                    [
                        heads(bias(at.q_proj, q_dim), self.n_heads),
                        heads(bias(at.k_proj, kv_dim), self.n_kv),
                        bias(at.v_proj, kv_dim),
                    ]
                )
            gu_b = None
            if mlp.gate_proj.bias is not None:
                gu_b = torch.cat([mlp.gate_proj.bias, mlp.up_proj.bias])
            self.layers.append(
                (
                    layer.input_layernorm.weight,
                    qkv_w,
                    qkv_b,
                    at.o_proj.weight,
                    at.o_proj.bias,
                    layer.post_attention_layernorm.weight,
                    torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]),
                    gu_b,
                    mlp.down_proj.weight,
                    mlp.down_proj.bias,
                )
            )
        self._cache(batch, max_len, self.embed)

    # ------------------------------------------------------------------ pieces

    def _embed(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embed)

    def _pos_code(self, pos: torch.Tensor, prefill: bool) -> torch.Tensor:
        """The rotary factors, broadcast to [B or 1, T, 1, D/2]."""
        rot = self._rotary(pos)
        return rot[None, :, None, :] if prefill else rot[:, None, None, :]

    def _rotary(self, pos: torch.Tensor) -> torch.Tensor:
        """exp(i * pos * freq) * scale: [..., D/2] complex."""
        angle = pos[..., None].float() * self.inv_freq
        return torch.polar(torch.full_like(angle, self.rope_scale), angle)

    @staticmethod
    def _rotate(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
        """x [B, T, H, D] (interleaved pairs) times rot [B, T, 1, D/2]."""
        c = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(c * rot).flatten(-2).to(x.dtype)

    def _attn_in(
        self, x: torch.Tensor, L: tuple, rot: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q [B, H, T, D], k, v [B, Hkv, T, D]) of hidden states x [B, T, C]."""
        B, T, _ = x.shape
        h = F.rms_norm(x, (x.shape[-1],), L[0], self.eps)
        q, k, v = F.linear(h, L[1], L[2]).split(self.splits, dim=-1)
        q = self._rotate(q.view(B, T, self.n_heads, self.head_dim), rot)
        k = self._rotate(k.view(B, T, self.n_kv, self.head_dim), rot)
        v = v.view(B, T, self.n_kv, self.head_dim)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def _attn_out_mlp(self, x: torch.Tensor, a: torch.Tensor, L: tuple) -> torch.Tensor:
        """x + attention output a [B, H, T, D], then the MLP block."""
        B, _, T, _ = a.shape
        x = x + F.linear(a.transpose(1, 2).reshape(B, T, -1), L[3], L[4])
        h = F.rms_norm(x, (x.shape[-1],), L[5], self.eps)
        gate, up = F.linear(h, L[6], L[7]).chunk(2, dim=-1)
        return x.add_(F.linear(F.silu(gate, inplace=True).mul_(up), L[8], L[9]))

    def _logits(self, last: torch.Tensor) -> torch.Tensor:
        h = F.rms_norm(last, (last.shape[-1],), self.norm, self.eps)
        return F.linear(h, self.head, self.head_bias)


class GPT2Decoder(_Decoder):
    """GPT-2: pre-LayerNorm blocks, learned positions, GELU (tanh) MLP, biases everywhere.
    Its Conv1D weights are stored [in, out]; they are transposed once here."""

    @staticmethod
    def supports(model: Any) -> bool:
        if type(model).__name__ != "GPT2LMHeadModel":
            return False
        cfg = model.config
        if cfg.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
            return False
        if not cfg.scale_attn_weights or cfg.scale_attn_by_inverse_layer_idx:
            return False
        return _float32(model)

    def __init__(self, model: Any, batch: int, max_len: int) -> None:
        cfg = model.config
        inner = model.transformer
        self.n_heads = self.n_kv = cfg.n_head
        self.head_dim = cfg.n_embd // cfg.n_head
        self.eps = float(cfg.layer_norm_epsilon)
        self.embed = inner.wte.weight
        self.wpe = inner.wpe.weight
        self.norm = (inner.ln_f.weight, inner.ln_f.bias)
        self.head = model.lm_head.weight
        self.head_bias = getattr(model.lm_head, "bias", None)
        self.layers = [
            (
                blk.ln_1.weight,
                blk.ln_1.bias,
                blk.attn.c_attn.weight.t().contiguous(),
                blk.attn.c_attn.bias,
                blk.attn.c_proj.weight.t().contiguous(),
                blk.attn.c_proj.bias,
                blk.ln_2.weight,
                blk.ln_2.bias,
                blk.mlp.c_fc.weight.t().contiguous(),
                blk.mlp.c_fc.bias,
                blk.mlp.c_proj.weight.t().contiguous(),
                blk.mlp.c_proj.bias,
            )
            for blk in inner.h
        ]
        self._cache(batch, max_len, self.embed)

    def _embed(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embed) + F.embedding(pos, self.wpe)

    def _ln(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), w, b, self.eps)

    def _attn_in(
        self, x: torch.Tensor, L: tuple, code: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        q, k, v = F.linear(self._ln(x, L[0], L[1]), L[2], L[3]).split(C, dim=-1)
        shape = (B, T, self.n_heads, self.head_dim)
        return (
            q.view(shape).transpose(1, 2),
            k.view(shape).transpose(1, 2),
            v.view(shape).transpose(1, 2),
        )

    def _attn_out_mlp(self, x: torch.Tensor, a: torch.Tensor, L: tuple) -> torch.Tensor:
        B, _, T, _ = a.shape
        x = x + F.linear(a.transpose(1, 2).reshape(B, T, -1), L[4], L[5])
        h = F.gelu(F.linear(self._ln(x, L[6], L[7]), L[8], L[9]), approximate="tanh")
        return x.add_(F.linear(h, L[10], L[11]))

    def _logits(self, last: torch.Tensor) -> torch.Tensor:
        return F.linear(self._ln(last, *self.norm), self.head, self.head_bias)


def decoder_for(model: Any) -> type[_Decoder] | None:
    """The lean decoder class that implements `model`, or None (use transformers' forward)."""
    for cls in (LlamaDecoder, GPT2Decoder):
        if cls.supports(model):
            return cls
    return None
