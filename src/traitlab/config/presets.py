"""The experiment presets packaged with traitlab (`traitlab config --show NAME`)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from traitlab.core.errors import TraitlabError

PRESETS = (
    "demo",
    "demo-quick",
    "demo-llama",
    "demo-llama-quick",
    "demo-misalignment",
    "demo-code",
    "demo-cot",
)


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise TraitlabError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return Path(str(resources.files("traitlab") / "presets" / f"{name}.yaml"))
