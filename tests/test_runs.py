import json
from pathlib import Path

import pytest
import torch

from traitlab.core import runs
from traitlab.core.errors import TraitlabError


def test_stable_hash_ignores_key_order() -> None:
    assert runs.stable_hash({"a": 1, "b": [1, 2]}) == runs.stable_hash({"b": [1, 2], "a": 1})
    assert runs.stable_hash({"a": 1}) != runs.stable_hash({"a": 2})


def test_stage_is_atomic(tmp_path: Path) -> None:
    d = tmp_path / "stage"
    with pytest.raises(RuntimeError):
        with runs.stage(d, "k1") as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("killed")
    assert not d.exists()
    assert not list(tmp_path.iterdir())  # no temporary directory left behind
    with runs.stage(d, "k1") as tmp:
        (tmp / "out.txt").write_text("done")
    assert runs.stage_done(d, "k1") and not runs.stage_done(d, "k2")
    with runs.stage(d, "k2") as tmp:
        (tmp / "out.txt").write_text("new")
    assert (d / "out.txt").read_text() == "new" and runs.stage_done(d, "k2")


def test_jsonl_round_trip_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl"
    runs.write_jsonl(p, [{"a": 1}, {"b": "é"}])
    assert runs.read_jsonl(p) == [{"a": 1}, {"b": "é"}]
    p.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(TraitlabError, match=r"x.jsonl:2: not valid JSON"):
        runs.read_jsonl(p)
    p.write_text("[1, 2]\n")
    with pytest.raises(TraitlabError, match="expected a JSON object"):
        runs.read_jsonl(p)
    with pytest.raises(TraitlabError, match="not found"):
        runs.read_jsonl(tmp_path / "nope.jsonl")


def test_manifest_has_provenance(tmp_path: Path) -> None:
    m = runs.write_manifest(
        tmp_path, kind="t", config_passed={"x": 1}, config_resolved={"x": 1, "y": 2}, seeds=[0]
    )
    saved = json.loads((tmp_path / "manifest.json").read_text())
    assert saved["config_hash"] == m["config_hash"] == runs.stable_hash({"x": 1, "y": 2})
    assert saved["packages"]["torch"] and "machine" in saved and "git" in saved
    # The ISA level torch runs its kernels at: runs on CPUs that differ here can round apart.
    assert saved["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert not runs.is_done(tmp_path)
    runs.mark_done(tmp_path, "h")
    assert runs.is_done(tmp_path)


def test_a_run_killed_after_taking_its_lock_resumes(tmp_path: Path) -> None:
    """Killed between the lock and the manifest, a run leaves only its lock file; the rerun
    must accept that directory (a sweep's kill-and-resume test hit this window)."""
    from traitlab.core.outputs import LOCK_FILE, check_output_dir

    d = tmp_path / "run"
    d.mkdir()
    (d / LOCK_FILE).write_text("pid 1 on host")
    check_output_dir(d, run=True)
    (d / "other.txt").write_text("x")
    with pytest.raises(TraitlabError, match="not a traitlab output"):
        check_output_dir(d, run=True)
