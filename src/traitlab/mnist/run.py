"""`run_mnist` and the theory run's shared start: the MNIST experiment as a run directory.

The main experiment, the sweeps and the chain are cached stages of one run directory, with
its manifest, summary, report and DONE marker (written last). `open_run` checks the device,
the data and the directory before anything is written, and holds the run's lock.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from traitlab.core import runs
from traitlab.core.device import resolve_device
from traitlab.core.progress import stage_bar
from traitlab.mnist.chain import chain_stage
from traitlab.mnist.config import MnistConfig
from traitlab.mnist.data import Digits, load_dataset
from traitlab.mnist.experiment import run_experiment, stage_key, summarize
from traitlab.mnist.report import write_report
from traitlab.mnist.sweeps import sweep_stage


def main_stage(
    cfg: MnistConfig, data: Digits, run_dir: Path, reporter: Any = None
) -> dict[str, Any]:
    """The main experiment as a cached stage `run_dir/main` (results.json, per_model.jsonl)."""
    sdir = Path(run_dir) / "main"
    key = stage_key(cfg, data.fingerprint(), "main")
    cached = runs.stage_done(sdir, key)
    label = f"mnist: {cfg.n_models} models"
    if not cached:
        with stage_bar(reporter, label, False) as upd, runs.stage(sdir, key) as tmp:
            res = run_experiment(cfg, data, progress=upd)
            runs.write_json(tmp / "results.json", res)
            names = list(res["accuracies"])
            runs.write_jsonl(
                tmp / "per_model.jsonl",
                (
                    {"model": k, **{n: res["accuracies"][n][k] for n in names}}
                    for k in range(cfg.n_models)
                ),
            )
    else:
        with stage_bar(reporter, label, True):
            pass
    return runs.read_json(sdir / "results.json")


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages (None where the OS has none): timings depend on them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):  # pragma: no cover - Windows
        return None


@contextlib.contextmanager
def open_run(
    run_dir: Path, cfg: MnistConfig, kind: str, config_passed: Any, extra: dict[str, Any]
) -> Iterator[tuple[Digits, dict[str, Any]]]:
    """Open a run directory: check the device, the data and the directory before touching
    anything, then hold the run's lock, drop the DONE marker and stale temporaries and write
    the manifest. Yields (data, resolved config)."""
    resolve_device(cfg.device)
    data = load_dataset(cfg.data)
    runs.check_output_dir(run_dir, run=True)
    with runs.locked(run_dir):
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        resolved = cfg.model_dump(mode="json")
        runs.begin(
            run_dir,
            kind=kind,
            config_passed=config_passed,
            config_resolved=resolved,
            seeds=[cfg.seed],
            extra={"data": data.describe(), **extra},
        )
        yield data, resolved


def run_mnist(
    cfg: MnistConfig,
    run_dir: str | Path,
    *,
    sweeps: list[str] | None = None,
    chain: int | None = None,
    reporter: Any = None,
    config_passed: Any = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Run the experiment (and sweeps / chain) into `run_dir`; return the summary.

    Stages are cached by content, so a rerun is instant and a killed run resumes. The DONE
    marker is removed at the start and written last.
    """
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    load_start = load_average()
    extra = {"sweeps": sweeps or [], "chain_generations": chain}
    with open_run(run_dir, cfg, "mnist", config_passed, extra) as (data, resolved):
        return _run_mnist(
            cfg, data, resolved, run_dir, sweeps, chain, reporter, plots, t0, load_start
        )


def _run_mnist(
    cfg: MnistConfig,
    data: Digits,
    resolved: dict[str, Any],
    run_dir: Path,
    sweeps: list[str] | None,
    chain: int | None,
    reporter: Any,
    plots: bool,
    t0: float,
    load_start: Any,
) -> dict[str, Any]:
    main = main_stage(cfg, data, run_dir, reporter)
    summary: dict[str, Any] = {
        "kind": "mnist",
        "name": cfg.name,
        "config_hash": runs.stable_hash(resolved),
        "data": data.describe(),
        "n_models": cfg.n_models,
        "seed": cfg.seed,
        "main": {
            **summarize(main, cfg.confidence),
            "seconds": main["seconds"],
            "steps": main["steps"],
            "device": main["device"],
            "threads": main["threads"],
        },
    }
    if sweeps:
        summary["sweeps"] = {
            name: sweep_stage(cfg, data, name, run_dir, reporter) for name in sweeps
        }
    if chain:
        summary["chain"] = chain_stage(cfg, data, chain, run_dir, reporter)
    summary["timing"] = {"total_seconds": round(time.perf_counter() - t0, 3)}
    summary["machine"] = {
        **runs.machine_info(),
        "load_average": {"start": load_start, "end": load_average()},
    }
    if plots:
        summary["report"] = write_report(run_dir, summary, cfg)
    runs.write_json(run_dir / "summary.json", summary)
    runs.mark_done(run_dir, runs.stable_hash(summary))
    return summary
