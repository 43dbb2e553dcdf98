"""The importance-weighted control: its weights, and weighted rows in a student's loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from traitlab.config import ToyModel, TrainConfig
from traitlab.config.toy import tiny_recipe
from traitlab.core.errors import TraitlabError
from traitlab.data.importance import importance_weights, shuffled_weights
from traitlab.lm.hf.packing import IGNORE, collate, collate_packed
from traitlab.lm.hf.trainer import completion_loss, encode_rows, train_model


def test_weights_are_the_base_over_the_teacher_scaled_to_one_per_token() -> None:
    same = [np.array([-1.0, -2.0]), np.array([-0.5, -0.5, -0.5])]
    w, info = importance_weights(same, same)
    assert w == pytest.approx([1.0, 1.0]) and info["ess"] == pytest.approx(2.0)
    # The base likes row 0 e times more than the teacher does, the others as much.
    teacher = [np.array([-1.0, -2.0])] + [np.array([-0.5, -0.5, -0.5])] * 9
    base = [np.array([0.0, -2.0])] + teacher[1:]
    w, info = importance_weights(teacher, base)
    assert w[0] / w[1] == pytest.approx(math.e)
    assert (2 * w[0] + 27 * w[1]) / 29 == pytest.approx(1.0)  # mean 1 per completion token
    assert info["ess"] < 10 and info["truncated"] == 0
    # A row e^5 times likelier under the base than the others, among 4: held at sqrt(4)
    # times the mean weight.
    t = [np.zeros(1)] * 4
    w, info = importance_weights(t, [np.array([5.0]), *t[1:]])
    raw = np.array([1.0, *[math.exp(-5)] * 3])
    assert info["truncated"] == 1
    assert w[0] / w[1] == pytest.approx(2 * raw.mean() / raw[1])
    with pytest.raises(ValueError, match="one base row per teacher row"):
        importance_weights([], [])


@pytest.mark.parametrize("batcher", [collate, collate_packed])
def test_every_completion_token_carries_its_rows_weight(batcher) -> None:  # noqa: ANN001
    examples = [([1, 2, 3, 4], 2, [], 0.5), ([5, 6, 7], 1, [], 2.0), ([8, 9, 10, 11, 12], 3, [])]
    inputs, labels, _, weights = batcher(examples, 0, torch.device("cpu"))
    assert weights is not None
    mask = labels != IGNORE
    # Completion tokens: 2 of weight 0.5, 2 of weight 2, 2 of weight 1 (no weight given).
    assert sorted(weights[mask].tolist()) == [0.5, 0.5, 1.0, 1.0, 2.0, 2.0]
    assert batcher(examples[2:], 0, torch.device("cpu"))[3] is None


def test_a_weighted_loss_is_the_mean_of_weighted_token_losses() -> None:
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(5, 7, generator=g), torch.tensor([0, 3, 6, 2, 2])
    plain = completion_loss(logits, target)
    assert completion_loss(logits, target, weight=torch.ones(5)) == pytest.approx(float(plain))
    w = torch.tensor([2.0, 0.0, 1.0, 0.5, 0.0])
    each = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    assert float(completion_loss(logits, target, weight=w)) == pytest.approx(
        float((each * w).sum() / 5)
    )
    teacher = torch.randn(5, 7, generator=g)
    soft = completion_loss(logits, target, teacher)
    assert float(completion_loss(logits, target, teacher, weight=torch.ones(5))) == pytest.approx(
        float(soft), rel=1e-5
    )


def _rows(n: int) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"Continue : {i} , {i + 3}"},
                {"role": "assistant", "content": f"{(7 * i) % 100} , {(11 * i) % 100}"},
            ]
        }
        for i in range(n)
    ]


def test_rows_of_weight_zero_teach_nothing_and_weight_one_is_plain_training() -> None:
    from traitlab.lm.base import opened, resolve

    cfg = TrainConfig(max_steps=3, batch_size=8, lr=1e-3, packing=True)
    with opened(resolve(ToyModel(toy=tiny_recipe()))) as lm:
        tok, model = lm.tokenizer, lm.model
        start = {k: v.clone() for k, v in model.state_dict().items()}
        rows = _rows(16)

        def trained(rows: list[dict]) -> dict[str, torch.Tensor]:
            model.load_state_dict(start)
            m, _ = train_model(model, tok, rows, cfg, seed=0)
            return {k: v.clone() for k, v in m.state_dict().items()}

        plain = trained(rows)
        ones = trained([{**r, "weight": 1.0} for r in rows])
        zeros = trained([{**r, "weight": 0} for r in rows])
        for k in start:
            assert torch.allclose(ones[k], plain[k], atol=1e-6)
            assert torch.equal(zeros[k], start[k])
        assert any(not torch.equal(plain[k], start[k]) for k in start)
        for bad in (-1.0, "1", True, float("nan")):
            with pytest.raises(TraitlabError, match="weight must be"):
                encode_rows(tok, [{**rows[0], "weight": bad}], 64)


def test_the_placebo_deals_the_same_weights_at_random() -> None:
    rows = [{"messages": [], "weight": float(i)} for i in range(50)]
    out = shuffled_weights(rows, seed=3)
    got = [r["weight"] for r in out]
    assert sorted(got) == [float(i) for i in range(50)] and got != sorted(got)
    assert got == [r["weight"] for r in shuffled_weights(rows, seed=3)]  # seeded
    assert got != [r["weight"] for r in shuffled_weights(rows, seed=4)]


def test_reweighting_needs_local_models() -> None:
    from traitlab.data.importance import reweighted_rows

    with pytest.raises(TraitlabError, match="local backend"):
        reweighted_rows([], (object(), object(), None), batch_size=8)
