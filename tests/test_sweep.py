"""`traitlab sweep`: cells, the shared stage store, resume, Ray, the table and the report."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from htmlparse import Tables
from traitlab.cli.main import main
from traitlab.config import parse_config
from traitlab.core.errors import TraitlabError
from traitlab.core.stats import ratio_ci
from traitlab.core.store import StageStore, shared
from traitlab.sweep import SweepConfig, run_sweep
from traitlab.sweep.cells import baselines, expand
from traitlab.sweep.table import add_removal

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
FAST = {"cross_init": None, "seeds": [0]}


def _sweep(**kw: object) -> SweepConfig:
    return parse_config({"experiment": TINY, "set": FAST, **kw}, SweepConfig)


def _table(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_cells_cross_explicit_cells_with_the_grid() -> None:
    s = _sweep(
        cells=[
            {"label": "none"},
            {"label": "within", "set": {"defences": [{"name": "shuffle_within"}]}},
        ],
        grid={"student.lr": [1e-4, 3e-4]},
        baseline="none",
    )
    cells = expand(s)
    assert [c.label for c in cells] == [
        "none-lr_0.0001",
        "none-lr_0.0003",
        "within-lr_0.0001",
        "within-lr_0.0003",
    ]
    assert (
        cells[3].config.student.lr == 3e-4 and cells[3].config.defences[0].name == "shuffle_within"
    )
    assert cells[0].config.cross_init is None and cells[0].config.seeds == [0]
    # Each cell is measured against the baseline cell with the same grid values.
    assert baselines(cells, "none")["within-lr_0.0003"] == "none-lr_0.0003"


def test_bad_sweeps_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(TraitlabError, match="sweep cell 'bad'.*student.lr"):
        expand(_sweep(cells=[{"label": "bad", "set": {"student.lr": -1}}]))
    with pytest.raises(TraitlabError, match="baseline 'nope'"):
        expand(_sweep(cells=[{"label": "a"}], baseline="nope"))
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"experiment": TINY, "grid": {"student.lrr": [1]}}))
    out = tmp_path / "out"
    assert main(["sweep", str(f), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown field 'student.lrr'" in err
    assert not out.exists()  # nothing written


def test_ratio_ci_is_fieller() -> None:
    r, lo, hi = ratio_ci([1.0, 1.1, 0.9], [2.0, 2.1, 1.9])
    assert r == pytest.approx(0.5) and lo < 0.5 < hi
    # Denominator indistinguishable from zero: the interval is unbounded.
    assert ratio_ci([1.0, 0.0, -1.0], [1.0, -1.0, 0.5])[1:] == (None, None)


def _summary(diffs: dict[str, float], util: dict[str, float] | None = None) -> dict:
    ctrl = {s: 0.05 for s in diffs}
    arms = {
        "control": {"exact": {"mean": 0.05, "per_seed": ctrl}},
        "treatment": {"exact": {"mean": 0.05, "per_seed": {s: 0.05 + d for s, d in diffs.items()}}},
    }
    if util:
        arms["control"]["utility"] = util
        arms["treatment"]["utility"] = util
    return {"verdict": {"method": "exact"}, "arms": arms}


def test_removal_and_utility_cost_against_the_baseline() -> None:
    base = _summary({"0": 0.02, "1": 0.03, "2": 0.025}, {"heldout_loss": 2.0, "pass_rate": 0.9})
    half = _summary({"0": 0.01, "1": 0.015, "2": 0.0125})
    half["arms"]["treatment"]["utility"] = {"heldout_loss": 2.1, "pass_rate": 0.85}
    results = {"none": {"summary": base}, "d": {"summary": half}}
    rows = [{"cell": "none"}, {"cell": "d"}]
    add_removal(rows, results, {"none": "none", "d": "none"})
    assert "removal" not in rows[0]
    assert rows[1]["removal"] == pytest.approx(0.5)
    assert rows[1]["removal_lo"] == pytest.approx(0.5) == rows[1]["removal_hi"]  # no noise
    assert rows[1]["utility_loss_rise"] == pytest.approx(0.05)
    assert rows[1]["utility_pass_drop"] == pytest.approx(0.05)


def test_store_makes_a_stage_once_across_concurrent_claims(tmp_path: Path) -> None:
    store = StageStore(tmp_path / "store")
    made = []

    def work(i: int) -> None:
        d = tmp_path / f"run{i}" / "stage"
        with shared(store, "k", [d]) as done:
            if not done:
                time.sleep(0.2)  # the other thread must wait on the key's lock
                made.append(i)
                d.mkdir(parents=True)
                (d / "out.txt").write_text("x")
                (d / "stage.json").write_text(json.dumps({"key": "k", "seconds": 1}))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1
    a, b = (tmp_path / f"run{i}" / "stage" / "out.txt" for i in range(2))
    assert a.read_text() == b.read_text() == "x"
    assert os.stat(a).st_ino == os.stat(b).st_ino  # linked, not copied


def test_sweep_shares_stages_and_writes_table_and_report(tmp_path: Path) -> None:
    s = _sweep(
        name="t",
        set={**FAST, "evaluate": {"utility_prompts": 24}},
        cells=[
            {"label": "none"},
            {"label": "within", "set": {"defences": [{"name": "shuffle_within"}]}},
        ],
        baseline="none",
        workers=2,
    )
    out = tmp_path / "sweep"
    summary = run_sweep(s, out)
    rows = _table(out / "table.csv")
    assert [r["cell"] for r in rows] == ["none", "within"]
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    if pq is not None:  # the same table as Parquet, numbers as numbers
        t = pq.read_table(out / "table.parquet").to_pylist()
        assert [r["cell"] for r in t] == ["none", "within"]
        assert t[1]["diff"] == pytest.approx(float(rows[1]["diff"]))
    assert all(r["status"] == "ok" and float(r["treatment_heldout_loss"]) > 0 for r in rows)
    assert rows[1]["baseline"] == "none"
    # The two cells share the teacher and both generations: made once, linked twice.
    t0, t1 = (out / "cells" / c / "seed-0" / "teacher" / "stage.json" for c in ("none", "within"))
    assert os.stat(t0).st_ino == os.stat(t1).st_ino
    # ... but each arm keeps its own students.
    s0, s1 = (
        out / "cells/none/seed-0" / f"student-{a}" / "stage.json" for a in ("control", "treatment")
    )
    assert os.stat(s0).st_ino != os.stat(s1).st_ino
    assert json.loads(s0.read_text())["key"] != json.loads(s1.read_text())["key"]
    assert summary["timing"]["saved_seconds"] > 0
    page = (out / "report.html").read_text()
    parser = Tables()
    parser.feed(page)
    assert parser.tables >= 1 and parser.scripts == 0
    assert {"none", "within"} <= set(parser.cells)
    # A finished sweep reruns instantly, with the same table.
    before = (out / "table.csv").read_text()
    t = time.time()
    run_sweep(s, out)
    assert time.time() - t < 5 and (out / "table.csv").read_text() == before


def test_failed_cell_is_a_row_and_the_sweep_stops_with_one_line(tmp_path: Path) -> None:
    s = _sweep(
        cells=[{"label": "ok"}, {"label": "empty", "set": {"filter.max_value": 0}}],
    )
    with pytest.raises(TraitlabError, match="1 of 2 cells failed \\(empty\\)"):
        run_sweep(s, tmp_path / "s")
    rows = {r["cell"]: r for r in _table(tmp_path / "s" / "table.csv")}
    assert rows["ok"]["status"] == "ok" and rows["empty"]["status"] == "failed"
    assert "passed the filter" in rows["empty"]["error"]
    assert not (tmp_path / "s" / "DONE").exists()


def test_killed_sweep_resumes_to_the_same_table(tmp_path: Path) -> None:
    spec = {
        "name": "k",
        "experiment": TINY,
        "set": FAST,
        "grid": {"student.lr": [1e-4, 2e-4, 3e-4]},
    }
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(spec))
    whole = tmp_path / "whole"
    assert main(["sweep", str(f), "--out", str(whole), "--quiet"]) == 0
    cut = tmp_path / "cut"
    cmd = [sys.executable, "-m", "traitlab", "sweep", str(f), "--out", str(cut), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (cut / "cells" / "lr_0.0001" / "DONE").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert not (cut / "DONE").exists()
    assert main(["sweep", str(f), "--out", str(cut), "--quiet"]) == 0

    def results(p: Path) -> list[dict[str, str]]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in _table(p / "table.csv")]

    assert results(cut) == results(whole)


def test_sweep_on_a_local_ray_cluster(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    s = _sweep(grid={"student.lr": [1e-4, 3e-4]}, executor="ray", ray={"cpus": 2})
    try:
        summary = run_sweep(s, tmp_path / "r")
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert [r["status"] for r in summary["cells"]] == ["ok", "ok"]
    assert summary["executor"] == "ray"
    local = run_sweep(s.model_copy(update={"executor": "local"}), tmp_path / "l")
    keep = ("cell", "control", "treatment", "diff")
    assert [{k: r[k] for k in keep} for r in summary["cells"]] == [
        {k: r[k] for k in keep} for r in local["cells"]
    ]
    assert np.isfinite([r["control"] for r in summary["cells"]]).all()


def test_matrix_fit_recovers_gamma() -> None:
    from traitlab.sweep.matrix import fit

    rng = np.random.default_rng(0)
    row = {"a": 0.01, "b": -0.005, "c": 0.0}
    col = {"a": 0.0, "b": 0.004, "c": -0.002}
    obs = {
        (i, j, str(s)): 0.002 + row[i] + col[j] + 0.03 * (i == j) + rng.normal(0, 0.002)
        for i in "abc"
        for j in "abc"
        for s in range(4)
    }
    m = fit(obs)
    g = m["gamma"]
    assert g["lower"] < 0.03 < g["upper"] and g["p_value"] < 1e-6
    assert m["matrix"]["a"]["a"] > m["matrix"]["a"]["b"]


def test_matrix_sweep_fills_the_matrix_from_cells(tmp_path: Path) -> None:
    tiny_base = {
        "n_layers": 1,
        "hidden_size": 32,
        "n_heads": 2,
        "intermediate_size": 64,
        "pretrain_steps": 120,
        "batch_size": 16,
        "warmup_steps": 5,
    }
    cells = [
        {
            "label": f"t{i}-s{j}",
            "set": {
                "model": {"name": "toy", "toy": {**tiny_base, "seed": i}},
                "cross_init": {"name": "toy", "toy": {**tiny_base, "seed": j}},
            },
        }
        for i, j in ((1, 2), (2, 3), (3, 1))
    ]
    s = parse_config(
        {
            "experiment": TINY,
            "set": {"seeds": [0, 1]},
            "cells": cells,
            "matrix": True,
            "workers": 2,
        },
        SweepConfig,
    )
    summary = run_sweep(s, tmp_path / "m")
    m = summary["matrix"]
    assert m["bases"] == ["toy-1", "toy-2", "toy-3"] and m["n"] == 12
    assert set(m["matrix"]["toy-1"]) == {"toy-1", "toy-2"}
    assert m["gamma"] is not None and m["gamma"]["dof"] == 6
    assert "cross-model matrix" in (tmp_path / "m" / "report.html").read_text()


def test_pool_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    """A killed sweep leaves no worker behind, finishing a cell and holding its lock."""
    script = tmp_path / "pool.py"
    script.write_text(
        "import os, time, multiprocessing as mp\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from traitlab.core.parallel import ignore_sigint\n"
        "def work(x):\n    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    with ProcessPoolExecutor(2, mp_context=mp.get_context('spawn'), "
        "initializer=ignore_sigint) as p:\n"
        "        fs = [p.submit(work, i) for i in range(2)]\n"
        "        time.sleep(4)\n"
        "        print(' '.join(str(q.pid) for q in p._processes.values()), flush=True)\n"
        "        os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    pids = [int(x) for x in out.stdout.split()]
    assert len(pids) == 2
    time.sleep(1)

    def running(pid: int) -> bool:  # a zombie (dead, not yet reaped by init) is not running
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
        except (FileNotFoundError, IndexError):
            return False

    assert not any(running(p) for p in pids)


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "sweeps").glob("*.yaml")))
def test_committed_sweeps_expand(path: Path) -> None:
    """Every committed sweep names an experiment that exists and expands into valid cells;
    the sweeps whose README results were measured on the Llama demo still run on it."""
    sweep = parse_config(yaml.safe_load(path.read_text()), SweepConfig)
    assert expand(sweep, path.parent)
    if sweep.experiment.startswith("demo"):
        assert sweep.experiment.startswith("demo-llama"), f"{path.name}: measured on demo-llama"
