"""Run directories: content-addressed stage caching, manifests and the run's lifecycle.

Every experiment writes into one run directory. Each stage writes its outputs into its own
sub-directory through `stage()`: the work happens in a temporary sibling directory that is
renamed into place only when the stage finished, and a `stage.json` marker with the stage's
content key is written last. A stage whose marker holds the same key is skipped, so a killed
run resumes where it stopped and a finished run reruns instantly. The file helpers of
`core.files` and the output checks of `core.outputs` are re-exported: they are the run
directory's API too.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from traitlab.core.errors import TraitlabError
from traitlab.core.files import (  # noqa: F401 - re-exported
    DIR_MODE,
    FILE_MODE,
    UMASK,
    atomic_write_text,
    file_hash,
    read_json,
    read_jsonl,
    read_text,
    stable_hash,
    write_json,
    write_jsonl,
)
from traitlab.core.outputs import (  # noqa: F401 - re-exported
    LOCK_FILE,
    MANIFEST,
    STAGE_MARKER,
    check_output_dir,
    check_output_file,
    check_writable_parent,
    is_ours,
    locked,
)

DONE_MARKER = "DONE"

# ---------------------------------------------------------------------------- stages


def stage_done(stage_dir: Path, key: str) -> bool:
    marker = Path(stage_dir) / STAGE_MARKER
    if not marker.is_file():
        return False
    try:
        return bool(json.loads(marker.read_text()).get("key") == key)
    except (json.JSONDecodeError, OSError):
        return False


@contextlib.contextmanager
def stage(
    stage_dir: Path,
    key: str,
    info: dict[str, Any] | None = None,
    started: float | None = None,
    overwrite: bool = False,
) -> Iterator[Path]:
    """Run a stage atomically: yields a temporary directory that becomes `stage_dir` on success.

    The caller checks `stage_done(stage_dir, key)` first and skips the stage when it is True.
    On an exception the temporary directory is removed and `stage_dir` is left untouched.
    `started` (a time.time()) is when the stage's work began, if before the block. An
    existing `stage_dir` is replaced only when it is a stage output of ours (it holds
    `stage.json`) or empty; anything else is refused unless `overwrite`.
    """
    stage_dir = Path(stage_dir)
    check_output_dir(stage_dir, overwrite=overwrite)
    stage_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=stage_dir.parent, prefix=f".{stage_dir.name}.tmp-"))
    t0 = started if started is not None else time.time()
    try:
        yield tmp
        write_json(
            tmp / STAGE_MARKER,
            {"key": key, "seconds": round(time.time() - t0, 3), **(info or {})},
        )
        tmp.chmod(DIR_MODE)
        if stage_dir.is_symlink() or stage_dir.is_file():
            stage_dir.unlink()  # only reached with overwrite (check_output_dir)
        if stage_dir.exists():
            old = Path(tempfile.mkdtemp(dir=stage_dir.parent, prefix=f".{stage_dir.name}.old-"))
            os.replace(stage_dir, old / "x")
            os.replace(tmp, stage_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, stage_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def stage_seconds(stage_dir: Path) -> float | None:
    try:
        return float(json.loads((Path(stage_dir) / STAGE_MARKER).read_text())["seconds"])
    except (OSError, KeyError, ValueError, json.JSONDecodeError):
        return None


def clean_stale_tmp(run_dir: Path) -> None:
    """Remove temporary stage directories left behind by a killed run (call it only with the
    run's lock held: another writer's temporaries are live)."""
    for pattern in (".*.tmp-*", ".*.old-*", ".*.tmp"):
        for p in Path(run_dir).rglob(pattern):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.is_file():
                p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- manifest

_PACKAGES = (
    "traitlab",
    "torch",
    "transformers",
    "peft",
    "tokenizers",
    "numpy",
    "scipy",
    "scikit-learn",
    "pydantic",
    "safetensors",
)


def git_commit(cwd: Path | None = None) -> dict[str, Any]:
    """The git commit of the source tree traitlab runs from (None outside a checkout)."""
    here = Path(cwd or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "processor": platform.machine(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        # Timings mean little without the load they were taken under.
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        # The kernels torch dispatches to (DEFAULT, AVX2, AVX512, ...): CPUs that differ here
        # may round the same run differently, which acts like a partial reseed.
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def write_manifest(
    run_dir: Path,
    *,
    kind: str,
    config_passed: Any,
    config_resolved: dict[str, Any],
    seeds: list[int],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `manifest.json`. Never put secrets here: configs hold no API keys by design."""
    manifest = {
        "schema_version": 1,
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config_hash": stable_hash(config_resolved),
        "config_passed": config_passed,
        "config_resolved": config_resolved,
        "seeds": seeds,
        "git": git_commit(),
        "packages": package_versions(),
        "machine": machine_info(),
        **(extra or {}),
    }
    write_json(Path(run_dir) / "manifest.json", manifest)
    return manifest


def finished(run_dir: Path, config_hash: str, summary: str) -> bool:
    """Whether `run_dir` holds a finished run of the config with hash `config_hash`."""
    run_dir = Path(run_dir)
    if not (is_done(run_dir) and (run_dir / summary).is_file()):
        return False
    try:
        return bool(read_json(run_dir / MANIFEST).get("config_hash") == config_hash)
    except TraitlabError:
        return False


def begin(run_dir: Path, **manifest: Any) -> dict[str, Any]:
    """Start (or resume) a run in `run_dir`, whose lock the caller holds and whose inputs it
    has checked: drop the DONE marker and stale temporaries, write the manifest."""
    (Path(run_dir) / DONE_MARKER).unlink(missing_ok=True)
    clean_stale_tmp(run_dir)
    return write_manifest(run_dir, **manifest)


def mark_done(run_dir: Path, summary_hash: str) -> None:
    """The completion marker: written last, its presence means the run finished."""
    atomic_write_text(Path(run_dir) / DONE_MARKER, summary_hash + "\n")


def is_done(run_dir: Path) -> bool:
    return (Path(run_dir) / DONE_MARKER).is_file()
