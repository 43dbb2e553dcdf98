"""`run_sweep`: every cell of a sweep into `<out>/cells/<label>`, then the table and report.

Everything that can be checked is checked before anything is written: the sweep file, every
cell's experiment config, the output directory. The sweep holds its directory's lock; its
cells share the stage store; finished cells are read back, so a killed sweep resumes and a
finished one reruns instantly. A cell that fails (say its data is empty after filtering) is
a row with its error; the other cells still run, and the sweep then stops with one line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from traitlab.config import config_to_dict
from traitlab.core import runs
from traitlab.core.errors import TraitlabError
from traitlab.sweep import matrix, report, table
from traitlab.sweep.cells import Cell, baselines, expand
from traitlab.sweep.config import SweepConfig
from traitlab.sweep.execute import Task, cell_threads, execute


def cell_configs(sweep: SweepConfig, cells: list[Cell]) -> dict[str, Any]:
    """label -> the resolved config each cell runs: side by side, one process per cell."""
    side_by_side = sweep.workers > 1 or sweep.executor == "ray"
    out = {}
    for c in cells:
        cfg = c.config
        if side_by_side:
            cfg = cfg.model_copy(update={"workers": 1, "threads": cell_threads(sweep)})
        out[c.label] = config_to_dict(cfg)
    return out


def run_sweep(
    sweep: SweepConfig,
    out: str | Path,
    *,
    sweep_dir: Path | None = None,
    log: Callable[[str], None] = lambda _m: None,
    config_passed: Any = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run (or resume) a sweep into `out`; returns its summary (also summary.json)."""
    out = Path(out)
    cells = expand(sweep, sweep_dir)
    configs = cell_configs(sweep, cells)
    resolved = {"sweep": config_to_dict(sweep), "cells": configs}
    chash = runs.stable_hash(resolved)
    runs.check_output_dir(out, run=True, overwrite=overwrite)
    with runs.locked(out):
        if runs.finished(out, chash, "summary.json"):
            log(f"already finished: {out}")
            return runs.read_json(out / "summary.json")
        t0 = time.time()
        runs.begin(
            out,
            kind="sweep",
            config_passed=config_passed,
            config_resolved=resolved,
            seeds=sorted({s for c in configs.values() for s in c["seeds"]}),
        )
        store = Path(sweep.store) if sweep.store else out / "stages"
        results: dict[str, Any] = {}
        tasks: list[Task] = []
        for c in cells:
            d = out / "cells" / c.label
            if runs.finished(d, runs.stable_hash(configs[c.label]), "summary.json"):
                s = runs.read_json(d / "summary.json")
                results[c.label] = {"summary": s, "seconds": s["timing"]["total_seconds"]}
            else:
                tasks.append((c.label, configs[c.label], str(d)))
        if results:
            log(f"{len(results)} of {len(cells)} cells already finished; running {len(tasks)}")
        results.update(execute(tasks, sweep, store, log))
        summary = _finish(sweep, cells, results, out, time.time() - t0)
        failed = [r["cell"] for r in summary["cells"] if r["status"] != "ok"]
        if failed:
            first = next(r["error"] for r in summary["cells"] if r["status"] != "ok")
            raise TraitlabError(
                f"{len(failed)} of {len(cells)} cells failed ({', '.join(failed)}); the first: "
                f"{first}. Fix it and rerun: finished cells are kept"
            )
        runs.mark_done(out, runs.stable_hash(summary["cells"]))
        return summary


def _finish(
    sweep: SweepConfig, cells: list[Cell], results: dict[str, Any], out: Path, wall: float
) -> dict[str, Any]:
    rows = [table.cell_row(c.label, c.params, results[c.label]) for c in cells]
    if sweep.baseline is not None:
        table.add_removal(rows, results, baselines(cells, sweep.baseline))
    total, unique = table.stage_work([out / "cells" / c.label for c in cells])
    summary = {
        "schema_version": 1,
        "kind": "sweep",
        "name": sweep.name,
        "executor": sweep.executor,
        "baseline": sweep.baseline,
        "grid": dict(sweep.grid),
        "cells": rows,
        "timing": {
            "wall_seconds": round(wall, 1),
            "cell_seconds": round(sum(r.get("seconds") or 0.0 for r in rows), 1),
            "stage_seconds": round(total, 1),
            "saved_seconds": round(total - unique, 1),
        },
        "machine": runs.machine_info(),
        "files": table.write_tables(rows, out),
    }
    if sweep.matrix:
        summary["matrix"] = matrix.fit(matrix.lifts(cells, results))
    runs.write_json(out / "summary.json", summary)
    runs.atomic_write_text(out / "report.html", report.render(summary, rows))
    return summary
