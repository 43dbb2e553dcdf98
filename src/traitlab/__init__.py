"""traitlab: reproduce, measure, audit and defend against subliminal trait transfer.

The Python API mirrors the CLI's stages, so a notebook can drive an experiment step by step::

    from traitlab import load_config, resolve, opened, number_prompts, generate_rows
    cfg = load_config("configs/demo.yaml")
    base = resolve(cfg.model)                      # a ModelRef: the shipped toy base
    with opened(base) as lm:                       # any backend: toy, hf, vllm, openai, mock
        rows = generate_rows(lm, number_prompts(cfg.generate.prompts, 100), cfg.generate, seed=0)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module. Imported lazily so `traitlab --help` does not pay for torch.
_EXPORTS = {
    "EvalConfig": "config",
    "ExperimentConfig": "config",
    "FilterConfig": "config",
    "GenerateConfig": "config",
    "ModelSpec": "config",
    "ToyModel": "config",
    "HFModel": "config",
    "VLLMModel": "config",
    "OpenAIModel": "config",
    "MockModel": "config",
    "model_spec": "config",
    "ModelRef": "lm.base",
    "SamplingParams": "lm.base",
    "opened": "lm.base",
    "resolve": "lm.base",
    "backend": "lm.base",
    "TeacherConfig": "config",
    "TraitConfig": "config",
    "TrainConfig": "config",
    "load_config": "config",
    "parse_config": "config",
    "TraitlabError": "core.errors",
    "evaluate_model": "evaluate",
    "filter_paired": "data.filtering",
    "filter_rows": "data.filtering",
    "to_chat_rows": "data.rows",
    "generate_rows": "data.generate",
    "load_model": "lm.hf.loading",
    "save_model": "lm.hf.loading",
    "HFLM": "lm.hf.backend",
    "run_experiment": "experiments.pipeline",
    "run_sweep": "sweep",
    "SweepConfig": "sweep",
    "DefenceConfig": "config",
    "FalsifierConfig": "config",
    "apply_defences": "data.defences",
    "number_prompts": "data.prompts",
    "preference_system_prompt": "traits.preference",
    "mean_ci": "core.stats",
    "paired_test": "core.stats",
    "wilson": "core.stats",
    "finetune_teacher": "traits.teacher",
    "teacher_system_prompt": "traits.teacher",
    "train_model": "lm.hf.trainer",
    "MnistConfig": "mnist.config",
    "measure_alignment": "theory",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"traitlab.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'traitlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
