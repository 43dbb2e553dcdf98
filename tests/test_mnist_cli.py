"""`traitlab mnist` / `traitlab theory`: run directories, caching, IDX input, one-line errors."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from traitlab.core.errors import TraitlabError
from traitlab.mnist.cli import register
from traitlab.mnist.data import write_idx

TINY = [
    "--models",
    "3",
    "--set",
    "student.n_noise=640",
    "--set",
    "teacher.epochs=2",
    "--set",
    "model.hidden=[32,32]",
    "--quiet",
    "--threads",
    "1",
]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="traitlab")
    register(p.add_subparsers(dest="command", required=True))
    return p


def run(*argv: str, capsys: pytest.CaptureFixture[str] | None = None) -> int:
    """Like traitlab.cli.main: a TraitlabError is one line on stderr and exit code 2."""
    args = _parser().parse_args(list(argv))
    try:
        return int(args.func(args))
    except TraitlabError as e:
        print(f"traitlab: error: {e}")
        return 2


def test_every_option_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    p = _parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    assert {"mnist", "theory"} <= set(sub.choices)
    for name in ("mnist", "theory"):
        for action in sub.choices[name]._actions:
            assert action.help, f"{name}: {action.option_strings} has no help"
        with pytest.raises(SystemExit) as e:
            p.parse_args([name, "--help"])
        assert e.value.code == 0
        assert "usage: traitlab" in capsys.readouterr().out


def test_run_directory_cached_and_complete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert (
        run(
            "mnist",
            *TINY,
            "--out",
            str(out),
            "--sweep",
            "epochs",
            "--set",
            "sweep.epochs=[1,2]",
            "--set",
            "sweep.n_models=2",
            "--chain",
            "2",
            "--set",
            "chain.n_models=2",
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "student, same init (aux only)" in printed and "report:" in printed
    for f in (
        "manifest.json",
        "summary.json",
        "report.md",
        "DONE",
        "plots/main.png",
        "plots/sweep-epochs.png",
        "plots/chain.png",
        "main/per_model.jsonl",
    ):
        assert (out / f).is_file(), f
    summary = json.loads((out / "summary.json").read_text())
    assert summary["main"]["conditions"]["student"]["n"] == 3
    assert set(summary["main"]["conditions"]) >= {
        "init",
        "teacher",
        "student",
        "cross_init",
        "all_logits",
    }
    assert [p["value"] for p in summary["sweeps"]["epochs"]["points"]] == [1, 2]
    assert len(summary["chain"]["per_generation"]) == 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "mnist" and manifest["config_resolved"]["n_models"] == 3
    stamp = (out / "main" / "stage.json").read_text()
    # a rerun reuses every stage and gives the same numbers
    assert run("mnist", *TINY, "--out", str(out)) == 0
    assert (out / "main" / "stage.json").read_text() == stamp
    again = json.loads((out / "summary.json").read_text())
    assert again["main"]["conditions"] == summary["main"]["conditions"]


def test_mnist_on_idx_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    # A learnable toy "MNIST": the class decides which 28x28 block is bright.
    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, (c // 5) * 14 : (c // 5) * 14 + 14, (c % 5) * 5 : (c % 5) * 5 + 5] = 250
        return x, y

    xtr, ytr = make(200)
    xte, yte = make(50)
    d = tmp_path / "mnist"
    write_idx(d / "train-images-idx3-ubyte.gz", xtr)
    write_idx(d / "train-labels-idx1-ubyte.gz", ytr)
    write_idx(d / "t10k-images-idx3-ubyte", xte)
    write_idx(d / "t10k-labels-idx1-ubyte", yte)
    out = tmp_path / "run"
    assert run("mnist", *TINY, "--data", str(d), "--out", str(out)) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["data"]["d_in"] == 784 and s["data"]["n_train"] == 200
    assert s["main"]["conditions"]["teacher"]["mean"] > 0.5


def test_bad_input_is_one_line_and_leaves_no_artifacts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert run("mnist", "--set", "model.bogus=1", "--out", str(out)) == 2
    assert "unknown field 'model.bogus'" in capsys.readouterr().out
    assert run("mnist", "--data", str(tmp_path / "missing"), "--out", str(out)) == 2
    assert "no such file" in capsys.readouterr().out
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (bad / name).write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05")
    assert run("mnist", *TINY, "--data", str(bad), "--out", str(out)) == 2
    err = capsys.readouterr().out.strip()
    assert err.count("\n") == 0 and "truncated IDX header" in err
    assert not (out / "DONE").exists() and not (out / "main").exists()
    assert run("mnist", "--models", "0", "--out", str(out)) == 2
    assert "n_models" in capsys.readouterr().out
    assert run("theory", "--steps", "1e-3,abc", "--out", str(out)) == 2
    assert "--steps" in capsys.readouterr().out
    assert run("mnist", "--config", "x.yaml", "--preset", "paper") == 2


def test_theory_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "theory"
    assert (
        run(
            "theory",
            "--draws",
            "4",
            "--steps",
            "1e-3,100",
            "--no-full-run",
            "--set",
            "model.hidden=[32,32]",
            "--out",
            str(out),
            "--quiet",
            "--threads",
            "1",
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "eps=0.001" in printed and "shared_init" in printed
    for f in ("manifest.json", "summary.json", "report.md", "plots/theory.png", "DONE"):
        assert (out / f).is_file(), f
    s = json.loads((out / "summary.json").read_text())
    first = next(
        r for r in s["rows"] if r["teacher"] == "eps=0.001" and r["student_start"] == "shared_init"
    )
    assert first["positive"] == 4


def test_wired_into_main_cli() -> None:
    cli = pytest.importorskip("traitlab.cli.main")
    p = cli.build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    assert {"mnist", "theory"} <= set(sub.choices)
