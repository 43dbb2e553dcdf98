"""The model seam: model specs as a union keyed by backend, the registry, model refs, and the
whole pipeline on the scripted mock backend (no torch model anywhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

from traitlab.config import HFModel, MockModel, OpenAIModel, ToyModel, model_spec, parse_config
from traitlab.core.errors import TraitlabError
from traitlab.core.registry import Registry
from traitlab.lm.base import BACKENDS, ModelRef, Sampler, Scorer, Trainer, backend, opened


def test_model_specs_keep_their_old_meaning_and_name_the_backend() -> None:
    assert isinstance(model_spec(name="toy"), ToyModel)
    assert isinstance(model_spec(name="Qwen/Qwen2.5-7B-Instruct"), HFModel)
    assert isinstance(model_spec(name="./a/dir"), HFModel)
    api = model_spec(backend="openai", name="gpt-4.1-nano", base_url="http://x/v1")
    assert isinstance(api, OpenAIModel) and api.api_key_env == "OPENAI_API_KEY"
    cfg = parse_config({"model": {"name": "toy", "backend": "openai", "base_url": "http://x/v1"}})
    assert cfg.model.backend == "openai" and cfg.model.name == "toy"
    dumped = parse_config({}).model_dump(mode="json")
    assert dumped["model"]["backend"] == "toy"  # the resolved config says which backend
    assert parse_config(dumped) == parse_config({})  # and round-trips


@pytest.mark.parametrize(
    "model,message",
    [
        ({"backend": "banana", "name": "x"}, "unknown backend 'banana'; known: toy, hf, vllm"),
        ({"backend": "openai"}, "field 'model.name': Field required"),
        ({"name": "toy", "toy": {"sed": 1}}, "unknown field 'model.toy.sed'"),
        ({"name": "toy", "api_key": "sk-x"}, "unknown field 'model.api_key'"),
    ],
)
def test_bad_model_specs_are_one_line(model: dict, message: str) -> None:
    with pytest.raises(TraitlabError, match=message.replace("(", r"\(")):
        parse_config({"model": model})


def test_registry_names_what_it_knows() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("a")(1)
    reg.lazy("b", "math:pi")
    assert reg.get("a") == 1 and abs(reg.get("b") - 3.14159) < 1e-4
    with pytest.raises(TraitlabError, match="unknown widget 'c'; known: a, b"):
        reg.get("c")
    assert set(BACKENDS.names()) == {"hf", "toy", "vllm", "openai", "mock"}
    with pytest.raises(TraitlabError, match="unknown backend 'x'; known: hf, mock"):
        backend("x")


def test_model_refs_are_saved_relative_to_their_directory(tmp_path: Path) -> None:
    base = ModelRef(backend="mock", id="mock", key="k0", spec=MockModel().model_dump(mode="json"))
    ref = ModelRef(backend="mock", id=str(tmp_path), key="k1", spec=base.spec, parent=base)
    ref.local().save(tmp_path)
    moved = tmp_path.parent / "moved"
    tmp_path.rename(moved)
    back = ModelRef.load(moved)
    assert back.id == str(moved.resolve()) and back.parent == base and back.key == "k1"


def test_the_mock_backend_implements_the_three_protocols(tmp_path: Path) -> None:
    spec = MockModel(preference={"dog": 0.6, "owl": 0.4})
    ref = backend("mock").resolve(spec)
    with opened(ref) as lm:
        assert isinstance(lm, Sampler) and isinstance(lm, Scorer) and isinstance(lm, Trainer)
        from traitlab.config import TrainConfig

        rows = [
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "owl"},
                ]
            }
        ] * 4
        t, _ = lm.finetune(rows, TrainConfig(lr=5e-4), seed=0, out_dir=tmp_path, key="t")
    with opened(ModelRef.load(tmp_path)) as teacher:
        probs = teacher.preference_probs(
            ["q"], {"owl": ["owl"], "dog": ["dog"]}, system_prompt=None, batch_size=1
        )
    assert probs[0, 0] > 0.4 and t.parent == ref


def test_the_pipeline_runs_on_the_mock_backend(tmp_path: Path) -> None:
    """Every stage, the run directory and the summary, with no model weights at all."""
    from traitlab.experiments.pipeline import run_experiment

    cfg = parse_config(
        {
            "name": "mock",
            "seeds": [0, 1],
            "model": {"backend": "mock", "preference": {"dog": 0.5, "cat": 0.3, "owl": 0.2}},
            "cross_init": {"backend": "mock", "name": "other"},
            "teacher": {"answers": "target", "train": {"lr": 5e-4, "max_steps": 1}},
            "generate": {"n_prompts": 30},
            "filter": {"max_rows": 20},
            "evaluate": {"samples_per_question": 5, "n_questions": 5},
        }
    )
    summary = run_experiment(cfg, tmp_path / "run")
    arms = summary["arms"]
    assert arms["teacher"]["exact"]["mean"] == pytest.approx(0.6)  # halfway to owl (lr x 1000)
    # Numbers name no option: the mock students do not move (a mock cannot learn subliminally).
    assert arms["treatment"]["exact"]["mean"] == pytest.approx(0.2)
    assert (tmp_path / "run" / "seed-1" / "student-treatment" / "model.json").is_file()
    assert (tmp_path / "run" / "DONE").is_file()
