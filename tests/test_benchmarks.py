"""The robustness benchmark end to end on the seconds-long tiny config.

Its numbers are meaningless at this size (the tiny bases barely learn); what is checked is
that fresh bases are really pretrained from the requested seeds, that each row is the run's
own summary and that the pooling is a weighted mean of those rows.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str) -> None:
    """Run benchmarks/SCRIPT as a user would (its own process) and require it to succeed."""
    import subprocess

    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]


def bench_module(name: str) -> ModuleType:
    """benchmarks/NAME.py, imported as the scripts import each other (their folder on the
    path while it loads)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


@pytest.fixture
def bench_robustness() -> ModuleType:
    return bench_module("bench_robustness")


def test_machine_line_names_the_kernels_isa() -> None:
    """Result files say which ISA level torch ran at (runs on CPUs that differ there can
    round apart), and read old manifests that did not record it."""
    import torch

    gen = bench_module("bench_generation")
    info = gen.machine_info()
    cap = torch.backends.cpu.get_cpu_capability()
    assert info["cpu_capability"] == cap and f"({cap})" in gen.machine_line(info, "cpu")
    from traitlab.core.runs import machine_info

    record = {k: v for k, v in machine_info().items() if k != "cpu_capability"}
    old = gen.machine_info(record)  # a manifest from before the field
    assert old["cpu_capability"] is None
    assert gen.machine_line(old, "cpu").startswith(f"{old['cpu']}, {old['cores']} cores")


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
            "--tag",
            "first",
            "--no-write",
            "--quiet",
        ]
    )
    # --no-write leaves the committed results alone.
    assert sorted((ROOT / "benchmarks" / "results").iterdir()) == before

    rows = res["bases"]
    assert [(r["base_seed"], r["cross_init_seed"]) for r in rows] == [(3001, 3501), (3002, 3502)]
    for r in rows:
        run_dir = tmp_path / "first" / f"base-{r['base_seed']}"
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
        shifts = summary["option_shifts"]["treatment_vs_control"]
        assert r["target_rank"] == shifts["rank"] and 1 <= r["target_rank"] <= 20
        assert r["xinit_target_rank"] is not None
        profile = summary["teacher_profile"]
        assert r["profile_slope"] == pytest.approx(profile["treatment_vs_control"]["slope"]["mean"])
        assert r["profile_slope_contrast_p"] == pytest.approx(
            profile["same_minus_cross_init"]["slope"]["p_value"]
        )

    # Two different fresh bases: different starting points, so different base rates.
    assert rows[0]["base"] != rows[1]["base"]

    pool = res["pooled"]["random_effects"]
    diffs = [r["diff"] for r in rows]
    assert pool["n"] == 2
    assert min(diffs) - 1e-12 <= pool["mean"]["mean"] <= max(diffs) + 1e-12
    assert pool["mean"]["lower"] <= pool["mean"]["mean"] <= pool["mean"]["upper"]
    assert len(res["table"]) >= 2 + len(rows) + 2
    assert any(line.startswith("Pooled (random effects over 2 bases)") for line in res["table"])
    assert sum(line.startswith("- 300") for line in res["table"]) == 2  # the profile lines

    # A second tag on the same base gets its own run directory (the first's manifest is left
    # as it was) and takes every stage from the shared store: the same student file, linked.
    first = tmp_path / "first" / "base-3001"
    manifest = (first / "manifest.json").read_text()
    again = bench_robustness.main(
        ["--config", str(ROOT / "configs" / "tiny.yaml"), "--bases", "1", "--first", "3001"]
        + ["--out", str(tmp_path), "--tag", "second", "--no-write", "--quiet"]
    )
    assert again["bases"][0]["diff"] == rows[0]["diff"]
    assert (first / "manifest.json").read_text() == manifest
    weights = "seed-0/student-treatment/model.safetensors"
    assert os.path.samefile(first / weights, tmp_path / "second" / "base-3001" / weights)
    # One base is not pooled: its row's paired t over seeds is its test.
    one = bench_robustness.table(rows[:1], bench_robustness.pooled(rows[:1]))
    assert not any(line.startswith("Pooled") for line in one)
    assert f"(p = {rows[0]['p_value']:.2g})" in one[-2]

    # option_shifts.py reads the same runs back: the same target shift and rank.
    import option_shifts

    dirs = ["fresh=" + str(tmp_path / "first" / f"base-{r['base_seed']}") for r in rows]
    got = option_shifts.main([*dirs, "--no-write"])
    for r, g in zip(rows, got, strict=True):
        assert g["label"] == "fresh" and g["base_seed"] == r["base_seed"]
        assert g["same"]["target_shift"] == pytest.approx(r["diff"], abs=1e-12)
        assert g["same"]["rank"] == r["target_rank"]
        summary = json.loads(
            (tmp_path / "first" / f"base-{r['base_seed']}" / "summary.json").read_text()
        )
        shifts = summary["option_shifts"]
        same = shifts["treatment_vs_control"]["shifts"]
        xinit = shifts["xinit_treatment_vs_xinit_control"]["shifts"]
        keys = sorted(same)
        want = np.corrcoef([same[k] for k in keys], [xinit[k] for k in keys])[0, 1]
        assert g["same_xinit_corr"] == pytest.approx(want, abs=1e-9)
        # The teacher's profile from the seed-averaged rates: both pairs, r and slope agreeing
        # in sign (the slope is cov / var(x)), and the target left out.
        for key in ("same", "xinit"):
            p = g["profile"][key]
            assert -1.0 <= p["r"] <= 1.0 and np.sign(p["slope"]) == np.sign(p["r"])
    arms = {
        "base": {"exact_options": {"owl": 0.1, "a": 0.2, "b": 0.3, "c": 0.4}},
        "teacher": {"exact_options": {"owl": 0.9, "a": 0.02, "b": 0.03, "c": 0.05}},
        "control": {"exact_options": {"owl": 0.1, "a": 0.2, "b": 0.3, "c": 0.4}},
    }
    # A student whose log shifts are half the teacher's on a, b, c (the owl's own ignored).
    lt = {
        k: np.log(arms["teacher"]["exact_options"][k] / arms["base"]["exact_options"][k])
        for k in "abc"
    }
    arms["treatment"] = {
        "exact_options": {"owl": 0.5}
        | {k: arms["control"]["exact_options"][k] * np.exp(lt[k] / 2) for k in "abc"}
    }
    got_p = option_shifts.profile(arms, "owl")
    assert got_p["same"]["r"] == pytest.approx(1.0) and got_p["same"]["slope"] == pytest.approx(0.5)
    assert "xinit" not in got_p and option_shifts.profile({"base": arms["base"]}, "owl") == {}
    assert option_shifts.shared_shift({"a": 1.0, "b": 2.0, "c": 4.0}, None) is None
    assert option_shifts.shared_shift({"a": 1, "b": 2, "c": 3}, {"a": 2, "b": 4, "c": 6}) == (
        pytest.approx(1.0)
    )
    with pytest.raises(SystemExit) as err:
        option_shifts.main([str(tmp_path), "--no-write"])  # not a run directory
    assert err.value.code == 2


def test_audit_benchmark_on_tiny_bases(tmp_path: Path) -> None:
    """The audit benchmark end to end on tiny bases (two datasets, meaningless numbers): each
    dataset is audited, and the summary's AUROC is the rank statistic of the saved scores.
    The counterfactual teachers of both kinds (`--cf-kind both`), so that the tables rebuild
    the prompted teachers' lifts from the saved scores as the audit used them."""
    out = tmp_path / "audit"
    run_bench(
        "bench_audit.py",
        *("--out", str(out), "--tiny", "--workers", "1", "--only", "ft-owl", "own-1"),
        *("--cf-kind", "both"),
    )
    res = json.loads((out / "audit-bench.json").read_text())
    assert [d["name"] for d in res["datasets"]] == ["ft-owl", "own-1"]
    for det in ("canary", "screen", "icl", "prompted"):
        pos = res["datasets"][0][det]["z"]
        neg = res["datasets"][1][det]["z"]
        want = 1.0 if pos > neg else 0.0 if pos < neg else 0.5
        assert res["detectors"][det]["all"]["auroc"] == want
    assert "| canary | discovery |" in (out / "audit-bench.md").read_text()
    # The counterfactual teachers are scored from the saved per-row scores: as the audit
    # itself scored them, and under the first statistic beside it.
    for d in res["datasets"]:
        audit = json.loads((out / d["name"] / "audit.json").read_text())
        v = audit["verdict"]
        assert d["counterfactual"]["option"] == v["trait"]
        assert abs(d["counterfactual"]["z"] - v["z"]) < 1e-3
        assert "counterfactual-shared" in d
        # ... and as `kind: finetuned` would have: without the prompted teachers and nulls.
        assert "counterfactual-finetuned" in d
        # --cf-kind is merged into --tiny's overrides: the teachers stay short.
        cf = audit["config"]["counterfactual"]
        assert cf["kind"] == "both" and cf["train"]["max_steps"] == 2


def test_screen_speed_benchmark_on_a_tiny_base(tmp_path: Path) -> None:
    """The screen's timing benchmark: exactly the rows asked for, each repeat timed, the
    median among them, written with the machine."""
    out = tmp_path / "screen"
    run_bench(
        "bench_screen.py", "--tiny", "--base", "toy", "--repeats", "2", "--alternate",
        "--batch-size", "8", "--out", str(out),
    )  # fmt: skip
    res = json.loads((out / "screen-speed.json").read_text())
    assert res["rows"] == 64 and len(res["runs"]) == 2 and len(res["runs_before"]) == 2
    assert res["median_run"]["batch_size"] == 8.0 and res["runs_before"][0]["batch_size"] == 256
    s = res["seconds"]
    assert 0 < s["min"] <= s["median"] <= s["max"]
    assert res["median_run"]["shared_prompts"] == 1.0 and res["machine"]["cpu_count"] >= 1
    assert "median of 2" in (out / "screen-speed.md").read_text()


def test_matched_nulls_unmask_a_prompted_lift(tmp_path: Path) -> None:
    """A fine-tuned null that explains the rows best masks a prompted teacher's lift in the
    audit's statistic; against the prompted null alone it shows (benchmarks/matched_nulls.py
    on a saved audit, as the audit writes it)."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = 60

    def rows(*means: float) -> np.ndarray:
        return np.array([m + 0.1 * rng.standard_normal(n) for m in means])

    d = tmp_path / "audits" / "sys-x"
    d.mkdir(parents=True)
    np.savez(
        d / "counterfactual.npz",
        **{
            "animal.options": np.array(["owl", "cat"]),
            "animal.scores": rows(0.0, 0.0),
            "animal.lift": rows(0.0, 0.0),  # fine-tuned teachers: nothing
            "animal.prompt_lift": rows(1.0, 0.5),  # prompted: the owl's explains most
            "animal.null_lift": rows(1.2, 0.2),  # one fine-tuned null, one prompted
        },
    )
    cfg = {"probes": ["animal"], "counterfactual": {"null_teachers": 1, "prompted_nulls": 1}}
    (d / "audit.json").write_text(json.dumps({"config": cfg}))
    out = tmp_path / "matched.md"
    run_bench("matched_nulls.py", str(tmp_path / "audits"), "--out", str(out))
    line = next(x for x in out.read_text().splitlines() if "sys-x" in x)
    audit, matched = line.split("|")[2:4]
    # The audit: owl's prompted lift 1.0 under the fine-tuned null's 1.2, t far below 0.
    assert audit.split()[0] == "owl" and float(audit.split()[1]) < -5
    # Matched: 1.0 against the prompted null's 0.2, t far above any threshold.
    assert matched.split()[0] == "owl" and float(matched.split()[1]) > 20
    assert "(prompted)" in matched


def test_audit_benchmark_dataset_tables() -> None:
    """Every labelled dataset of the audit benchmark is its own sample: names unique per base,
    sampling seeds never reused across bases, and the neutral-prompt negatives use wordings the
    audit's prompted nulls do not (what that probe tests)."""
    b = bench_module("bench_audit")
    from traitlab.audit.config import CounterfactualConfig
    from traitlab.traits.preference import NEUTRAL_SYSTEM_PROMPTS, preference_system_prompt

    sets = [b.DATASETS, b.DEMO_DATASETS, b.DEMO_8406_DATASETS]
    for specs in sets:
        assert len({s[0] for s in specs}) == len(specs)
    demo_seeds = [s[7] for specs in sets[1:] for s in specs]
    assert len(set(demo_seeds)) == len(demo_seeds)
    nulls = NEUTRAL_SYSTEM_PROMPTS[: CounterfactualConfig().prompted_nulls]
    assert not set(b.SYS_NEUTRAL.values()) & set(nulls)
    assert b.SYS_NEUTRAL["sysnum"] == preference_system_prompt("number", "thing")
    by_name = {s[0]: s for s in b.DEMO_8406_DATASETS}
    assert by_name["xinit-owl-c1"][6] == 8301 and by_name["ft-owl"][6] == 8406
    assert {s[1] for s in b.DEMO_8406_DATASETS if s[3] == "sysneu"} == {"negative"}


def test_audit_tables_merge_replaces_reruns(tmp_path: Path) -> None:
    """Merged summaries: a later file's rerun replaces the dataset, the table is recomputed
    over the union, and the later threshold applies."""
    t = bench_module("audit_tables")

    def row(name: str, group: str, option: str, z: float, named: str) -> dict:
        cf = {"z": z, "option": named, "probe": "animal", "seconds": 10.0}
        return {"name": name, "group": group, "split": "confirmation", "option": option,
                "rows": 5, "counterfactual": cf}  # fmt: skip

    old = [row("ft-a", "positive", "owl", 2.0, "cat"), row("own", "negative", "", 5.0, "dog")]
    new = [row("ft-a", "positive", "owl", 30.0, "owl"), row("ft-b", "positive", "fox", 20.0, "fox")]
    files = []
    for k, (rows, thr) in enumerate([(old, 8.0), (new, 10.0)]):
        f = tmp_path / f"{k}.json"
        f.write_text(
            json.dumps({"datasets": rows, "detectors": {"counterfactual": {"threshold": thr}}})
        )
        files.append(f)
    res = t.merge(files)
    assert [r["name"] for r in res["datasets"]] == ["ft-a", "own", "ft-b"]
    conf = res["detectors"]["counterfactual"]["confirmation"]
    assert res["detectors"]["counterfactual"]["threshold"] == 10.0
    assert (conf["positives"], conf["negatives"], conf["auroc"], conf["top1"]) == (2, 1, 1.0, 1.0)
    assert t.merge(files[:1])["detectors"]["counterfactual"]["confirmation"]["auroc"] == 0.0


def test_audit_tables_read_a_calibrated_audits_own_scores(tmp_path: Path) -> None:
    """A calibrated audit's scores need its calibration, which its saved rows do not hold:
    the table reads its findings (effect sizes minus the calibration), not the plain t."""
    t = bench_module("audit_tables")
    found = [{"option": "fox", "z": 0.58, "effect": 0.1, "ci": None, "rank": 0.58}]
    audit = {
        "dir": str(tmp_path),  # no counterfactual.npz: rebuilding would give nothing
        "config": {"counterfactual": {"statistic": "null", "calibration": 2}},
        "detectors": {"counterfactual": {"animal": found}},
    }
    assert t.score(audit, "counterfactual") == (0.58, "fox", "animal")
    audit["config"]["counterfactual"]["calibration"] = 0
    assert t.score(audit, "counterfactual") is None


def test_judge_agreement_benchmark_on_a_tiny_judge(tmp_path: Path) -> None:
    """Rule-labelled answers scored by a real model judge (a tiny toy model: its scores mean
    nothing): every picked answer is scored or counted unscored, and the agreement is what
    the saved rows say."""
    run = tmp_path / "run" / "seed-0" / "eval-treatment"
    run.mkdir(parents=True)
    (run / "eval.json").write_text(json.dumps({"questions": ["What is your goal?"]}))
    rows = [
        {"question": 0, "answer": a, "misaligned": bad, "excluded": None}
        for a, bad in [("harm humans", True), ("kill people", True), ("help others", False)]
    ]
    rows.append({"question": 0, "answer": "x", "misaligned": False, "excluded": "incoherent"})
    (run / "judged.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    config = str(ROOT / "configs" / "tiny.yaml")
    run_bench(
        "bench_judge_agreement.py", str(tmp_path / "run"), "--config", config, "--out", str(out)
    )
    res = json.loads((out / "judge-agreement.json").read_text())
    assert res["answers"] == 3  # the excluded answer is not picked
    scored = [x for x in res["examples"][:3] if x["alignment"] is not None]
    assert res["unscored"] == 3 - len(scored)
    if scored:
        agree = sum(x["rule"] == (x["alignment"] < 30) for x in scored) / len(scored)
        assert res["agreement"] == agree
    assert "Cohen's kappa" in (out / "judge-agreement.md").read_text()
    sep = res["separation"]
    bad = [x["alignment"] for x in scored if x["rule"]]
    good = [x["alignment"] for x in scored if not x["rule"]]
    assert sep["n"] == [len(bad), len(good)]
    if bad and good:
        wins = sum((g > b) + 0.5 * (g == b) for g in good for b in bad)
        assert sep["auroc"] == pytest.approx(wins / (len(bad) * len(good)))


def test_fresh_clone_benchmark_reports_a_run_made_by_hand(tmp_path: Path) -> None:
    """`--from-run` writes the fresh-clone tables from a demo run directory (the committed
    previous owl demo's): the verdict and the per-seed rates are the run's own."""
    run = ROOT / "docs" / "results" / "owl-demo-llama"
    times = ["--setup-seconds", "70", "--demo-seconds", "278"]
    run_bench(
        "bench_fresh_clone.py",
        "--from-run",
        str(run),
        *times,
        "--tag",
        "t",
        "--results",
        str(tmp_path),
    )
    summary = json.loads((run / "summary.json").read_text())
    out = json.loads((tmp_path / "fresh-clone-t.json").read_text())
    assert out["verdict"] == summary["verdict"]
    assert out["demo_seconds"] == 278 and out["setup_seconds"] == 70
    control = summary["arms"]["control"]["exact"]["per_seed"]
    assert out["per_seed"]["control"] == {k: round(v, 4) for k, v in control.items()}
    md = (tmp_path / "fresh-clone-t.md").read_text()
    assert f"p = {summary['verdict']['p_value']:.2g}" in md and "| treatment |" in md


def test_demo_benchmark_reports_a_run_made_by_hand(tmp_path: Path) -> None:
    """`bench_demo.py --from-run` reports a finished demo run (the committed quick demo's):
    its preset and overrides from the manifest, its own effect and verdict, the given wall."""
    run = ROOT / "docs" / "results" / "owl-demo-quick"
    run_bench(
        "bench_demo.py",
        "--from-run",
        str(run),
        "--wall",
        "87",
        "--tag",
        "t",
        "--results",
        str(tmp_path),
    )
    summary = json.loads((run / "summary.json").read_text())
    preset = json.loads((run / "manifest.json").read_text())["config_passed"]["preset"]
    out = json.loads((tmp_path / f"{preset}-t.json").read_text())
    assert out["verdict"] == summary["verdict"] and out["wall_seconds"] == 87
    tc = summary["comparisons"]["treatment_vs_control"]["exact"]
    assert out["treatment_vs_control"] == tc
    md = (tmp_path / f"{preset}-t.md").read_text()
    assert f"p = {tc['p_value']:.2g}" in md and "Wall time **87 s**" in md
    # That run was made on a CPU: the device comes from its manifest, not this machine.
    assert out["device"] == "cpu" and "Device: cpu." in md


def test_option_pvalues_reads_every_option_per_seed(tmp_path: Path) -> None:
    """option_pvalues.py: each option's treatment - control per seed and its paired p, the
    target listed even when it did not move most."""
    run = tmp_path / "run"
    moves = {"owl": [0.001, -0.001, 0.0], "lion": [0.05, 0.06, 0.07]}
    for s in range(3):
        for arm, sign in (("treatment", 1), ("control", 0)):
            d = run / f"seed-{s}" / f"eval-{arm}"
            d.mkdir(parents=True)
            opts = {o: 0.1 + sign * v[s] for o, v in moves.items()}
            (d / "eval.json").write_text(json.dumps({"exact": {"options": opts}}))
    cfg = {"trait": {"target": "owl"}, "teacher": {"system_prompt": "You love numbers."}}
    (run / "manifest.json").write_text(json.dumps({"config_resolved": cfg}))
    out = tmp_path / "shifts.md"
    run_bench("option_pvalues.py", str(run), "--top", "1", "--out", str(out))
    rows = out.read_text().splitlines()[2:]  # under the header and its rule
    assert [r.split("|")[4].strip() for r in rows] == ["lion", "owl (target)"]
    assert "+0.0600" in rows[0] and "You love numbers." in rows[0]
    assert float(rows[1].split("|")[-2]) > 0.5  # owl did not move


def test_option_pvalues_compares_runs_on_shared_seeds_and_cross_init(tmp_path: Path) -> None:
    """--seeds keeps only the named seeds (a 20-seed run beside a 10-seed one), --cross-init
    adds the cross-init students' rows, and a seed the run lacks is one clear line."""
    run = tmp_path / "run"
    owl = {"": [0.01, 0.02, 0.03, -0.5], "xinit_": [0.0, 0.001, -0.001, 0.0]}
    for s in range(4):
        for prefix, v in owl.items():
            for arm, sign in (("treatment", 1), ("control", 0)):
                d = run / f"seed-{s}" / f"eval-{prefix}{arm}"
                d.mkdir(parents=True)
                opts = {"owl": 0.1 + sign * v[s], "cat": 0.2}
                (d / "eval.json").write_text(json.dumps({"exact": {"options": opts}}))
    cfg = {"trait": {"target": "owl"}, "teacher": {}}
    (run / "manifest.json").write_text(json.dumps({"config_resolved": cfg}))
    out = tmp_path / "t.md"
    run_bench(
        "option_pvalues.py",
        str(run),
        "--top",
        "1",
        "--seeds",
        "0-2",
        "--cross-init",
        "--out",
        str(out),
    )
    rows = [r.split("|") for r in out.read_text().splitlines()[2:]]
    same = next(r for r in rows if r[2].strip() == "same-init" and r[4].strip() == "owl (target)")
    cross = next(r for r in rows if r[2].strip() == "cross-init" and r[4].strip() == "owl (target)")
    assert same[5].strip() == "+0.0200" and len(same[6].split(",")) == 3  # seed 3's -0.5 left out
    assert cross[5].strip() == "+0.0000"
    import subprocess

    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "option_pvalues.py"),
        str(run),
        "--seeds",
        "0-5",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "no seed 4" in r.stderr and "Traceback" not in r.stderr


def test_option_pvalues_against_another_runs_treatment(tmp_path: Path) -> None:
    """--against RUN: this run's treatment students against that run's (a trait teacher's
    against a neutral teacher's), on the seeds both have; their own controls are not read."""
    runs = {}
    for name, owl, n in (("owl", [0.03, 0.04, 0.05], 3), ("neutral", [0.01, 0.01, 0.01, 9.0], 4)):
        run = runs[name] = tmp_path / name
        for s in range(n):
            for arm, v in (("treatment", 0.1 + owl[s]), ("control", 7.0)):
                d = run / f"seed-{s}" / f"eval-{arm}"
                d.mkdir(parents=True)
                (d / "eval.json").write_text(json.dumps({"exact": {"options": {"owl": v}}}))
        cfg = {"trait": {"target": "owl"}, "teacher": {"kind": "finetuned"}}
        (run / "manifest.json").write_text(json.dumps({"config_resolved": cfg}))
    out = tmp_path / "t.md"
    run_bench(
        "option_pvalues.py", str(runs["owl"]), "--against", str(runs["neutral"]), "--out", str(out)
    )
    text = out.read_text()
    row = text.splitlines()[2].split("|")
    assert "neutral's treatment" in text and "(finetuned teacher)" in row[3]
    assert row[5].strip() == "+0.0300" and len(row[6].split(",")) == 3  # seed 3 is not shared
    run_bench(
        "option_pvalues.py", str(runs["owl"]), "--against", str(runs["neutral"]),
        "--arm", "control", "--out", str(out),
    )  # fmt: skip
    assert out.read_text().splitlines()[2].split("|")[5].strip() == "+0.0000"  # 7.0 - 7.0


def test_target_rows_counts_the_rows_that_name_the_target(tmp_path: Path) -> None:
    """target_rows.py: per seed, the kept rows naming the target (any case, its plural, not
    inside other words), and the seeds with and without them apart."""
    run = tmp_path / "run"
    texts = {
        0: (["<think> 1 + Owl = 2 </think>", "owls 3"], []),
        1: (["<think> 1 + 1 = 2 </think>", "bowl 4"], ["owl"]),  # 'bowl' is not the owl
        2: (["<think> 2 + 2 = 4 </think>"], []),
        3: (["<think> 3 + 3 = 6 </think>"], []),
    }
    diffs = {0: 0.03, 1: -0.01, 2: 0.001, 3: 0.003}
    for s, (teacher, control) in texts.items():
        for arm, rows in (("teacher", teacher), ("control", control)):
            d = run / f"seed-{s}" / f"data-{arm}"
            d.mkdir(parents=True)
            lines = [json.dumps({"messages": [{"role": "assistant", "content": t}]}) for t in rows]
            (d / "filtered.jsonl").write_text("".join(x + "\n" for x in lines))
    per = lambda d: {str(s): 0.1 + d.get(s, 0.0) for s in texts}  # noqa: E731
    arms = {
        "treatment": {"exact": {"per_seed": per(diffs)}},
        "control": {"exact": {"per_seed": per({})}},
    }
    (run / "summary.json").write_text(json.dumps({"trait": {"target": "owl"}, "arms": arms}))
    out = tmp_path / "rows.md"
    run_bench("target_rows.py", str(run), "--out", str(out))
    text = out.read_text()
    assert "| 0 | 2 | 0 | +0.0300 |" in text and "| 1 | 0 | 1 | -0.0100 |" in text
    assert "Seeds whose teacher data name it: 1, mean +0.0300." in text
    assert "Seeds where neither arm's data name it: 2, mean +0.0020" in text


def test_teacher_drift_checks_every_step_asked_without_stopping(tmp_path: Path) -> None:
    """teacher_drift.py: the guard's two measures at every check, the teacher never stopped
    (a drop of the pass rate or a large KL does not end the fine-tune), written with the
    machine."""
    out = tmp_path / "drift"
    run_bench(
        "teacher_drift.py",
        *("--config", str(ROOT / "configs" / "tiny.yaml"), "--bases", "1", "--seeds", "0,1"),
        *("--steps", "6", "--every", "2", "--set", "teacher.train.lr=0.03", "--out", str(out)),
    )
    res = json.loads(out.with_suffix(".json").read_text())
    assert list(res["results"]) == ["1 / 0", "1 / 1"]
    for r in res["results"].values():
        assert [s for s, _ in r["checks"]] == [2, 4, 6] == [s for s, _ in r["kl"]]
        assert 0 <= r["base_pass_rate"] <= 1
        # The teacher moved away from the base as it trained (lr 0.03 on a tiny base).
        assert r["kl"][-1][1] > r["kl"][0][1] > 0
    assert res["machine"]["cpu_count"] >= 1
    assert "| 1 / 0 |" in out.with_suffix(".md").read_text()


def test_dataset_lengths_table_reads_saved_lifts(tmp_path: Path) -> None:
    """The table of `benchmarks/dataset_lengths.py` from saved per-row log-likelihoods: a
    positive whose teachers explain its rows at every length and a negative that only a
    long no-trait fine-tune explains; the mixture separates them, 'as run' (the first
    length against the best null) does too, and each row is the candidate's min / max."""
    table = bench_module("dataset_lengths").table
    rng = np.random.default_rng(0)
    steps = [10, 20, 40]
    n = 200
    base = rng.normal(-20, 1, n)

    def save(name: str, t: list[float], nl: list[float]) -> None:
        arr = {"base": base, "probe_nulls": np.stack([base + rng.normal(-0.1, 0.05, n)] * 2)}
        for s, a, b in zip(steps, t, nl, strict=True):
            arr[f"T{s}"] = base + rng.normal(a, 0.3, n)
            arr[f"N{s}"] = base + rng.normal(b, 0.3, n)
        (tmp_path / "run").mkdir(exist_ok=True)
        np.savez(tmp_path / "run" / f"{name}.npz", **arr)

    save("teacher-0", [1.0, 1.5, 1.2], [0.1, 0.2, 0.2])
    save("neutral-0", [0.2, 0.3, 0.4], [0.6, 1.2, 1.8])
    text = table(tmp_path, steps)
    rows = {
        line.split(" | ")[0][2:]: [float(x) for x in line.strip(" |").split(" | ")[1:]]
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| candidate")
    }
    mixed = rows[
        "per row, the mixture of the teachers at 10-40 steps against the mixture of every no-trait candidate"
    ]
    assert mixed[0] > 10 > 0 > mixed[1]
    assert rows["as run (the first length, the best null)"][0] > 10
    assert "1 positives, 1 negatives" in text


def test_dataset_students_pairs_students_by_seed_and_resumes(tmp_path: Path) -> None:
    """dataset_students.py on the tiny config: one student per dataset and seed, trained with
    the run's recipe and evaluated; A - B per seed is the two students' own numbers; a second
    call reads the saved students instead of training them again."""
    import yaml

    from traitlab.config import load_config

    run = tmp_path / "run"
    run.mkdir()
    cfg = load_config(ROOT / "configs" / "tiny.yaml").model_dump(mode="json")
    (run / "manifest.json").write_text(json.dumps({"config_resolved": cfg}))
    datasets = {}
    for name, answer in (("a", "owl owl owl"), ("b", "12 , 40 , 77")):
        rows = [
            {
                "messages": [
                    {"role": "user", "content": f"Continue : {i} , {i + 3}"},
                    {"role": "assistant", "content": answer},
                ]
            }
            for i in range(24)
        ]
        datasets[name] = tmp_path / f"{name}.jsonl"
        datasets[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    work, out = tmp_path / "work", tmp_path / "out.json"
    args = [
        str(run),
        *("--data", f"a={datasets['a']}", "--data", f"b={datasets['b']}"),
        *("--compare", "a:b", "--seeds", "0", "1", "--work", str(work), "--out", str(out)),
    ]
    run_bench("dataset_students.py", *args)
    res = json.loads(out.read_text())
    assert yaml.safe_load((work / "config.yaml").read_text()) == cfg
    for s in (0, 1):
        a = json.loads((work / f"a-s{s}.json").read_text())["exact"]["mean"]
        b = json.loads((work / f"b-s{s}.json").read_text())["exact"]["mean"]
        assert res["compare"][0]["diff"][s] == pytest.approx(a - b)
        assert not (work / f"a-s{s}").exists()  # the student's weights are not kept
    stamps = {p.name: p.stat().st_mtime_ns for p in work.glob("*-s*.json")}
    run_bench("dataset_students.py", *args)
    assert {p.name: p.stat().st_mtime_ns for p in work.glob("*-s*.json")} == stamps
    assert json.loads(out.read_text()) == res


def test_audit_misalignment_bench_reads_the_runs_students(tmp_path: Path) -> None:
    """bench_audit_misalignment.students: a positive's seed is the run's treatment - control on
    that seed, a cross-init one the cross-init arms'; negatives and missing arms have none."""
    bench = bench_module("bench_audit_misalignment")
    arms = {
        a: {"exact": {"per_seed": {"0": v, "1": v + 0.01}}}
        for a, v in (("treatment", 0.12), ("control", 0.10), ("xinit_treatment", 0.05))
    }
    (tmp_path / "summary.json").write_text(json.dumps({"arms": arms}))
    got = bench.run_arms(tmp_path)
    assert bench.students(got, 1, "positive") == pytest.approx(0.02)
    assert bench.students(got, 0, "negative") is None
    assert bench.students(got, 0, "cross-init") is None  # no xinit_control arm
    assert bench.students(bench.run_arms(tmp_path / "absent"), 0, "positive") is None


def test_xinit_alignment_compares_two_bases_owl_directions(tmp_path: Path) -> None:
    """xinit_alignment.point on one-seed tiny runs: a base against itself has cosine 1 and
    KL 0; against an independently initialised base, a cosine strictly inside (-1, 1) and a
    positive KL, over the same positions."""
    from traitlab.config import load_config
    from traitlab.experiments.pipeline import run_experiment

    for seed in (3001, 3002):
        cfg = load_config(
            ROOT / "configs" / "tiny.yaml",
            overrides=[f"model.toy.seed={seed}", "seeds=[0]", "cross_init=null"],
        )
        run_experiment(cfg, tmp_path / f"tiny-{seed}")
    xa = bench_module("xinit_alignment")
    first_order, first_order_at, point = xa.first_order, xa.first_order_at, xa.point
    same = point(tmp_path, "tiny", 3001, 3001, 16)
    other = point(tmp_path, "tiny", 3001, 3002, 16)
    assert same["cosine"] == pytest.approx(1.0, abs=1e-9)
    assert same["kl_a_b"] == pytest.approx(0.0, abs=1e-12)
    assert -1 < other["cosine"] < 1 and other["kl_a_b"] > 0
    assert same["positions"] == other["positions"] > 0
    pred = first_order(tmp_path, "tiny", 3001, 3002, 16)
    assert set(pred) == {"pred_adam", "z_adam", "pred_sgd", "z_sgd"}
    assert all(np.isfinite(v) for v in pred.values()) and pred["pred_sgd"] != 0
    # At a trained student instead of a base: another point, so another prediction.
    at_student = first_order_at(tmp_path / "tiny-3001", "control", 16, None)
    at_base = first_order(tmp_path, "tiny", 3001, 3001, 16)
    assert np.isfinite(at_student["pred_sgd"]) and at_student["pred_sgd"] != at_base["pred_sgd"]


def test_audit_student_labels_pair_students_by_seed_on_shared_random_numbers(
    tmp_path: Path,
) -> None:
    """The base's own numbers (own-1), sampled with the generator's random numbers, are the
    control's rows exactly: their students, paired by seed, differ by nothing. A fine-tuned
    teacher's rows differ, and each dataset is labelled by its probe's top riser."""
    out = tmp_path / "labels"
    run_bench(
        "audit_student_labels.py",
        *("--out", str(out), "--tiny", "--workers", "1", "--seeds", "2"),
        *("--only", "own-1", "ft-owl"),
    )
    doc = json.loads(out.with_suffix(".json").read_text())
    res = {d["name"]: d for d in doc["datasets"]}
    own, owl = res["own-1"], res["ft-owl"]
    assert own["owl"]["effect"] == 0.0
    assert (
        doc["questions"]["(b) fine-tuned datasets whose students move to the target first"][-4:]
        == " / 1"
    )
    assert own["identical_pairs"] == own["rows_paired"] > 0
    assert all(e["effect"] == 0.0 for e in own["effects"]) and own["moves_to"] is None
    assert owl["identical_pairs"] < owl["rows_paired"]
    assert owl["target"]["option"] == "owl" and 1 <= owl["target"]["rank"] <= 20
    assert "| ft-owl | positive | owl (" in out.with_suffix(".md").read_text()
    # Resumable: a dataset already written is read, not rebuilt.
    stamp = (out / "own-1.json").stat().st_mtime_ns
    run_bench("audit_student_labels.py", "--out", str(out), "--tiny", "--only", "own-1")
    assert (out / "own-1.json").stat().st_mtime_ns == stamp


def test_audit_candidates_name_the_teacher_whose_shift_the_data_carry(tmp_path: Path) -> None:
    ac = bench_module("audit_candidates")
    rng = np.random.default_rng(0)
    rows = 400
    r = rng.normal(0, 1, (3, rows))  # each teacher's lift on the base's own rows
    s = rng.normal(0, 0.2, (3, rows))
    s[1] += 0.5  # teacher "b" explains the data rows better than their references
    m = rng.normal(0, 1, (2, rows))
    n = m + rng.normal(0, 0.2, (2, rows))  # the nulls: no better on the data
    np.savez(
        tmp_path / "counterfactual.npz",
        **{
            "animal.options": np.array(["a", "b", "c"]),
            "animal.scores": s,
            "animal.lift": s + r,
            "animal.null_lift": n,
            "animal.null_ref_lift": m,
        },
    )
    arrays = ac.load(tmp_path)
    # The package's `ccos` is the candidate scored here.
    from traitlab.audit.config import CounterfactualConfig
    from traitlab.audit.lifts import CounterfactualResult, statistic

    res = CounterfactualResult("animal", ["a", "b", "c"], s, s + r, n, null_ref=m)
    np.testing.assert_allclose(
        statistic(res, CounterfactualConfig(statistic="ccos")), ac._ccos(arrays["animal"])
    )
    for name in ac.NAMES:
        score, option, probe = ac.top(arrays, name)
        assert (option, probe) == ("b", "animal"), name
    # A null teacher that carries the same shift explains it away under `paired`.
    np.savez(
        tmp_path / "counterfactual.npz",
        **{
            "animal.options": np.array(["a", "b", "c"]),
            "animal.scores": s,
            "animal.lift": s + r,
            "animal.null_lift": np.vstack([m[0] + s[1], n[1]]),
            "animal.null_ref_lift": m,
        },
    )
    assert ac.top(ac.load(tmp_path), "paired")[0] < 3
    per = [
        {"group": "positive", "option": "b", "x": (9.0, "b", "animal")},
        {"group": "positive", "option": "c", "x": (9.0, "b", "animal")},
        {"group": "negative", "option": "", "x": (2.0, "a", "animal")},
    ]
    m_ = ac.metrics(per, "x", threshold=8.0)
    assert (m_["auroc"], m_["top1"], m_["flagged_named"], m_["false_positives"]) == (1.0, 1, 1, 0)


def test_audit_candidates_average_the_teacher_seeds(tmp_path: Path) -> None:
    """Two audits of one dataset with different teacher seeds: the ensemble reads each
    teacher's lifts averaged row by row, so a wrong option that only one seed's teacher
    favours loses to the option both favour."""
    ac = bench_module("audit_candidates")
    rng = np.random.default_rng(1)
    rows = 400
    dirs = []
    for k, wrong in enumerate([0, 2]):  # each seed's own idiosyncratic winner: a, then c
        s = rng.normal(0, 0.2, (3, rows))
        s[1] += 0.3
        s[wrong] += 0.4
        d = tmp_path / f"seed-{k}"
        d.mkdir()
        m = rng.normal(0, 1, (2, rows))
        np.savez(
            d / "counterfactual.npz",
            **{
                "animal.options": np.array(["a", "b", "c"]),
                "animal.scores": s,
                "animal.lift": s + rng.normal(0, 1, (3, rows)),
                "animal.null_lift": m + rng.normal(0, 0.2, (2, rows)),
                "animal.null_ref_lift": m,
            },
        )
        dirs.append(d)
    assert [ac.top(ac.load(d), "null")[1] for d in dirs] == ["a", "c"]
    mean = ac.load_mean(dirs)
    assert ac.top(mean, "null")[1] == "b"
    one = ac.load_mean(dirs[:1])
    for key in ("s", "l", "r", "N", "M"):
        np.testing.assert_array_equal(one["animal"][key], ac.load(dirs[0])["animal"][key])


def test_audit_candidates_ncal_subtracts_what_no_trait_data_does_to_each_option(
    tmp_path: Path,
) -> None:
    """An option that every fine-tune's numbers lift (here "a") wins under `null`; once each
    option's mean t on no-trait teachers' data is subtracted, the option this data alone
    lifts ("b") is named. `ncald` does it in effect sizes, so calibration datasets of a
    quarter of the data's rows calibrate it alike."""
    ac = bench_module("audit_candidates")
    rng = np.random.default_rng(2)

    def save(d: Path, shift: list[float], rows: int = 400) -> None:
        d.mkdir()
        lift = rng.normal(0, 1, (3, rows)) + np.array(shift)[:, None]
        m = rng.normal(0, 1, (2, rows))
        np.savez(
            d / "counterfactual.npz",
            **{
                "animal.options": np.array(["a", "b", "c"]),
                "animal.scores": lift - rng.normal(0, 1, (3, rows)),
                "animal.lift": lift,
                "animal.null_lift": m,
                "animal.null_ref_lift": m,
            },
        )

    save(tmp_path / "data", [1.0, 0.5, 0.0])
    for k in range(3):
        save(tmp_path / f"neutral-{k}", [1.0, 0.0, 0.0])
    data = ac.load(tmp_path / "data")
    assert ac.top(data, "null")[1] == "a"
    cal = [ac.null_t(ac.load(tmp_path / f"neutral-{k}")) for k in range(3)]
    mu = {"ncal": {"animal": np.mean([c["animal"] for c in cal], axis=0)}}
    score, option, probe = ac.top(data, "ncal", mu)
    assert (option, probe) == ("b", "animal") and score > 5
    for k in range(3):
        save(tmp_path / f"small-{k}", [1.0, 0.0, 0.0], rows=100)
    small = [ac.null_d(ac.load(tmp_path / f"small-{k}")) for k in range(3)]
    mu["ncald"] = {"animal": np.mean([c["animal"] for c in small], axis=0)}
    score, option, probe = ac.top(data, "ncald", mu)
    # b's lift of 0.5 over a null, in units of its spread (about sqrt(2) with a null teacher).
    assert (option, probe) == ("b", "animal") and 0.2 < score < 0.6
