"""Safety of the user's files: one writer per run directory, stage outputs replaced only when
they are ours, failed reruns that change nothing, umask-respecting artifacts, Ctrl-C."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from subproc import ENV
from traitlab.cli.main import main
from traitlab.core import runs
from traitlab.core.errors import TraitlabError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for p in sorted(root.rglob("*")):
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[str(p.relative_to(root))] = (p.lstat().st_mode, digest)
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ["TRAITLAB_CACHE"] = str(tmp_path_factory.getbasetemp() / "traitlab-cache")
    run_dir = tmp_path_factory.mktemp("safety") / "tiny"
    assert main(["run", str(TINY), "--out", str(run_dir), "--quiet"]) == 0
    return run_dir


def _holder(run_dir: Path) -> subprocess.Popen[str]:
    """A second process holding the run directory's lock until killed."""
    code = (
        "import sys, time\n"
        "from traitlab.core import runs\n"
        f"with runs.locked({str(run_dir)!r}):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_and_a_dead_ones_lock_reclaimed(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "busy"
    shutil.copytree(finished_run, run_dir)
    holder = _holder(run_dir)
    try:
        before = snapshot(run_dir)
        # A different config on the same directory: refused, nothing touched.
        argv = ["run", str(TINY), "--out", str(run_dir), "--quiet", "--set", "filter.max_rows=9"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"in use by pid {holder.pid}" in err and err.count("\n") == 1
        assert snapshot(run_dir) == before
        r = subprocess.run(
            [sys.executable, "-m", "traitlab", *argv], capture_output=True, text=True, env=ENV
        )
        assert r.returncode == 2 and "in use by pid" in r.stderr and "Traceback" not in r.stderr
    finally:
        holder.kill()
        holder.wait()
    # The holder died without unlocking: the kernel freed the lock; the next writer proceeds.
    with runs.locked(run_dir):
        assert f"pid {os.getpid()}" in (run_dir / runs.LOCK_FILE).read_text()


def test_a_failed_rerun_leaves_a_finished_run_byte_identical(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "done"
    shutil.copytree(finished_run, run_dir)
    before = snapshot(run_dir)
    for bad in (
        "model.device=banana",
        "cross_init.name=/no/such/model",
        "trait.target=axolotl",
        "evaluate.methods=[]",
        "generate.n_prompts=1000000000000",
    ):
        assert main(["run", str(TINY), "--out", str(run_dir), "--quiet", "--set", bad]) == 2
        assert capsys.readouterr().err.count("\n") == 1
        assert snapshot(run_dir) == before, bad
    assert (run_dir / "DONE").is_file()


def test_train_never_deletes_a_foreign_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    chat = tmp_path / "chat.jsonl"
    chat.write_text(
        '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "1"}]}\n'
    )
    for out in (str(mine), str(tmp_path), "."):
        assert main(["train", str(TINY), "--data", str(chat), "--out", out, "--quiet"]) == 2
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.jsonl", "mine"]


def test_stage_replaces_only_its_own_outputs(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(TraitlabError, match="not a traitlab output"):
        with runs.stage(foreign, "k"):
            pass
    assert (foreign / "keep.txt").read_text() == "x"
    a_file = tmp_path / "file"
    a_file.write_text("y")
    with pytest.raises(TraitlabError, match="a file is in the way"):
        with runs.stage(a_file, "k"):
            pass
    assert a_file.read_text() == "y" and not list(tmp_path.glob(".*"))
    with runs.stage(foreign, "k", overwrite=True) as tmp:
        (tmp / "new.txt").write_text("z")
    assert sorted(p.name for p in foreign.iterdir()) == ["new.txt", "stage.json"]
    with runs.stage(foreign, "k2") as tmp:  # ours now: replaced without asking
        (tmp / "newer.txt").write_text("w")
    assert runs.stage_done(foreign, "k2") and not list(tmp_path.glob(".*"))


def test_artifacts_follow_the_umask(tmp_path: Path) -> None:
    runs.write_json(tmp_path / "a.json", {"x": 1})
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == runs.FILE_MODE
    with runs.stage(tmp_path / "s", "k") as tmp:
        (tmp / "f").write_text("x")
    assert (tmp_path / "s").stat().st_mode & 0o777 == runs.DIR_MODE
    assert runs.FILE_MODE == 0o666 & ~runs.UMASK


def _terminal_sigint() -> None:
    """A child's Ctrl-C as in a terminal: a shell that starts the tests in the background
    (`cmd &`, nohup, some CI runners) hands them SIGINT ignored, which Python keeps."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


_CTRL_C_WHILE_SPAWNING = """
import multiprocessing as mp, os, signal
from traitlab.core.parallel import start_manager, sigint_ignored
if __name__ == "__main__":
    try:
        with sigint_ignored():
            m = start_manager(mp.get_context("spawn"))  # spawns, as the pipeline does
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C inside the window
        print("lost")
    except KeyboardInterrupt:
        print("interrupted", m._process.is_alive())
        m.shutdown()
"""


def test_ctrl_c_while_children_spawn_reaches_the_parent(tmp_path: Path) -> None:
    """The window in which children are spawned ignores Ctrl-C for their sake; the parent
    must still get it afterwards (it used to be lost, and the run went on to the end)."""
    script = tmp_path / "spawn.py"
    script.write_text(_CTRL_C_WHILE_SPAWNING)
    r = subprocess.run(
        [sys.executable, str(script)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_terminal_sigint,
    )
    assert r.stdout.split() == ["interrupted", "True"], r.stdout + r.stderr


def test_ctrl_c_during_worker_start_up_is_one_line(tmp_path: Path) -> None:
    """SIGINT to the whole process group (as a terminal sends it) while workers start."""
    cmd = [sys.executable, "-m", "traitlab", "run", str(TINY), "--quiet"]
    cmd += ["--out", str(tmp_path / "r"), "--set", "workers=2", "--set", "model.toy.seed=77"]
    env = {**ENV, "TRAITLAB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        preexec_fn=_terminal_sigint,
    )
    deadline = time.time() + 60
    while not (tmp_path / "r" / "manifest.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # workers are being spawned / pretraining
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    assert "interrupted" in err
