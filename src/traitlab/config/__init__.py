"""Configuration: frozen, validated pydantic models loaded from YAML (see `experiment`)."""

from traitlab.config.base import (
    FrozenConfig,
    apply_overrides,
    config_to_dict,
    config_to_yaml,
    load_yaml,
    set_path,
)
from traitlab.config.control import ControlConfig
from traitlab.config.data import FilterConfig, GenerateConfig, PromptSetConfig
from traitlab.config.evaluate import EvalConfig, JudgeConfig, TraitConfig
from traitlab.config.experiment import (
    DefenceConfig,
    ExperimentConfig,
    FalsifierConfig,
    KeepNumbersConfig,
    LoraConfig,
    TeacherConfig,
    TrainConfig,
    load_config,
    parse_config,
)
from traitlab.config.model import (
    MODEL_SPECS,
    HFModel,
    MockModel,
    ModelSpec,
    OpenAIModel,
    ToyModel,
    VLLMModel,
    model_spec,
)

__all__ = [
    "apply_overrides",
    "config_to_dict",
    "config_to_yaml",
    "load_yaml",
    "FrozenConfig",
    "MODEL_SPECS",
    "HFModel",
    "MockModel",
    "ModelSpec",
    "OpenAIModel",
    "ToyModel",
    "VLLMModel",
    "model_spec",
    "EvalConfig",
    "ExperimentConfig",
    "FalsifierConfig",
    "FilterConfig",
    "GenerateConfig",
    "LoraConfig",
    "PromptSetConfig",
    "ControlConfig",
    "DefenceConfig",
    "KeepNumbersConfig",
    "TeacherConfig",
    "TrainConfig",
    "JudgeConfig",
    "TraitConfig",
    "apply_overrides",
    "config_to_dict",
    "config_to_yaml",
    "load_config",
    "load_yaml",
    "parse_config",
    "set_path",
]
