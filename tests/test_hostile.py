"""Hostile input, every command: one line on stderr, exit code 2, and the file tree untouched.

Each case builds its bad input inside a sandbox directory (the working directory of the
call), snapshots the whole tree (paths, modes, bytes), runs `traitlab ...` in-process, and
checks: the exit code, exactly one line on stderr starting `traitlab: error:` with the
expected words, no traceback, and the same tree afterwards. A case is added for every bug
fixed (issue 9's list is here, case by case).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from subproc import ENV
from traitlab.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
TINY = (ROOT / "configs" / "tiny.yaml").read_text()
RAW = '{"id": 0, "prompt": "Continue: 1, 2, 3.", "completion": "4, 5, 6"}\n'
CHAT = '{"messages": [{"role": "user", "content": "Continue: 1, 2."}, {"role": "assistant", "content": "3, 4"}]}\n'


@dataclass
class Case:
    id: str
    argv: list[str]
    expect: str  # words the error line must contain
    files: dict[str, str | bytes] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None
    code: int = 2


def cfg(text: str) -> dict[str, str | bytes]:
    return {"c.yaml": text}


def tiny_with(extra: str) -> dict[str, str | bytes]:
    return {"c.yaml": TINY + extra}


def _dir_with(name: str, files: dict[str, str]) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for k, v in files.items():
            (d / k).write_text(v)

    return make


# Config problems, asked of every command that reads an experiment config.
BAD_CONFIGS: list[tuple[str, dict[str, str | bytes], str]] = [
    ("missing", {}, "config file not found"),
    ("empty", cfg(""), "empty config"),
    ("list", cfg("- a\n- b\n"), "expected a mapping"),
    ("scalar", cfg("42\n"), "expected a mapping"),
    ("syntax", cfg("name: [unclosed\n"), "not valid YAML"),
    ("not-utf8", {"c.yaml": b"name: \xff\xfe\n"}, "not UTF-8"),
    ("unknown-field", cfg("name: x\nstudnet: {lr: 1}\n"), "unknown field 'studnet'"),
    ("unknown-nested", tiny_with("student: {lrr: 1}\n"), "unknown field 'student.lrr'"),
    ("bad-type", cfg("seeds: abc\n"), "field 'seeds'"),
    ("huge-n", tiny_with("generate: {n_prompts: 1000000000000}\n"), "less than or equal to"),
    ("zero-n", tiny_with("generate: {n_prompts: 0}\n"), "greater than or equal to 1"),
    ("escaping-name", tiny_with("name: ../../etc\n"), "not a plain name"),
    ("no-eval-methods", tiny_with("evaluate: {methods: []}\n"), "field 'evaluate.methods'"),
    ("dup-seeds", tiny_with("seeds: [1, 1]\n"), "seeds must be distinct"),
    ("bad-category", tiny_with("trait: {category: fish, target: owl}\n"), "trait.category"),
    ("neg-temperature", tiny_with("generate: {temperature: -1}\n"), "generate.temperature"),
    ("zero-top-p", tiny_with("generate: {top_p: 0}\n"), "generate.top_p"),
    ("zero-workers", tiny_with("workers: 0\n"), "field 'workers'"),
]

# Model problems: caught before any work, for every command that loads a model.
BAD_MODELS: list[tuple[str, str, Callable[[Path], None] | None, str]] = [
    ("device-banana", "model: {name: toy, device: banana}\n", None, "device 'banana'"),
    # cuda:99 fails on every machine: "no CUDA GPU" without one, "only N device(s)" with one
    # (a bare `cuda` passed on the GPU machine, which is not a hostile input there).
    ("device-cuda", "model: {name: toy, device: 'cuda:99'}\n", None, "device 'cuda:99'"),
    ("path-missing", "model: {name: ./no/such/model}\n", None, "no such directory"),
    ("path-is-file", "model: {name: ./afile}\n", None, "is a file"),
    (
        "no-config-json",
        "model: {name: ./m}\n",
        _dir_with("m", {"weights.txt": "x"}),
        "no config.json",
    ),
    (
        "pickle-only",
        "model: {name: ./m}\n",
        _dir_with("m", {"config.json": "{}", "pytorch_model.bin": "x"}),
        "never unpickles",
    ),
    (
        "corrupt-safetensors",
        "model: {name: ./m}\n",
        _dir_with("m", {"config.json": '{"model_type": "llama"}', "model.safetensors": "junk"}),
        "cannot load",
    ),
    ("bad-hub-id", "model: {name: 'not a hub id!!'}\n", None, "neither a local directory"),
    ("hub-offline", "model: {name: someone/not-cached-model}\n", None, "hub cannot be reached"),
]


def _touch_file(root: Path) -> None:
    (root / "afile").write_text("not a model\n")


def cases() -> list[Case]:
    out: list[Case] = []
    commands = {
        "run": lambda: ["run", "c.yaml", "--out", "r", "--quiet"],
        "generate": lambda: ["generate", "c.yaml", "--out", "raw.jsonl", "--quiet"],
        "train": lambda: ["train", "c.yaml", "--data", "chat.jsonl", "--out", "s", "--quiet"],
        "evaluate": lambda: ["evaluate", "c.yaml", "--quiet"],
        "config": lambda: ["config", "--check", "c.yaml"],
    }
    for cmd, argv in commands.items():
        for name, files, expect in BAD_CONFIGS:
            if cmd == "config" and name in ("missing",):
                continue
            out.append(Case(f"{cmd}-config-{name}", argv(), expect, {**files, "chat.jsonl": CHAT}))
    model_cmds = {k: v for k, v in commands.items() if k != "config"}
    for cmd, argv in model_cmds.items():
        for name, model, setup, expect in BAD_MODELS:
            if cmd == "evaluate" and name == "corrupt-safetensors":
                expect = "cannot load"
            setup_all = _chain(_touch_file, setup)
            out.append(
                Case(
                    f"{cmd}-model-{name}",
                    argv(),
                    expect,
                    {**tiny_with(model), "chat.jsonl": CHAT},
                    setup_all,
                )
            )
    out += [
        Case(
            "run-target-unspellable",
            commands["run"](),
            "cannot spell",
            tiny_with("trait: {target: axolotl}\n"),
        ),
        Case(
            "evaluate-target-unspellable",
            commands["evaluate"](),
            "cannot spell",
            tiny_with("trait: {target: axolotl}\n"),
        ),
        Case(
            "run-override-no-equals",
            ["run", "c.yaml", "--set", "seeds"],
            "expected key.path=value",
            cfg(TINY),
        ),
        Case(
            "run-override-unknown",
            ["run", "c.yaml", "--set", "studnet.lr=1"],
            "unknown field",
            cfg(TINY),
        ),
        Case(
            "run-override-bad-value",
            ["run", "c.yaml", "--set", "student.lr=-1"],
            "student.lr",
            cfg(TINY),
        ),
        Case(
            "config-is-dir",
            ["run", "adir", "--out", "r"],
            "is a directory",
            setup=lambda r: (r / "adir").mkdir(),
        ),
        # output paths
        Case(
            "run-out-is-file",
            ["run", "c.yaml", "--out", "afile", "--quiet"],
            "a file is in the way",
            cfg(TINY),
            _touch_file,
        ),
        Case(
            "run-out-foreign-dir",
            ["run", "c.yaml", "--out", "mine", "--quiet"],
            "not a traitlab output",
            cfg(TINY),
            _dir_with("mine", {"thesis.tex": "x"}),
        ),
        Case(
            "run-out-cwd",
            ["run", "c.yaml", "--out", ".", "--quiet"],
            "working directory",
            cfg(TINY),
            _touch_file,
        ),
        Case(
            "run-out-parent",
            ["run", "c.yaml", "--out", "..", "--quiet"],
            "working directory",
            cfg(TINY),
        ),
        Case(
            "run-out-under-file",
            ["run", "c.yaml", "--out", "afile/r", "--quiet"],
            "is a file, not a directory",
            cfg(TINY),
            _touch_file,
        ),
        Case(
            "demo-out-is-file",
            ["demo", "--out", "afile", "--quiet"],
            "a file is in the way",
            setup=_touch_file,
        ),
        Case(
            "demo-out-foreign",
            ["demo", "--out", "mine", "--quiet"],
            "not a traitlab output",
            setup=_dir_with("mine", {"a.txt": "x"}),
        ),
        Case("demo-bad-override", ["demo", "--set", "student.lrr=1"], "unknown field", {}),
        Case(
            "train-out-foreign-dir",
            ["train", "c.yaml", "--data", "chat.jsonl", "--out", "mine"],
            "not a traitlab output",
            {**cfg(TINY), "chat.jsonl": CHAT},
            _dir_with("mine", {"notes.txt": "keep me"}),
        ),
        Case(
            "train-out-is-file",
            ["train", "c.yaml", "--data", "chat.jsonl", "--out", "afile"],
            "a file is in the way",
            {**cfg(TINY), "chat.jsonl": CHAT},
            _touch_file,
        ),
        Case(
            "train-out-cwd",
            ["train", "c.yaml", "--data", "chat.jsonl", "--out", "."],
            "working directory",
            {**cfg(TINY), "chat.jsonl": CHAT},
        ),
        Case(
            "train-out-cwd-overwrite",
            ["train", "c.yaml", "--data", "chat.jsonl", "--out", ".", "--overwrite"],
            "working directory",
            {**cfg(TINY), "chat.jsonl": CHAT},
        ),
        Case(
            "train-out-under-file",
            ["train", "c.yaml", "--data", "chat.jsonl", "--out", "afile/s"],
            "is a file, not a directory",
            {**cfg(TINY), "chat.jsonl": CHAT},
            _touch_file,
        ),
        Case(
            "generate-out-is-dir",
            ["generate", "c.yaml", "--out", "adir"],
            "is a directory",
            cfg(TINY),
            lambda r: (r / "adir").mkdir(),
        ),
        Case(
            "generate-out-under-file",
            ["generate", "c.yaml", "--out", "afile/raw.jsonl"],
            "is a file, not a directory",
            cfg(TINY),
            _touch_file,
        ),
        Case(
            "evaluate-out-is-dir",
            ["evaluate", "c.yaml", "--out", "adir"],
            "is a directory",
            cfg(TINY),
            lambda r: (r / "adir").mkdir(),
        ),
        Case(
            "generate-model-missing",
            ["generate", "c.yaml", "--out", "raw.jsonl", "--model", "nope"],
            "no such directory",
            cfg(TINY),
        ),
        Case(
            "evaluate-model-is-file",
            ["evaluate", "c.yaml", "--model", "afile"],
            "is a file",
            cfg(TINY),
            _touch_file,
        ),
        Case(
            "evaluate-model-no-config",
            ["evaluate", "c.yaml", "--model", "m"],
            "no config.json",
            cfg(TINY),
            _dir_with("m", {"x": "y"}),
        ),
        # training data
        Case(
            "train-data-missing",
            ["train", "c.yaml", "--data", "nope.jsonl", "--out", "s"],
            "file not found",
            cfg(TINY),
        ),
        Case(
            "train-data-empty",
            ["train", "c.yaml", "--data", "e.jsonl", "--out", "s"],
            "no rows",
            {**cfg(TINY), "e.jsonl": "\n\n"},
        ),
        Case(
            "train-data-not-json",
            ["train", "c.yaml", "--data", "d.jsonl", "--out", "s"],
            "not valid JSON",
            {**cfg(TINY), "d.jsonl": "{oops\n"},
        ),
        Case(
            "train-data-not-object",
            ["train", "c.yaml", "--data", "d.jsonl", "--out", "s"],
            "expected a JSON object",
            {**cfg(TINY), "d.jsonl": "[1, 2]\n"},
        ),
        Case(
            "train-data-no-messages",
            ["train", "c.yaml", "--data", "d.jsonl", "--out", "s"],
            "d.jsonl:1",
            {**cfg(TINY), "d.jsonl": '{"text": "hi"}\n'},
        ),
        Case(
            "train-data-ends-with-user",
            ["train", "c.yaml", "--data", "d.jsonl", "--out", "s"],
            "ending with an assistant turn",
            {
                **cfg(TINY),
                "d.jsonl": '{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}\n',
            },
        ),
        Case(
            "train-data-bad-role",
            ["train", "c.yaml", "--data", "d.jsonl", "--out", "s"],
            "d.jsonl:2",
            {
                **cfg(TINY),
                "d.jsonl": CHAT
                + '{"messages": [{"role": "robot", "content": "a"}, {"role": "assistant", "content": "b"}]}\n',
            },
        ),
        Case(
            "train-data-content-not-string",
            ["train", "c.yaml", "--data", "d.jsonl", "--out", "s"],
            "string 'content'",
            {
                **cfg(TINY),
                "d.jsonl": '{"messages": [{"role": "user", "content": 1}, {"role": "assistant", "content": "b"}]}\n',
            },
        ),
        Case(
            "train-data-not-utf8",
            ["train", "c.yaml", "--data", "d.jsonl", "--out", "s"],
            "not UTF-8",
            {**cfg(TINY), "d.jsonl": b'{"messages": "\xff"}\n'},
        ),
        Case(
            "train-data-is-dir",
            ["train", "c.yaml", "--data", "adir", "--out", "s"],
            "is a directory",
            cfg(TINY),
            lambda r: (r / "adir").mkdir(),
        ),
        Case(
            "train-teacher-missing",
            ["train", "c.yaml", "--data", "chat.jsonl", "--out", "s", "--teacher", "/nonexistent"],
            "no such directory",
            {**tiny_with("student: {loss: soft}\n"), "chat.jsonl": CHAT},
        ),
        Case(
            "train-soft-without-teacher",
            ["train", "c.yaml", "--data", "chat.jsonl", "--out", "s"],
            "needs --teacher",
            {**tiny_with("student: {loss: soft}\n"), "chat.jsonl": CHAT},
        ),
        Case(
            "train-teacher-not-soft",
            ["train", "c.yaml", "--data", "chat.jsonl", "--out", "s", "--teacher", "m"],
            "soft only",
            {**cfg(TINY), "chat.jsonl": CHAT},
            _dir_with("m", {"config.json": "{}"}),
        ),
        Case(
            "train-model-missing",
            ["train", "c.yaml", "--data", "chat.jsonl", "--out", "s", "--model", "nope"],
            "no such directory",
            {**cfg(TINY), "chat.jsonl": CHAT},
        ),
        # filter
        Case(
            "filter-raw-missing", ["filter", "nope.jsonl", "--out", "f.jsonl"], "file not found", {}
        ),
        Case(
            "filter-raw-empty",
            ["filter", "e.jsonl", "--out", "f.jsonl"],
            "no rows to filter",
            {"e.jsonl": ""},
        ),
        Case(
            "filter-raw-blank-lines",
            ["filter", "e.jsonl", "--out", "f.jsonl"],
            "no rows to filter",
            {"e.jsonl": "\n \n"},
        ),
        Case(
            "filter-raw-not-json",
            ["filter", "r.jsonl", "--out", "f.jsonl"],
            "r.jsonl:2: not valid JSON",
            {"r.jsonl": RAW + "nope\n"},
        ),
        Case(
            "filter-raw-wrong-fields",
            ["filter", "r.jsonl", "--out", "f.jsonl"],
            "expected 'prompt' and 'completion'",
            {"r.jsonl": '{"a": 1}\n'},
        ),
        Case(
            "filter-raw-non-string",
            ["filter", "r.jsonl", "--out", "f.jsonl"],
            "must be strings",
            {"r.jsonl": '{"prompt": 1, "completion": 2}\n'},
        ),
        Case(
            "filter-raw-not-utf8",
            ["filter", "r.jsonl", "--out", "f.jsonl"],
            "not UTF-8",
            {"r.jsonl": b"\xff\xfe{}\n"},
        ),
        Case(
            "filter-raw-is-dir",
            ["filter", "adir", "--out", "f.jsonl"],
            "is a directory",
            setup=lambda r: (r / "adir").mkdir(),
        ),
        Case(
            "filter-all-rejected",
            ["filter", "r.jsonl", "--out", "f.jsonl"],
            "0 of 1 completions passed",
            {"r.jsonl": '{"prompt": "p", "completion": "owls!"}\n'},
        ),
        Case(
            "filter-out-is-dir",
            ["filter", "r.jsonl", "--out", "adir"],
            "is a directory",
            {"r.jsonl": RAW},
            lambda r: (r / "adir").mkdir(),
        ),
        Case(
            "filter-out-is-input",
            ["filter", "r.jsonl", "--out", "r.jsonl"],
            "used twice",
            {"r.jsonl": RAW},
        ),
        Case(
            "filter-rejected-is-dir",
            ["filter", "r.jsonl", "--out", "f.jsonl", "--rejected", "adir"],
            "is a directory",
            {"r.jsonl": RAW},
            lambda r: (r / "adir").mkdir(),
        ),
        Case(
            "filter-summary-path-is-dir",
            ["filter", "r.jsonl", "--out", "f.jsonl"],
            "is a directory",
            {"r.jsonl": RAW},
            lambda r: (r / "f.filter.json").mkdir(),
        ),
        Case(
            "filter-bad-config",
            ["filter", "r.jsonl", "--out", "f.jsonl", "--config", "c.yaml"],
            "unknown field",
            {"r.jsonl": RAW, **cfg("filter: {maxrows: 1}\n")},
        ),
        Case(
            "filter-bad-set",
            ["filter", "r.jsonl", "--out", "f.jsonl", "--set", "filter.max_rows=-3"],
            "max_rows",
            {"r.jsonl": RAW},
        ),
        Case(
            "filter-unknown-set",
            ["filter", "r.jsonl", "--out", "f.jsonl", "--set", "filter.nope=1"],
            "unknown field",
            {"r.jsonl": RAW},
        ),
        # config command
        Case(
            "config-check-missing", ["config", "--check", "nope.yaml"], "config file not found", {}
        ),
        # mnist / theory
        Case(
            "mnist-chain-zero", ["mnist", "--chain", "0", "--out", "m"], "at least 1 generation", {}
        ),
        Case(
            "mnist-config-and-preset",
            ["mnist", "--config", "c.yaml", "--preset", "paper"],
            "not both",
            cfg("name: x\n"),
        ),
        Case("mnist-bad-set", ["mnist", "--set", "student.lrr=1"], "unknown field", {}),
        Case("mnist-data-missing", ["mnist", "--data", "nowhere", "--out", "m"], "nowhere", {}),
        Case(
            "mnist-device-banana",
            ["mnist", "--set", "device=banana", "--out", "m"],
            "device 'banana'",
            {},
        ),
        Case(
            "mnist-out-is-file",
            ["mnist", "--out", "afile"],
            "a file is in the way",
            setup=_touch_file,
        ),
        Case(
            "mnist-out-foreign",
            ["mnist", "--out", "mine"],
            "not a traitlab output",
            setup=_dir_with("mine", {"a.txt": "x"}),
        ),
        Case("mnist-config-empty", ["mnist", "--config", "c.yaml"], "empty config", cfg("")),
        Case(
            "mnist-config-not-utf8",
            ["mnist", "--config", "c.yaml"],
            "not UTF-8",
            {"c.yaml": b"\xff\n"},
        ),
        Case("theory-bad-steps", ["theory", "--steps", "a,b"], "expected numbers", {}),
        Case(
            "theory-out-foreign",
            ["theory", "--out", "mine"],
            "not a traitlab output",
            setup=_dir_with("mine", {"a.txt": "x"}),
        ),
        Case("theory-device-cuda", ["theory", "--set", "device=cuda:3", "--out", "t"], "cuda", {}),
        # sweeps: every cell is checked before anything is written
        Case("sweep-missing", ["sweep", "nope.yaml", "--out", "s"], "not found", {}),
        Case("sweep-no-file", ["sweep", "--out", "s"], "pass a sweep YAML", {}),
        Case(
            "sweep-not-yaml",
            ["sweep", "s.yaml", "--out", "s"],
            "not valid YAML",
            {"s.yaml": "a: [1"},
        ),
        Case(
            "sweep-unknown-field",
            ["sweep", "s.yaml", "--out", "s"],
            "unknown field 'cels'",
            {"s.yaml": "cels: []\n"},
        ),
        Case(
            "sweep-bad-cell",
            ["sweep", "s.yaml", "--out", "s"],
            "sweep cell 'x'",
            {
                "s.yaml": "experiment: t.yaml\ncells: [{label: x, set: {student.lr: -1}}]\n",
                "t.yaml": TINY,
            },
        ),
        Case(
            "sweep-unknown-grid-field",
            ["sweep", "s.yaml", "--out", "s"],
            "student.lrr",
            {"s.yaml": "experiment: t.yaml\ngrid: {student.lrr: [1]}\n", "t.yaml": TINY},
        ),
        Case(
            "sweep-empty-grid",
            ["sweep", "s.yaml", "--out", "s"],
            "no values",
            {"s.yaml": "experiment: t.yaml\ngrid: {student.lr: []}\n", "t.yaml": TINY},
        ),
        Case(
            "sweep-duplicate-labels",
            ["sweep", "s.yaml", "--out", "s"],
            "distinct",
            {"s.yaml": "experiment: t.yaml\ncells: [{label: a}, {label: a}]\n", "t.yaml": TINY},
        ),
        Case(
            "sweep-bad-baseline",
            ["sweep", "s.yaml", "--out", "s"],
            "baseline 'z'",
            {"s.yaml": "experiment: t.yaml\nbaseline: z\ncells: [{label: a}]\n", "t.yaml": TINY},
        ),
        Case(
            "sweep-missing-experiment",
            ["sweep", "s.yaml", "--out", "s"],
            "not found",
            {"s.yaml": "experiment: gone.yaml\n"},
        ),
        Case(
            "sweep-out-foreign",
            ["sweep", "s.yaml", "--out", "mine"],
            "not a traitlab output",
            {"s.yaml": "experiment: t.yaml\n", "t.yaml": TINY},
            setup=_dir_with("mine", {"a.txt": "x"}),
        ),
        Case(
            "run-teacher-data-missing",
            ["run", "c.yaml", "--out", "r", "--set", "teacher.data=none.jsonl"],
            "no such file",
            cfg(TINY),
        ),
        Case(
            "run-teacher-model-missing",
            [
                "run",
                "c.yaml",
                "--out",
                "r",
                "--set",
                "teacher.kind=model",
                "--set",
                "teacher.model=./nowhere",
            ],
            "no model directory",
            cfg(TINY),
        ),
        Case(
            "run-falsifier-bad-steps",
            ["run", "c.yaml", "--set", "falsifier={steps: [5, 1]}"],
            "falsifier.steps",
            cfg(TINY),
        ),
    ]
    return out


def _chain(*fs: Callable[[Path], None] | None) -> Callable[[Path], None]:
    def run(root: Path) -> None:
        for f in fs:
            if f is not None:
                f(root)

    return run


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under `root` with its mode and content hash."""
    out: dict[str, tuple[int, str]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[str(p.relative_to(root))] = (st.st_mode, digest)
    return out


ALL = cases()


def test_there_are_at_least_100_cases() -> None:
    assert len(ALL) >= 100
    assert len({c.id for c in ALL}) == len(ALL)


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_hostile_input(
    case: Case,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    box = tmp_path / "box"
    work = box / "work"
    work.mkdir(parents=True)
    for name, content in case.files.items():
        p = work / name
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    if case.setup is not None:
        case.setup(work)
    monkeypatch.chdir(work)
    before = snapshot(box)
    code = main(case.argv)
    err = capsys.readouterr().err
    assert code == case.code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("traitlab: error: "), err
    assert case.expect in lines[0], err
    assert "Traceback" not in err
    assert snapshot(box) == before, "the file tree changed"


def test_broken_pipe_is_quiet(tmp_path: Path) -> None:
    import subprocess
    import sys

    r = subprocess.run(
        f"{shutil.which('python3') and sys.executable} -m traitlab config --schema | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=ENV,
    )
    assert r.stdout == '{\n "$defs"'[:10]
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr
