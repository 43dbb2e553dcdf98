"""Where things run and where cached models live: devices, dtypes, the cache directory."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from traitlab.core.errors import TraitlabError


def cache_dir() -> Path:
    """Where pretrained toy models live: $TRAITLAB_CACHE, else ~/.cache/traitlab."""
    return Path(os.environ.get("TRAITLAB_CACHE") or Path.home() / ".cache" / "traitlab")


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")


def resolve_device(name: str = "auto") -> Any:
    """A torch device for 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'; one-line errors."""
    import torch

    if not _DEVICE.match(name):
        raise TraitlabError(f"device '{name}': use auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TraitlabError(
                f"device '{name}' asked for, but no CUDA GPU is visible; use device: cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TraitlabError(
                f"device '{name}': only {torch.cuda.device_count()} CUDA device(s) visible"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise TraitlabError(f"device '{name}' asked for, but MPS is not available; use cpu")
    return dev


def resolve_dtype(name: str, device: Any) -> Any:
    import torch

    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
