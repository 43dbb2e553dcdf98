"""The MNIST auxiliary-logit experiment (Cloud et al. 2025, section 6) and Theorem 1 checks.

from traitlab.mnist import MnistConfig, load_dataset, run_experiment, run_mnist
cfg = MnistConfig(n_models=20)
data = load_dataset(cfg.data)             # embedded scikit-learn digits
res = run_experiment(cfg, data)           # per-model accuracies per condition
summary = run_mnist(cfg, "runs/mnist")    # run directory with report and plots
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MnistConfig": "config",
    "PRESETS": "config",
    "load_mnist_config": "config",
    "Digits": "data",
    "load_dataset": "data",
    "read_idx": "data",
    "write_idx": "data",
    "BatchedMLP": "batched",
    "Streams": "batched",
    "accuracy": "batched",
    "distill": "batched",
    "train_classifier": "batched",
    "run_experiment": "experiment",
    "run_mnist": "run",
    "summarize": "experiment",
    "sweep_stage": "sweeps",
    "run_chain": "chain",
    "half_life": "chain",
    "run_theory": "theory_check",
    "theory_run": "theory_check",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"traitlab.mnist.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'traitlab.mnist' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
