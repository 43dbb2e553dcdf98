"""Canary students: what the data does to a copy of the base, against what the base's own
answers do. No teacher is needed.

For each canary seed, one copy of the base is fine-tuned on the data and one on the
reference (same rows count, same data-order seed, same settings) through the backend's
`Trainer`, and both are probed through its `Scorer`: every option of every probe, every
question. The difference of the two canaries' probabilities is the data's effect on each
option; the seeds give its spread.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from traitlab.audit.config import CanaryConfig
from traitlab.audit.probes import Probe, probe_table
from traitlab.audit.reference import subset
from traitlab.core.files import stable_hash
from traitlab.lm.base import ModelRef, Scorer, Trainer, opened, require

Row = dict[str, Any]


@dataclass
class CanaryResult:
    """Per probe: [seeds, questions, options] tables of the data and reference canaries (and
    of the second reference's, `null`)."""

    probe: str
    options: list[str]
    data: np.ndarray
    reference: np.ndarray
    null: np.ndarray | None = None

    @property
    def diff(self) -> np.ndarray:
        """Per seed, the option's mean probability: data canary - reference canary (with a
        second reference: data - the mean of both)."""
        ref = self.reference if self.null is None else (self.reference + self.null) / 2
        return np.asarray((self.data - ref).mean(axis=1))

    def null_z(self) -> np.ndarray:
        """Per option, the effect (`diff`, mean over seeds) in units of its noise: the two
        references' canaries differ only by the sampling of their data, so their difference
        (S - R) measures it. With sampling noise of variance v per canary, D - (R + S) / 2
        has variance 1.5 v and S - R 2 v; v is pooled over the probe's options (one null
        draw per option is too few to estimate each its own)."""
        assert self.null is not None
        gap = (self.null - self.reference).mean(axis=(0, 1))  # [options]
        v = float(np.mean(gap**2)) / 2
        return self.diff.mean(axis=0) / max(np.sqrt(1.5 * v), 1e-12)


def run_canaries(
    base: ModelRef,
    data: list[Row],
    reference: list[Row],
    probes: Sequence[Probe],
    cfg: CanaryConfig,
    *,
    seed: int = 0,
    work_dir: Path | None = None,
    keep: Path | None = None,
    batch_size: int = 1000,
    progress: Any = None,
    null: list[Row] | None = None,
) -> list[CanaryResult]:
    """Train and probe the canaries on the same `cfg.rows` of data and reference (and of the
    second reference `null`, row for row, when given; picked with `seed`). `keep`: directory
    to save the first data canary into (the per-row scores use it); everything else is
    deleted when done."""
    pick = subset(len(data), cfg.rows, seed)
    sets = {"data": [data[i] for i in pick], "reference": [reference[i] for i in pick]}
    if null is not None:
        sets["null"] = [null[i] for i in pick]
    with opened(base) as lm:  # both capabilities, before the first fine-tune
        require(lm, Scorer, "score answers (the canaries are probed by exact scoring)")
        require(lm, Trainer, "fine-tune (the canaries are short fine-tunes)")
    tabs: dict[str, list[list[np.ndarray]]] = {name: [] for name in sets}
    total = len(sets) * len(cfg.seeds)
    done = 0
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp_name:
        tmp = Path(tmp_name)
        for seed_k in cfg.seeds:
            for name, rows in sets.items():
                out = tmp / f"{name}-{seed_k}"
                out.mkdir()
                with opened(base) as lm:
                    key = stable_hash(
                        ["canary", base.key, name, seed_k, cfg.train.model_dump(mode="json")]
                    )
                    ref, _ = lm.finetune(rows, cfg.train, seed=seed_k, out_dir=out, key=key)
                with opened(ref) as canary:
                    tabs[name].append([probe_table(canary, p, batch_size) for p in probes])
                if keep is not None and name == "data" and seed_k == cfg.seeds[0]:
                    shutil.copytree(out, keep, dirs_exist_ok=True)
                done += 1
                if progress is not None:
                    progress(done / total)
    return [
        CanaryResult(
            p.name,
            p.option_names,
            np.stack([t[j] for t in tabs["data"]]),
            np.stack([t[j] for t in tabs["reference"]]),
            np.stack([t[j] for t in tabs["null"]]) if null is not None else None,
        )
        for j, p in enumerate(probes)
    ]
