"""Running a sweep's cells: a local pool of processes, or Ray tasks.

A cell is one `run_experiment` into `<out>/cells/<label>`, with the sweep's stage store, so
a teacher or a dataset that two cells need is made once (the store's per-key lock makes the
second cell wait for the first and then link its result). The experiment's own caching makes
a killed sweep resume: finished cells are read back without starting anything, and a cell
that was cut short redoes only its unfinished stages.

Ray is used as a task runner only (no scheduler of ours): each cell is a `ray.remote` task
asking for `threads` CPUs. Across machines the output directory and the store must be on a
file system every node sees.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from traitlab.core.errors import TraitlabError
from traitlab.core.parallel import ignore_sigint
from traitlab.sweep.config import SweepConfig

Task = tuple[str, dict[str, Any], str]  # label, the cell's resolved config, its directory


def run_cell(cfg_json: dict[str, Any], cell_dir: str, store: str, threads: int | None) -> Any:
    """One cell, in whichever process the executor chose: {'summary'} or {'error'}."""
    # Idle OpenMP threads busy-wait by default (see cli.main); set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from traitlab.config import parse_config
    from traitlab.core.store import StageStore
    from traitlab.experiments.pipeline import run_experiment

    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    try:
        cfg = parse_config(cfg_json)
        summary = run_experiment(cfg, Path(cell_dir), store=StageStore(Path(store)))
    except TraitlabError as e:
        return {"error": str(e), "seconds": time.time() - t0}
    return {"summary": summary, "seconds": time.time() - t0}


def _local(tasks: list[Task], store: str, workers: int, threads: int | None) -> Iterator[Any]:
    if workers == 1:
        for label, cfg, d in tasks:
            yield label, run_cell(cfg, d, store, threads)
        return
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=ignore_sigint) as pool:
        futs = {pool.submit(run_cell, cfg, d, store, threads): label for label, cfg, d in tasks}
        for f in as_completed(futs):
            yield futs[f], f.result()


def _ray(tasks: list[Task], store: str, sweep: SweepConfig, threads: int | None) -> Iterator[Any]:
    try:
        import ray
    except ImportError:
        raise TraitlabError(
            "executor 'ray' needs Ray: pip install 'traitlab[ray]' (or pip install ray)"
        ) from None
    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False}
        if sweep.ray.address:
            ray.init(address=sweep.ray.address, log_to_driver=False)
        else:
            ray.init(num_cpus=sweep.ray.cpus, **kw)
        started = True
    try:
        remote = ray.remote(num_cpus=threads or 1, max_retries=0)(run_cell)
        refs = {remote.remote(cfg, d, store, threads): label for label, cfg, d in tasks}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield refs[done[0]], ray.get(done[0])
    finally:
        if started:
            ray.shutdown()


def cell_threads(sweep: SweepConfig) -> int | None:
    """torch threads per cell: the sweep's, else 1 when cells run side by side."""
    side_by_side = sweep.workers > 1 or sweep.executor == "ray"
    return sweep.threads or (1 if side_by_side else None)


def execute(
    tasks: list[Task],
    sweep: SweepConfig,
    store: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Run `tasks` with the sweep's executor; label -> {'summary' | 'error', 'seconds'}."""
    out: dict[str, Any] = {}
    if not tasks:
        return out
    threads = cell_threads(sweep)
    if sweep.executor == "ray":
        results = _ray(tasks, str(store), sweep, threads)
    else:
        results = _local(tasks, str(store), sweep.workers, threads)
    for label, res in results:
        out[label] = res
        state = f"failed: {res['error']}" if "error" in res else "done"
        log(f"cell {label}: {state} ({res['seconds']:.0f} s; {len(out)}/{len(tasks)})")
    return out
