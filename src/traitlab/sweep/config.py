"""The sweep file: an experiment, the cells to run it as, and how to run them.

A sweep is one experiment config (a YAML file, or a packaged preset) run as several cells.
Each cell is that config with field overrides: the explicit `cells`, each crossed with every
combination of the `grid`, all with `set` applied first. Each cell is validated as an
`ExperimentConfig` before anything runs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from traitlab.config.base import NAME_PATTERN, FrozenConfig


class CellConfig(FrozenConfig):
    """One explicit cell: a label and its overrides."""

    label: str = Field(pattern=NAME_PATTERN, description="The cell's name (its directory).")
    set: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the experiment's fields, by dotted path (e.g. student.lr: 1.0e-4, defences: [{name: shuffle_within}]).",
    )


class RayConfig(FrozenConfig):
    """Where a `ray` executor runs."""

    address: str | None = Field(
        None,
        description="A running cluster's address (e.g. ray://head:10001 or auto); null starts a local cluster with `cpus`.",
    )
    cpus: int | None = Field(
        None, ge=1, description="CPUs of the local cluster started when address is null."
    )


class SweepConfig(FrozenConfig):
    """A grid or list of experiments that share their cached stages."""

    name: str = Field("sweep", pattern=NAME_PATTERN, description="The sweep's name.")
    experiment: str = Field(
        "demo-quick",
        description="The experiment: a YAML path (relative to the sweep file) or a packaged preset name (demo, demo-quick).",
    )
    set: dict[str, Any] = Field(
        default_factory=dict, description="Overrides applied to every cell, by dotted path."
    )
    cells: list[CellConfig] = Field(
        default_factory=list,
        description="Explicit cells (empty: one cell, the experiment as it is); each is crossed with the grid.",
    )
    grid: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Dotted field path -> values; every combination is a cell (crossed with `cells`).",
    )
    seeds: list[int] | None = Field(
        None, min_length=1, description="Every cell's seeds (null: the experiment's)."
    )
    baseline: str | None = Field(
        None,
        description="The label of the undefended cell: every other cell's removal (1 - its diff / the baseline's) and utility cost are measured against it.",
    )
    matrix: bool = Field(
        False,
        description="Fit the cross-model matrix (lift = mu + row + col + gamma * 1[shared init]) over the cells' (model, cross_init) pairs.",
    )
    executor: Literal["local", "ray"] = Field(
        "local", description="local: a pool of processes on this machine; ray: Ray tasks."
    )
    workers: int = Field(
        1, ge=1, le=4096, description="Cells run at once (local executor; Ray schedules by cpus)."
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="torch threads per cell (null: 1 when cells run side by side, else torch's default).",
    )
    ray: RayConfig = Field(default_factory=RayConfig, description="The Ray executor's cluster.")
    store: str | None = Field(
        None,
        description="The shared stage store (null: <out>/stages). On Ray across machines it must be on a file system every node sees.",
    )

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        labels = [c.label for c in self.cells]
        if len(set(labels)) != len(labels):
            raise ValueError("cell labels must be distinct")
        for k, v in self.grid.items():
            if not v:
                raise ValueError(f"grid '{k}' has no values")
        return self
