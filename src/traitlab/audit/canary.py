"""Canary students: what the data does to a copy of the base, against what the base's own
answers do. No teacher is needed.

For each canary seed, one copy of the base is fine-tuned on the data and one on the
reference (same rows count, same data-order seed, same settings) through the backend's
`Trainer`, and both are probed through its `Scorer`: every option of every probe, every
question. The difference of the two canaries' probabilities is the data's effect on each
option; the seeds give its spread.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from traitlab.audit.config import CanaryConfig
from traitlab.audit.probes import Probe, probe_table
from traitlab.core.files import stable_hash
from traitlab.lm.base import ModelRef, Scorer, Trainer, opened, require

Row = dict[str, Any]


@dataclass
class CanaryResult:
    """Per probe: [seeds, questions, options] tables of the data and reference canaries."""

    probe: str
    options: list[str]
    base: np.ndarray  # [questions, options]
    data: np.ndarray
    reference: np.ndarray

    @property
    def diff(self) -> np.ndarray:
        """Per seed, the option's mean probability: data canary - reference canary."""
        return np.asarray((self.data - self.reference).mean(axis=1))


def run_canaries(
    base: ModelRef,
    data: list[Row],
    reference: list[Row],
    probes: Sequence[Probe],
    cfg: CanaryConfig,
    *,
    work_dir: Path | None = None,
    keep: Path | None = None,
    batch_size: int = 1000,
    progress: Any = None,
) -> list[CanaryResult]:
    """Train and probe the canaries. `keep`: directory to save the first data canary into
    (the per-row scores use it); everything else is deleted when done."""
    n = len(data) if cfg.rows is None else min(cfg.rows, len(data))
    rng = np.random.default_rng(stable_hash(["canary-rows", n, len(data)], 8).encode()[0])
    pick = np.sort(rng.permutation(len(data))[:n])
    sets = {"data": [data[i] for i in pick], "reference": [reference[i] for i in pick]}
    with opened(base) as lm:
        require(lm, Scorer, "score answers (the canaries are probed by exact scoring)")
        base_tabs = [probe_table(lm, p, batch_size) for p in probes]
    tabs: dict[str, list[list[np.ndarray]]] = {"data": [], "reference": []}
    total = 2 * len(cfg.seeds)
    done = 0
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=work_dir)))
        for seed in cfg.seeds:
            for name, rows in sets.items():
                out = tmp / f"{name}-{seed}"
                out.mkdir()
                with opened(base) as lm:
                    require(lm, Trainer, "fine-tune (the canaries are short fine-tunes)")
                    key = stable_hash(
                        ["canary", base.key, name, seed, cfg.train.model_dump(mode="json")]
                    )
                    ref, _ = lm.finetune(rows, cfg.train, seed=seed, out_dir=out, key=key)
                with opened(ref) as canary:
                    tabs[name].append([probe_table(canary, p, batch_size) for p in probes])
                if keep is not None and name == "data" and seed == cfg.seeds[0]:
                    shutil.copytree(out, keep, dirs_exist_ok=True)
                done += 1
                if progress is not None:
                    progress(done / total)
    return [
        CanaryResult(
            p.name,
            p.option_names,
            base_tabs[j],
            np.stack([t[j] for t in tabs["data"]]),
            np.stack([t[j] for t in tabs["reference"]]),
        )
        for j, p in enumerate(probes)
    ]
