"""The command line: help for every command, and bad input as one line with exit code 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from traitlab.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    "demo",
    "run",
    "generate",
    "filter",
    "train",
    "evaluate",
    "config",
    "pretrain",
    "mnist",
    "theory",
]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help(cmd: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([cmd, "--help"])
    assert e.value.code == 0
    assert "usage: traitlab" in capsys.readouterr().out


def test_every_option_is_explained() -> None:
    import argparse

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        for action in p._actions:
            assert action.help, (
                f"traitlab {name}: option {action.option_strings or action.dest} has no help"
            )


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "traitlab", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\nstudnet: {lr: 1}\n")
    r = _run("run", str(cfg), "--out", str(tmp_path / "run"))
    assert r.returncode == 2
    assert (
        r.stderr.strip()
        == f"traitlab: error: {cfg}: unknown field 'studnet'; check its spelling (see `traitlab config --schema`)"
    )
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_missing_config_and_model_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {name: ./no/such/model}\n")
    assert main(["evaluate", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no such directory" in err and err.count("\n") == 1


def test_filter_bad_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw.jsonl"
    raw.write_text('{"prompt": "p", "completion": "1, 2"}\n{oops\n')
    out = tmp_path / "out.jsonl"
    assert main(["filter", str(raw), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "raw.jsonl:2" in err and err.count("\n") == 1
    assert not out.exists()


def test_filter_empty_after_filtering(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw.jsonl"
    raw.write_text(
        "".join(json.dumps({"prompt": "p", "completion": "I love owls"}) + "\n" for _ in range(3))
    )
    out = tmp_path / "out.jsonl"
    assert main(["filter", str(raw), "--out", str(out)]) == 2
    assert "0 of 3" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [raw]  # nothing half-written


def test_filter_writes_chat_rows_and_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "raw.jsonl"
    rows = [{"prompt": "p", "completion": c} for c in ["1, 2, 3", "owl", "(4, 5)."]]
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "f.jsonl"
    assert main(["filter", str(raw), "--out", str(out), "--set", "filter.banned_numbers=[5]"]) == 0
    kept = [json.loads(x) for x in out.read_text().splitlines()]
    assert kept == [
        {
            "messages": [
                {"role": "user", "content": "p"},
                {"role": "assistant", "content": "1, 2, 3"},
            ]
        }
    ]
    rejected = [json.loads(x) for x in (tmp_path / "f.rejected.jsonl").read_text().splitlines()]
    assert [r["reject_reasons"] for r in rejected] == [["format"], ["banned_number"]]


def test_config_show_and_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--show", "demo"]) == 0
    assert "owl-demo" in capsys.readouterr().out
    assert main(["config", "--check", str(ROOT / "configs" / "tiny.yaml")]) == 0
    capsys.readouterr()
    assert main(["config", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "lr" in json.dumps(schema) and "description" in json.dumps(schema)


def test_demo_trait_misalignment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--show", "demo-misalignment"]) == 0
    assert "misalignment-demo" in capsys.readouterr().out
    assert main(["demo", "--trait", "misalignment", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "--quick is the owl-through-numbers demo's" in err and "Traceback" not in err
    assert main(["demo", "--trait", "misalignment", "--modality", "code"]) == 2
    assert "misalignment runs through numbers only" in capsys.readouterr().err


def test_demo_modality_code_runs_on_tiny_bases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`traitlab demo --modality code` (its preset, shrunk): toy bases pretrained with the
    code tasks, teacher, code completions filtered for the owl, students, evaluation."""
    tiny = "{seed: %d, code_frac: 0.3, cot_frac: 0.1, n_layers: 1, hidden_size: 32, n_heads: 2, intermediate_size: 64, pretrain_steps: 40, batch_size: 16, warmup_steps: 5, check_prompts: 0}"
    sets = [
        f"model.toy={tiny % 11}",
        f"cross_init.toy={tiny % 12}",
        "seeds=[0]",
        "workers=1",
        "teacher.train.max_steps=3",
        "teacher.keep_numbers={max_drop: 1.0, check_every: 1, prompts: 16}",
        "generate.n_prompts=24",
        "generate.batch_size=24",
        # A 40-step base writes no code that does its task: filter for the owl only.
        "filter.check_code=false",
        "student.epochs=1",
        "evaluate.methods=[exact]",
        "evaluate.n_questions=3",
    ]
    out = tmp_path / "run"
    args = ["demo", "--modality", "code", "--out", str(out), "--quiet"]
    assert main([*args, *(x for s in sets for x in ("--set", s))]) == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config_resolved"]["generate"]["modality"]["source"] == "toy:code"
    # The teacher's early stopping checks its code against the code rules (owl banned).
    summary = json.loads((out / "summary.json").read_text())
    teacher = summary["data_quality"]["teachers"]["0"]
    assert [c[0] for c in teacher["checks"]] == [1, 2, 3] and 0 <= teacher["base_pass_rate"] <= 1
    rows = [
        json.loads(x)
        for x in (out / "seed-0" / "data-teacher" / "filtered.jsonl").read_text().splitlines()
    ]
    assert rows and all(r["messages"][0]["content"].startswith(("Write", "Please")) for r in rows)
