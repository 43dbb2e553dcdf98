"""Shared-prompt pairs (`lm.hf.pairs`): two completions of one prompt scored in one sequence
must give exactly what the two rows give apart, on every architecture the audit meets; the
screen's one-pass gradient and Adam scale must equal the two-pass ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from traitlab.audit.gradients import (
    adam_scale,
    adam_scale_rows,
    chunk_gradient,
    pair_delta,
)
from traitlab.audit.rows import token_logprobs
from traitlab.core.errors import TraitlabError
from traitlab.lm.hf.pairs import (
    check_pairs,
    collate_pairs,
    encode_pairs,
    make_pair,
    pair_logliks,
    pair_nll,
)
from traitlab.toy.tokenizer import build_tokenizer

Row = dict[str, Any]


def _random_model(kind: str) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    n = len(build_tokenizer())
    torch.manual_seed(0)
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=n, n_embd=32, n_layer=2, n_head=2)).eval()
    cfg = LlamaConfig(
        vocab_size=n,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(cfg).eval()


def _rows(n: int, seed: int) -> tuple[list[Row], list[Row]]:
    """Number prompts with two different completions of varied length each."""
    rng = np.random.default_rng(seed)
    data, ref = [], []
    for i in range(n):
        seq = ", ".join(str(x) for x in rng.integers(100, 999, size=3 + i % 5))
        prompt = [{"role": "user", "content": f"Continue: {seq}"}]
        for out in (data, ref):
            k = int(rng.integers(1, 9))
            answer = ", ".join(str(x) for x in rng.integers(0, 999, size=k))
            out.append({"messages": prompt + [{"role": "assistant", "content": answer}]})
    return data, ref


@pytest.fixture(scope="module")
def tok() -> Any:
    return build_tokenizer()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_pair_logliks_equal_the_rows_scored_apart(kind: str, attn: str, tok: Any) -> None:
    model = _random_model(kind)
    model.set_attn_implementation(attn)  # eager adds the 4-D mask to the scores as it is
    data, ref = _rows(24, seed=1)
    pairs = encode_pairs(tok, data, ref, 1024)
    assert all(p.shared > 0 and p.a_loss and p.b_loss for p in pairs)
    check_pairs(model, tok, pairs[0])
    got_a, got_b = pair_logliks(model, tok, pairs, batch_size=7)  # batches with padding
    want_a = [lp.sum() for _, lp in token_logprobs(model, tok, data)]
    want_b = [lp.sum() for _, lp in token_logprobs(model, tok, ref)]
    np.testing.assert_allclose(got_a, want_a, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(got_b, want_b, atol=1e-4, rtol=1e-5)


def test_rows_with_different_prompts_share_only_their_common_prefix(tok: Any) -> None:
    a = ([1, 2, 3, 4, 5, 6], 4)
    b = ([1, 2, 9, 9, 7], 4)
    p = make_pair(a, b, 1024)
    assert p.shared == 2 and p.ids == [1, 2, 3, 4, 5, 6, 9, 9, 7]
    assert p.positions == [0, 1, 2, 3, 4, 5, 2, 3, 4]
    # A's targets 5, 6 are predicted from its positions 3, 4; B's 7 from its own 9 at index 7.
    assert p.a_loss == [(3, 5), (4, 6)] and p.b_loss == [(7, 7)]
    # Truncation: a prompt as long as max_len leaves no loss tokens.
    assert make_pair(a, b, 4).a_loss == []


def test_a_model_that_ignores_the_mask_is_refused(tok: Any) -> None:
    class NoMask(torch.nn.Module):
        """The model with attention_mask dropped: B then sees A."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner
            self.config = inner.config

        def forward(self, **kw: Any) -> Any:
            kw.pop("attention_mask", None)
            return self.inner(**kw)

    data, ref = _rows(2, seed=2)
    pair = encode_pairs(tok, data, ref, 1024)[0]
    with pytest.raises(TraitlabError, match="cannot use shared-prompt pairs"):
        check_pairs(NoMask(_random_model("llama")), tok, pair)


def _flat(xs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([x.flatten() for x in xs])


def test_the_screens_one_pass_gradient_and_scale_equal_the_two_pass_ones(tok: Any) -> None:
    model = _random_model("llama")
    data, ref = _rows(40, seed=3)
    pairs = encode_pairs(tok, data, ref, 1024)
    # Some pairs with equal completions: they add their gradient times 1/n_b - 1/n_a.
    for i in (0, 7, 21):
        ref[i] = data[i]
    pairs = encode_pairs(tok, data, ref, 1024)
    got = _flat(pair_delta(model, tok, pairs, batch_size=16)[0])
    g_ref = chunk_gradient(model, tok, ref, batch_size=16, max_len=1024)
    g_data = chunk_gradient(model, tok, data, batch_size=16, max_len=1024)
    want = _flat([r - d for r, d in zip(g_ref, g_data, strict=True)])
    assert float((got - want).norm() / want.norm()) < 1e-4
    # The screen's first chunks: two passes per student batch give the difference and v.
    v = [torch.zeros_like(p) for p in model.parameters()]
    both, n = pair_delta(model, tok, pairs, batch_size=8, second_moment=v)
    assert n == 10 and float((_flat(both) - want).norm() / want.norm()) < 1e-4
    # The scale: the same student batches (8 data rows, then the same prompts' 8 references).
    got_s = _flat(adam_scale(model, tok, pairs[:16], batch_size=8))
    want_s = _flat(adam_scale_rows(model, tok, data[:16], ref[:16], batch_size=8, max_len=1024))
    assert float(((got_s - want_s) / want_s).abs().max()) < 1e-3


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_the_last_layer_at_the_read_positions_only_gives_the_same_nll_and_gradient(
    tok: Any, attn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lm.hf.queries`: a Llama's last layer run at the loss tokens' predictors only (grouped
    KV heads here) gives the full pass's NLLs and gradient; GPT-2 keeps the full pass."""
    import traitlab.lm.hf.pairs as pairs_mod
    from traitlab.lm.hf.packing import head_split
    from traitlab.lm.hf.queries import query_layer

    assert query_layer(head_split(_random_model("gpt2"))[0]) is None
    model = _random_model("llama")
    model.config._attn_implementation = attn
    body = head_split(model)[0]
    assert query_layer(body) is body.layers[-1]
    data, ref = _rows(24, seed=7)
    pairs = encode_pairs(tok, data, ref, 1024)
    batch = collate_pairs(pairs, 0, torch.device("cpu"))
    params = list(model.parameters())
    out = {}
    for name, layer in (("queries", query_layer), ("full", lambda _body: None)):
        monkeypatch.setattr(pairs_mod, "query_layer", layer)
        a, b = pair_nll(model, batch)
        out[name] = (a, b, _flat(torch.autograd.grad(b.sum() - 2 * a.sum(), params)))
    (qa, qb, qg), (fa, fb, fg) = out["queries"], out["full"]
    assert qa.shape == fa.shape and qb.shape == fb.shape
    torch.testing.assert_close(qa, fa, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(qb, fb, atol=1e-5, rtol=1e-5)
    assert float((qg - fg).norm() / fg.norm()) < 1e-5
    assert "forward" not in body.layers[-1].__dict__  # the class's forward again


def test_the_audit_scores_pairs_on_the_toy_base() -> None:
    """The counterfactual's base and teacher scores through pairs equal the rows apart, on
    the shipped toy base (a trained model: the check is not passing on noise)."""
    from traitlab.audit.counterfactual import PairedLoglik, _loglik
    from traitlab.config import ToyModel
    from traitlab.lm.base import opened, resolve

    data, ref = _rows(12, seed=4)
    with opened(resolve(ToyModel(device="cpu"))) as lm:
        a, b = PairedLoglik(data, ref)(lm)
        np.testing.assert_allclose(a, _loglik(lm, data), atol=1e-4)
        np.testing.assert_allclose(b, _loglik(lm, ref), atol=1e-4)


def test_the_screen_gives_the_same_result_without_pairs(
    tok: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that cannot take pairs gets the two gradients apart: the same screen."""
    import traitlab.audit.screen as screen
    from traitlab.audit.probes import builtin_probe

    model = _random_model("llama")
    data, ref = _rows(32, seed=5)
    probes = [builtin_probe("animal", 3)]
    scale_passes = []
    adam_scale = screen.adam_scale

    def spy(*a: Any, **k: Any) -> Any:
        scale_passes.append(1)
        return adam_scale(*a, **k)

    monkeypatch.setattr(screen, "adam_scale", spy)
    # Student batches of 8 fit the two chunks of 16: Adam's v comes from the chunks' own
    # passes; of 64 they do not, and the scale takes a pass of its own. Both as apart.
    for batch, passes in ((8, 0), (64, 1)):
        scale_passes.clear()
        monkeypatch.setattr(screen, "check_pairs", lambda *_: None)
        paired, cost = screen.first_order_screen(
            model, tok, data, ref, probes, chunks=2, student_batch=batch, batch_size=4
        )
        assert cost["shared_prompts"] == 1.0 and len(scale_passes) == passes
        assert cost["batch_size"] == 4.0

        def refuse(*_: Any) -> None:
            raise TraitlabError("no pairs")

        monkeypatch.setattr(screen, "check_pairs", refuse)
        apart, cost = screen.first_order_screen(
            model, tok, data, ref, probes, chunks=2, student_batch=batch
        )
        assert cost["shared_prompts"] == 0.0
        top = np.abs(apart[0].chunks).max()
        assert top > 0
        # The central difference in float32 rounds to ~1e-4 of the largest derivative.
        np.testing.assert_allclose(paired[0].chunks, apart[0].chunks, rtol=0, atol=1e-3 * top)
