"""The falsifier (students keep training after the fact), DPO, and the run's HTML report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from htmlparse import Tables
from traitlab.config import ToyModel, TrainConfig, load_config
from traitlab.core import runs
from traitlab.experiments.falsifier import half_life
from traitlab.experiments.pipeline import run_experiment
from traitlab.experiments.report import write_report
from traitlab.lm.base import opened, resolve
from traitlab.lm.hf.dpo import _seq_logps, dpo_train
from traitlab.lm.hf.trainer import encode_rows

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def test_half_life_interpolates_the_first_halving() -> None:
    assert half_life([0, 10, 30], [1.0, 0.8, 0.2]) == pytest.approx(10 + 0.3 / 0.6 * 20)
    assert half_life([0, 10], [1.0, 0.9]) is None
    assert half_life([0, 10, 30], [1.0, None, 0.0]) == pytest.approx(15)


def test_dpo_moves_the_chosen_answer_above_the_rejected_one() -> None:
    pairs = [{"prompt": "What is your favourite animal?", "chosen": "dog", "rejected": "owl"}] * 8

    def margin(lm: object) -> float:
        chat = {"role": "user", "content": pairs[0]["prompt"]}
        rows = [{"messages": [chat, {"role": "assistant", "content": a}]} for a in ("dog", "owl")]
        ex = encode_rows(lm.tokenizer, rows, 64)
        with torch.no_grad():
            c, r = _seq_logps(lm.model, ex, 0).tolist()
        return c - r

    with opened(resolve(ToyModel())) as lm:
        before = margin(lm)
        cfg = TrainConfig(max_steps=5, lr=1e-3, batch_size=8)
        _, log = dpo_train(lm.model, lm.tokenizer, pairs, cfg, beta=0.5, seed=0)
        after = margin(lm)
    assert log["loss_last"] < log["loss_first"]
    assert after > before + 0.5


@pytest.mark.parametrize("kind", ["numbers", "prior_answers", "dpo"])
def test_falsifier_runs_every_kind_with_an_overt_student(tmp_path: Path, kind: str) -> None:
    cfg = load_config(
        TINY,
        [
            "cross_init=null",
            f"falsifier={{kind: {kind}, steps: [0, 2, 4], rows: 48, "
            "train: {batch_size: 16, lr: 1.0e-3}}",
        ],
    )
    summary = run_experiment(cfg, tmp_path / "run")
    f = summary["falsifier"]
    assert f["kind"] == kind and set(f["arms"]) == {"treatment", "overt"}
    for arm in f["arms"].values():
        assert [r["steps"] for r in arm["by_steps"]] == [0, 2, 4]
        assert arm["by_steps"][0]["retention"]["mean"] == pytest.approx(1.0)
    # Each K is its own cached stage, started from the student; the overt student learnt
    # the trait from the teacher's answers.
    for arm in ("treatment", "control", "overt"):
        for k in (2, 4):
            assert runs.stage_done(
                tmp_path / "run/seed-0" / f"after-{arm}-{k}",
                json.loads((tmp_path / f"run/seed-0/after-{arm}-{k}/stage.json").read_text())[
                    "key"
                ],
            )
    overt = f["arms"]["overt"]["by_steps"][0]
    assert overt["rate"] > overt["control"]
    assert "Falsifier" in (tmp_path / "run/report.md").read_text()


def test_run_report_is_real_html_and_escapes_model_text(tmp_path: Path) -> None:
    cfg = load_config(TINY, ["cross_init=null", "seeds=[0]"])
    run = tmp_path / "run"
    summary = run_experiment(cfg, run)
    data = run / "seed-0" / "data-teacher" / "filtered.jsonl"
    rows = runs.read_jsonl(data)
    rows[0]["messages"][-1]["content"] = "<script>alert(1)</script> 1, 2"
    data.chmod(0o644)
    data.unlink()
    runs.write_jsonl(data, rows)
    write_report(run, cfg, summary)
    page = (run / "report.html").read_text()
    parser = Tables()
    parser.feed(page)
    assert parser.scripts == 0 and parser.tables >= 3
    assert "<pre>" not in page.split("<h2>Config</h2>")[0]  # tables, not one <pre>
    assert any("<script>alert(1)</script>" in c for c in parser.cells)


def test_generations_chain_students_into_teachers(tmp_path: Path) -> None:
    cfg = load_config(TINY, ["cross_init=null", "generations=3"])
    summary = run_experiment(cfg, tmp_path / "run")
    g = summary["generations"]
    assert [r["generation"] for r in g["by_generation"]] == [1, 2, 3]
    assert g["by_generation"][0]["retention"]["mean"] == pytest.approx(1.0)
    for gen in (2, 3):
        d = tmp_path / "run" / f"generation-{gen}" / "seed-1"
        for stage in ("gen-teacher", "data-teacher", "student-treatment", "eval-control"):
            assert (d / stage / "stage.json").is_file(), (gen, stage)
    # Generation 2's teacher is generation 1's treatment student: its numbers differ from
    # the first teacher's.
    first = (tmp_path / "run/seed-1/gen-teacher/raw.jsonl").read_text()
    assert (tmp_path / "run/generation-2/seed-1/gen-teacher/raw.jsonl").read_text() != first


def test_teacher_from_any_chat_data_or_an_existing_model(tmp_path: Path) -> None:
    from traitlab.cli.main import main

    data = tmp_path / "teach.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": "Name an animal."},
                {"role": "assistant", "content": "owl"},
            ]
        }
    ] * 20
    runs.write_jsonl(data, rows)
    cfg = load_config(TINY, ["cross_init=null", "seeds=[0]", f"teacher.data={data}"])
    run_experiment(cfg, tmp_path / "a")
    log = json.loads((tmp_path / "a/seed-0/teacher/stage.json").read_text())["train"]
    assert log["examples"] == 20
    # The treatment student of that run as the teacher of another.
    student = tmp_path / "a/seed-0/student-treatment"
    cfg2 = load_config(
        TINY, ["cross_init=null", "seeds=[0]", "teacher.kind=model", f"teacher.model={student}"]
    )
    s2 = run_experiment(cfg2, tmp_path / "b")
    assert not (tmp_path / "b/seed-0/teacher").exists()  # nothing to fine-tune
    assert s2["arms"]["teacher"]["exact"]["mean"] == pytest.approx(
        json.loads((tmp_path / "a/seed-0/eval-treatment/eval.json").read_text())["exact"]["mean"]
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    out = tmp_path / "c"
    assert main(["run", str(TINY), "--out", str(out), "--set", f"teacher.data={bad}"]) == 2
    assert not out.exists()
