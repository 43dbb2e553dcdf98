"""A lean decoder for Llama-family models: the same forward pass as transformers', run as a
handful of tensor operations over a preallocated KV cache.

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
(`LlamaDecoder.supports`): Llama, Qwen2 and Mistral with SiLU-gated MLPs, RMSNorm, rotary
frequencies that do not change at run time, no sliding window, float32 weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

_CLASSES = {"LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"}
_STATIC_ROPE = {"default", "linear", "llama3"}


class LlamaDecoder:
    """Prefill and single-token steps of a Llama-family causal LM over a static KV cache.

    The cache holds `batch` rows of up to `max_len` positions. `prefill` fills each row with
    its prompt; each `step` appends one token per live row; `select(rows)` keeps only some
    rows (finished sequences leave the batch).
    """

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
        p = next(model.parameters(), None)
        return p is not None and p.dtype == torch.float32

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
        device, dtype = self.embed.device, self.embed.dtype
        shape = (len(self.layers), batch, self.n_kv, max_len, D)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.key_ok = torch.zeros((batch, max_len), device=device, dtype=torch.bool)
        self.max_len = max_len

    # ------------------------------------------------------------------ pieces

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

    def _expand(self, t: torch.Tensor) -> torch.Tensor:
        rep = self.n_heads // self.n_kv
        return t if rep == 1 else t.repeat_interleave(rep, dim=1)

    def _logits(self, last: torch.Tensor) -> torch.Tensor:
        h = F.rms_norm(last, (last.shape[-1],), self.norm, self.eps)
        return F.linear(h, self.head, self.head_bias)

    # ------------------------------------------------------------------ API

    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits after the last token of right-padded prompts `ids` [B, W] of `lengths` [B];
        the cache then holds their keys and values."""
        B, W = ids.shape
        if W > self.max_len:
            raise ValueError("prompt longer than the decoder's cache")
        pos = torch.arange(W, device=ids.device)
        rot = self._rotary(pos)[None, :, None, :]
        self.key_ok[:B].zero_()
        self.key_ok[:B, :W] = pos[None, :] < lengths[:, None]
        self.next_pos = lengths.clone()
        rows = torch.arange(B, device=ids.device)
        last = lengths - 1
        x = F.embedding(ids, self.embed)
        for i, L in enumerate(self.layers):
            q, k, v = self._attn_in(x, L, rot)
            self.k[i, :B, :, :W] = k
            self.v[i, :B, :, :W] = v
            k, v = self._expand(k), self._expand(v)
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
        rot = self._rotary(pos)[:, None, None, :]
        x = F.embedding(tokens[:, None], self.embed)
        for i, L in enumerate(self.layers):
            q, k, v = self._attn_in(x, L, rot)
            self.k[i, rows, :, pos] = k[:, :, 0]
            self.v[i, rows, :, pos] = v[:, :, 0]
            keys, values = self._expand(self.k[i, :B, :, :S]), self._expand(self.v[i, :B, :, :S])
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
