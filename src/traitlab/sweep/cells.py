"""A sweep file -> its cells: labels, overrides and validated experiment configs."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from traitlab.config import ExperimentConfig, load_yaml, parse_config, set_path
from traitlab.config.presets import PRESETS, preset_path
from traitlab.core.errors import TraitlabError
from traitlab.sweep.config import CellConfig, SweepConfig


@dataclass(frozen=True)
class Cell:
    label: str
    params: dict[str, Any]  # the overrides that make this cell (cell's set and grid values)
    config: ExperimentConfig
    explicit: str  # the label of the explicit cell it comes from
    grid: tuple[tuple[str, Any], ...]  # its grid values


def baselines(cells: list[Cell], baseline: str | None) -> dict[str, str]:
    """cell -> the baseline cell it is measured against: the explicit cell labelled
    `baseline` with the same grid values."""
    if baseline is None:
        return {}
    ref = {repr(c.grid): c.label for c in cells if c.explicit == baseline}
    return {c.label: ref[repr(c.grid)] for c in cells if repr(c.grid) in ref}


def _slug(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    if isinstance(value, (list, dict)):
        # Defence lists and such: their names, not their brackets.
        text = "+".join(re.findall(r"[A-Za-z][A-Za-z_]*|\d+(?:\.\d+)?", str(value))) or "x"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def grid_label(values: dict[str, Any]) -> str:
    """`student.lr: 0.0001, filter.max_rows: 2000` -> 'lr_0.0001-max_rows_2000'."""
    return "-".join(f"{k.rsplit('.', 1)[-1]}_{_slug(v)}" for k, v in values.items())


def experiment_data(sweep: SweepConfig, sweep_dir: Path | None) -> dict[str, Any]:
    """The experiment's YAML as data: a packaged preset, or a path (relative to the sweep)."""
    if sweep.experiment in PRESETS:
        path = preset_path(sweep.experiment)
    else:
        path = Path(sweep.experiment)
        if not path.is_absolute() and sweep_dir is not None:
            path = sweep_dir / path
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise TraitlabError(f"{path}: expected an experiment config (a mapping of fields)")
    return data


def expand(sweep: SweepConfig, sweep_dir: Path | None = None) -> list[Cell]:
    """Every cell of the sweep, validated; one-line errors name the cell and the field."""
    base = experiment_data(sweep, sweep_dir)
    for k, v in sweep.set.items():
        base = set_path(base, k, v)
    if sweep.seeds is not None:
        base = set_path(base, "seeds", list(sweep.seeds))
    explicit = list(sweep.cells) or [CellConfig(label="base")]
    keys = list(sweep.grid)
    combos = list(itertools.product(*(sweep.grid[k] for k in keys))) or [()]
    cells: list[Cell] = []
    for cell in explicit:
        for combo in combos:
            values = dict(zip(keys, combo, strict=True))
            parts = ([cell.label] if sweep.cells else []) + ([grid_label(values)] if keys else [])
            label = "-".join(parts) or cell.label
            params = {**cell.set, **values}
            data = base
            for k, v in params.items():
                data = set_path(data, k, v)
            cfg = parse_config(data, ExperimentConfig, source=f"sweep cell '{label}'")
            cells.append(Cell(label[:100], params, cfg, cell.label, tuple(values.items())))
    labels = [c.label for c in cells]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise TraitlabError(
            f"sweep '{sweep.name}': cells {sorted(dup)} share a label; give the cells distinct labels"
        )
    if sweep.baseline is not None and sweep.baseline not in {c.explicit for c in cells}:
        raise TraitlabError(
            f"sweep '{sweep.name}': baseline '{sweep.baseline}' is not one of the cells' "
            f"labels ({', '.join(c.label for c in sweep.cells)}); name one of them"
        )
    return cells
