"""The robustness benchmark end to end on the seconds-long tiny config.

Its numbers are meaningless at this size (the tiny bases barely learn); what is checked is
that fresh bases are really pretrained from the requested seeds, that each row is the run's
own summary and that the pooling is a weighted mean of those rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench_robustness():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_robustness

        yield bench_robustness
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_robustness_benchmark_on_tiny_config(tmp_path: Path, bench_robustness) -> None:  # type: ignore[no-untyped-def]
    before = sorted((ROOT / "benchmarks" / "results").iterdir())
    res = bench_robustness.main(
        [
            "--config",
            str(ROOT / "configs" / "tiny.yaml"),
            "--bases",
            "2",
            "--first",
            "3001",
            "--out",
            str(tmp_path),
            "--no-write",
            "--quiet",
        ]
    )
    # --no-write leaves the committed results alone.
    assert sorted((ROOT / "benchmarks" / "results").iterdir()) == before

    rows = res["bases"]
    assert [(r["base_seed"], r["cross_init_seed"]) for r in rows] == [(3001, 3501), (3002, 3502)]
    for r in rows:
        run_dir = tmp_path / f"base-{r['base_seed']}"
        assert (run_dir / "DONE").is_file()
        manifest = json.loads((run_dir / "manifest.json").read_text())
        resolved = manifest["config_resolved"]
        assert resolved["model"]["toy"]["seed"] == r["base_seed"]
        assert resolved["cross_init"]["toy"]["seed"] == r["cross_init_seed"]
        summary = json.loads((run_dir / "summary.json").read_text())
        exact = summary["comparisons"]["treatment_vs_control"]["exact"]
        assert r["diff"] == pytest.approx(exact["diff"]["mean"])
        assert r["p_value"] == pytest.approx(exact["p_value"])
        assert r["xinit_diff"] is not None
        assert 0.0 <= r["teacher_pass_rate"] <= 1.0 and r["rows_kept"] > 0

    # Two different fresh bases: different starting points, so different base rates.
    assert rows[0]["base"] != rows[1]["base"]

    pool = res["pooled"]["random_effects"]
    diffs = [r["diff"] for r in rows]
    assert pool["n"] == 2
    assert min(diffs) - 1e-12 <= pool["mean"]["mean"] <= max(diffs) + 1e-12
    assert pool["mean"]["lower"] <= pool["mean"]["mean"] <= pool["mean"]["upper"]
    assert len(res["table"]) >= 2 + len(rows) + 2


def test_audit_benchmark_on_tiny_bases(tmp_path: Path) -> None:
    """The audit benchmark end to end on tiny bases (two datasets, meaningless numbers): each
    dataset is audited, and the summary's AUROC is the rank statistic of the saved scores."""
    import subprocess

    out = tmp_path / "audit"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_audit.py"),
            "--out",
            str(out),
            "--tiny",
            "--workers",
            "1",
            "--only",
            "ft-owl",
            "own-1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "audit-bench.json").read_text())
    assert [d["name"] for d in res["datasets"]] == ["ft-owl", "own-1"]
    for det in ("canary", "screen", "icl", "prompted"):
        pos = res["datasets"][0][det]["z"]
        neg = res["datasets"][1][det]["z"]
        want = 1.0 if pos > neg else 0.0 if pos < neg else 0.5
        assert res["detectors"][det]["all"]["auroc"] == want
    assert "| canary | discovery |" in (out / "audit-bench.md").read_text()
