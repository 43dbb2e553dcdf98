"""End to end on tiny toy models: every stage, the run directory, rerun and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from traitlab.config import load_config
from traitlab.core.errors import TraitlabError
from traitlab.experiments.pipeline import run_experiment

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def _numbers(summary: dict) -> dict:
    """The scientific content of a summary (timings differ between runs)."""
    return {k: v for k, v in summary.items() if k != "timing"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    # The same cache as the autouse fixture in conftest.py (module fixtures run before it).
    os.environ["TRAITLAB_CACHE"] = str(tmp_path_factory.getbasetemp() / "traitlab-cache")
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    summary = run_experiment(load_config(TINY), run_dir)
    return run_dir, summary


def test_run_directory_layout(tiny_run: tuple[Path, dict]) -> None:
    run_dir, summary = tiny_run
    for name in [
        "manifest.json",
        "summary.json",
        "report.md",
        "report.html",
        "trait_rates.png",
        "DONE",
    ]:
        assert (run_dir / name).is_file(), name
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config_resolved"]["name"] == "tiny"
    assert manifest["seeds"] == [0, 1] and manifest["packages"]["torch"]
    # The report says where the owl's shift ranks among every option's, for both pairs.
    from traitlab.experiments.report import option_line

    report = (run_dir / "report.md").read_text()
    assert report.count("every option (exact): owl") == 2
    line = option_line("treatment - control", summary["option_shifts"]["treatment_vs_control"])
    assert line in report and " of 20 (z = " in line
    for seed in (0, 1):
        s = run_dir / f"seed-{seed}"
        assert (s / "teacher" / "model.safetensors").is_file()
        for which in ("teacher", "control"):
            assert (s / f"gen-{which}" / "raw.jsonl").is_file()
            assert (s / f"data-{which}" / "filtered.jsonl").is_file()
            assert (s / f"data-{which}" / "rejected.jsonl").is_file()
        for arm in ("treatment", "control", "xinit_treatment", "xinit_control"):
            assert (s / f"student-{arm}" / "config.json").is_file()
            assert (s / f"eval-{arm}" / "eval.json").is_file()
    # Filtered rows are plain chat rows; raw rows keep what the model wrote.
    row = json.loads(
        (run_dir / "seed-0" / "data-teacher" / "filtered.jsonl").read_text().splitlines()[0]
    )
    assert list(row) == ["messages"] and [m["role"] for m in row["messages"]] == [
        "user",
        "assistant",
    ]


def test_summary_content(tiny_run: tuple[Path, dict]) -> None:
    _, summary = tiny_run
    assert set(summary["arms"]) == {
        "base",
        "teacher",
        "control",
        "treatment",
        "xinit_base",
        "xinit_control",
        "xinit_treatment",
    }
    for arm in summary["arms"].values():
        for m in ("exact", "sampled"):
            assert 0.0 <= arm[m]["mean"] <= 1.0
            assert arm[m]["ci"]["lower"] <= arm[m]["mean"] <= arm[m]["ci"]["upper"]
    tc = summary["comparisons"]["treatment_vs_control"]["exact"]
    assert tc["n"] == 2 and tc["seeds"] == [0, 1]
    assert "transfer" in summary["verdict"]
    # The fine-tuned teacher moved towards the target.
    assert summary["arms"]["teacher"]["exact"]["mean"] > summary["arms"]["base"]["exact"]["mean"]
    # Every option's shift is the difference of the arms' seed-averaged option rates.
    shifts = summary["option_shifts"]["treatment_vs_control"]
    t, c = summary["arms"]["treatment"], summary["arms"]["control"]
    for k, v in shifts["shifts"].items():
        assert v == pytest.approx(t["exact_options"][k] - c["exact_options"][k], abs=1e-12)
    assert shifts["target_shift"] == pytest.approx(tc["diff"]["mean"], abs=1e-12)
    assert set(summary["option_shifts"]) == {
        "treatment_vs_control",
        "xinit_treatment_vs_xinit_control",
    }


def test_option_shifts_rank_the_target_among_every_option() -> None:
    """Rank 1 when the target rose most; per seed too; z against the other options."""
    from traitlab.experiments.compare import option_shifts

    def ev(opts: dict[str, float]) -> dict:
        return {"exact": {"options": opts}}

    evals = {
        "t": {
            0: ev({"owl": 0.30, "dog": 0.40, "cat": 0.30}),
            1: ev({"owl": 0.2, "dog": 0.55, "cat": 0.25}),
        },
        "c": {
            0: ev({"owl": 0.10, "dog": 0.50, "cat": 0.40}),
            1: ev({"owl": 0.1, "dog": 0.4, "cat": 0.5}),
        },
    }
    o = option_shifts(evals, "t", "c", "owl")
    assert o is not None
    # owl: +0.2, +0.1 -> +0.15; dog: -0.1, +0.15 -> +0.025; cat: -0.1, -0.25 -> -0.175.
    assert o["target_shift"] == pytest.approx(0.15)
    assert o["rank"] == 1 and o["rank_per_seed"] == {"0": 1, "1": 2}
    assert o["top_others"][0][0] == "dog" and o["top_others"][0][1] == pytest.approx(0.025)
    assert o["z"] == pytest.approx((0.15 - (-0.075)) / np.std([0.025, -0.175], ddof=1))
    # A target the probe does not hold (or an arm that was not run) gives nothing.
    assert option_shifts(evals, "t", "c", "whale") is None
    assert option_shifts(evals, "t", "missing", "owl") is None


def test_teacher_profile_correlates_the_students_shifts_with_the_teachers() -> None:
    """Per seed, r over the options besides the target between the teacher's log shift from
    the base and the student's from its control; a t over seeds; the same-init - cross-init
    contrast paired by seed."""
    from traitlab.experiments.compare import profile_contrast, teacher_profile

    rng = np.random.default_rng(0)
    keys = ["owl", *(f"o{i}" for i in range(12))]
    base = dict(zip(keys, rng.dirichlet(np.ones(len(keys))), strict=True))

    def ev(logp: dict[str, float]) -> dict:
        z = np.exp(np.array(list(logp.values())))
        return {"exact": {"options": dict(zip(logp, z / z.sum(), strict=True))}}

    lb = {k: float(np.log(v)) for k, v in base.items()}
    evals: dict[str, dict[int, dict]] = {"base": {0: ev(lb)}}
    for arm in ("teacher", "control", "treatment", "xc", "xt"):
        evals[arm] = {}
    for s in range(8):
        push = {k: float(rng.normal()) for k in keys} | {"owl": 3.0}
        evals["teacher"][s] = ev({k: lb[k] + push[k] for k in keys})
        ctrl = {k: lb[k] + 0.02 * float(rng.normal()) for k in keys}
        evals["control"][s] = ev(ctrl)
        # The same-init student takes a tenth of the teacher's push; the cross-init one none.
        evals["treatment"][s] = ev({k: ctrl[k] + 0.1 * push[k] for k in keys})
        evals["xc"][s] = ev(ctrl)
        evals["xt"][s] = ev({k: ctrl[k] + 0.05 * float(rng.normal()) for k in keys})
    same = teacher_profile(evals, "treatment", "control", "owl")
    cross = teacher_profile(evals, "xt", "xc", "owl")
    assert same is not None and cross is not None
    r, slope = same["r"], same["slope"]
    assert same["n_options"] == 12 and len(r["per_seed"]) == 8
    assert r["mean"] > 0.8 and r["p_value"] < 1e-4 and r["n_positive"] == 8
    # The student took a tenth of the push (the control's own noise blurs it a little).
    assert slope["mean"] == pytest.approx(0.1, abs=0.02) and slope["p_value"] < 1e-4
    assert abs(cross["r"]["mean"]) < 0.4 and cross["r"]["p_value"] > 0.01
    assert abs(cross["slope"]["mean"]) < 0.03
    contrast = profile_contrast(
        {"treatment_vs_control": same, "xinit_treatment_vs_xinit_control": cross}
    )
    assert contrast is not None
    assert contrast["r"]["diff"]["mean"] > 0.5 and contrast["r"]["p_value"] < 1e-3
    assert contrast["slope"]["diff"]["mean"] > 0.05 and contrast["slope"]["p_value"] < 1e-3
    # Without a teacher's evaluation (or a target the probe lacks) there is no profile.
    assert (
        teacher_profile(
            {k: v for k, v in evals.items() if k != "teacher"}, "treatment", "control", "owl"
        )
        is None
    )
    assert teacher_profile(evals, "treatment", "control", "whale") is None


def test_rerun_is_instant_and_identical(tiny_run: tuple[Path, dict]) -> None:
    run_dir, summary = tiny_run
    t0 = time.time()
    again = run_experiment(load_config(TINY), run_dir)
    assert again == summary
    assert time.time() - t0 < 5


def _rerun_teacher_kept(run_dir: Path, copy: Path, overrides: list[str]) -> dict:
    """A copy of a finished run rerun with `overrides`: its teacher and the teacher's data are
    cache hits (their stage markers unchanged); returns the new summary."""
    import shutil

    shutil.copytree(run_dir, copy)
    markers = [copy / "seed-0" / d / "stage.json" for d in ("teacher", "gen-teacher")]
    before = [m.read_text() for m in markers]
    summary = run_experiment(load_config(TINY, overrides), copy)
    assert [m.read_text() for m in markers] == before
    return summary


def test_changed_stage_config_reruns_only_downstream(
    tiny_run: tuple[Path, dict], tmp_path: Path
) -> None:
    summary = _rerun_teacher_kept(tiny_run[0], tmp_path / "copy", ["filter.max_rows=20"])
    assert summary["data"]["0"]["teacher"]["n_kept"] <= 20


def test_resume_after_kill_gives_the_same_summary(
    tiny_run: tuple[Path, dict], tmp_path: Path
) -> None:
    _, reference = tiny_run
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "traitlab", "run", str(TINY), "--out", str(run_dir), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = run_dir / "seed-0" / "student-treatment" / "stage.json"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "DONE").exists(), "the run finished before it could be killed"
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert _numbers(resumed) == _numbers(reference)
    assert not list(run_dir.rglob(".*.tmp-*"))


def test_parallel_workers_give_the_same_numbers(
    tiny_run: tuple[Path, dict], tmp_path: Path
) -> None:
    _, reference = tiny_run
    summary = run_experiment(load_config(TINY, ["workers=2"]), tmp_path / "parallel")
    assert _numbers(summary) == _numbers(reference)


GOLDEN = ROOT / "tests" / "golden" / "tiny-summary.json"


def _close(a: object, b: object, path: str = "") -> list[str]:
    """Differences between two summaries: structure exactly, numbers within 5e-4 absolute
    plus 2e-4 relative (other CPUs round fine-tuning differently, and a statistic such as a
    t of 10.9 carries that rounding up: 10.9223 against 10.9231 on another AMD EPYC)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _close(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _close(x, y, f"{path}/{i}")
        ]
    if isinstance(a, float) and isinstance(b, float):
        return [] if abs(a - b) <= 5e-4 + 2e-4 * abs(b) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_the_tiny_summary_matches_its_golden_copy(tiny_run: tuple[Path, dict]) -> None:
    """A pinned summary of configs/tiny.yaml on its shipped bases: refactors must not move a
    number (on the machine that wrote it they are identical; elsewhere within rounding)."""
    _, summary = tiny_run
    golden = json.loads(GOLDEN.read_text())
    got = {k: v for k, v in summary.items() if k != "timing"}
    diffs = _close(got, golden)
    # Counts of kept rows can move by a row where another CPU flips a sampled token.
    diffs = [
        d for d in diffs if "/data/" not in d and "rows_kept" not in d and "kept_share" not in d
    ]
    assert not diffs, diffs[:10]


def test_every_summary_field_is_documented(tiny_run: tuple[Path, dict]) -> None:
    """docs/summary-schema.md names every top-level field of a run's summary, and the fields
    of the per-option blocks, so a new statistic cannot land undocumented."""
    _, summary = tiny_run
    schema = (ROOT / "docs" / "summary-schema.md").read_text()
    missing = [k for k in summary if f"`{k}" not in schema]
    profile = summary["teacher_profile"]["treatment_vs_control"]
    shifts = summary["option_shifts"]["treatment_vs_control"]
    missing += [k for k in [*profile, *profile["slope"], *shifts] if f"`{k}`" not in schema]
    assert not missing, missing


def test_a_neutral_control_teacher_writes_the_controls_data(
    tiny_run: tuple[Path, dict], tmp_path: Path
) -> None:
    """control.teacher neutral: the trait teacher and its data are reused; a control teacher,
    fine-tuned for the steps the teacher kept on the base's own drawn answers, writes the
    control's data instead of the base; the summary and the report say so."""
    run_dir, base_summary = tiny_run
    copy = tmp_path / "neutral"
    summary = _rerun_teacher_kept(run_dir, copy, ["control.teacher=neutral"])
    seed0 = copy / "seed-0"
    teacher = json.loads((seed0 / "teacher" / "stage.json").read_text())["train"]
    control = json.loads((seed0 / "control-teacher" / "stage.json").read_text())
    assert control["train"]["steps"] == teacher["steps"]
    from traitlab.traits.preference import answer_spellings, get_trait

    spellings = {s for o in get_trait("animal").options for s in answer_spellings(o)}
    assert set(control["answers"]) <= spellings and len(control["answers"]) > 1
    rows = lambda d: (d / "gen-control" / "raw.jsonl").read_text()  # noqa: E731
    assert rows(seed0) != rows(run_dir / "seed-0")  # another writer than the base
    assert summary["data_quality"]["control"] == "neutral"
    assert "control" not in base_summary["data_quality"]
    assert "control.teacher: neutral" in (copy / "report.md").read_text()


def test_a_reweighted_control_trains_on_the_treatments_own_rows(tmp_path: Path) -> None:
    """control.teacher reweighted: the control's data is the treatment's rows, each with its
    importance weight p_base / p_teacher (mean 1 per token), measured on the models; the
    treatment is untouched; the effective sample size reaches filter.json, the summary and
    the report."""
    copy = tmp_path / "reweighted"
    # Unconstrained sampling: the weights are the models' own sampling probabilities.
    run_experiment(load_config(TINY, ["generate.constrained=false"]), copy)
    seed0 = copy / "seed-0"
    marker = lambda arm: (seed0 / f"student-{arm}" / "stage.json").read_text()  # noqa: E731
    before = {arm: marker(arm) for arm in ("treatment", "control")}
    cfg_over = ["generate.constrained=false", "control.teacher=reweighted"]
    cfg = load_config(TINY, cfg_over)
    summary = run_experiment(cfg, copy)
    # The treatment students are the base control's run's (cache hits); the controls are new.
    assert marker("treatment") == before["treatment"] and marker("control") != before["control"]
    treat = [json.loads(x) for x in (seed0 / "data-teacher" / "filtered.jsonl").open()]
    ctrl = [json.loads(x) for x in (seed0 / "data-control" / "filtered.jsonl").open()]
    assert [r["messages"] for r in ctrl] == [r["messages"] for r in treat]
    w = np.array([r["weight"] for r in ctrl])
    assert len(set(w.round(6))) > 1 and (w > 0).all()
    info = json.loads((seed0 / "data-control" / "filter.json").read_text())["weights"]
    assert 1 <= info["ess"] < len(ctrl) and info["max"] == pytest.approx(w.max())
    # The weight of a row is the base's probability of its completion over the teacher's.
    from traitlab.lm.base import ModelRef, opened, resolve

    with opened(ModelRef.load(seed0 / "teacher")) as t, opened(resolve(cfg.model)) as b:
        lt = [float(x.sum()) for x in t.completion_logprobs(treat[:2], batch_size=8)]
        lb = [float(x.sum()) for x in b.completion_logprobs(treat[:2], batch_size=8)]
    assert w[1] / w[0] == pytest.approx(np.exp((lb[1] - lt[1]) - (lb[0] - lt[0])), rel=1e-3)
    q = summary["data_quality"]
    assert q["control"] == "reweighted" and 0 < q["control_ess_share"] < 1
    assert "control.teacher: reweighted" in (copy / "report.md").read_text()
    with pytest.raises(TraitlabError, match="constrained false"):
        load_config(TINY, ["control.teacher=reweighted"])
    # The placebo: the same weights dealt to the rows at random.
    run_experiment(load_config(TINY, [*cfg_over, "control.placebo=true"]), copy)
    shuffled = [json.loads(x) for x in (seed0 / "data-control" / "filtered.jsonl").open()]
    assert [r["messages"] for r in shuffled] == [r["messages"] for r in treat]
    assert sorted(r["weight"] for r in shuffled) == sorted(w.tolist())
    assert marker("treatment") == before["treatment"]
    with pytest.raises(TraitlabError, match="control.placebo"):
        load_config(TINY, ["control.placebo=true"])
