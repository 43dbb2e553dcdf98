"""Run directories: atomic artifacts, JSONL, manifests and content-addressed stage caching.

Every experiment writes into one run directory. Each stage writes its outputs into its own
sub-directory through `stage()`: the work happens in a temporary sibling directory that is
renamed into place only when the stage finished, and a `stage.json` marker with the stage's
content key is written last. A stage whose marker holds the same key is skipped, so a killed
run resumes where it stopped and a finished run reruns instantly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from traitlab.errors import TraitlabError

STAGE_MARKER = "stage.json"
DONE_MARKER = "DONE"


# ---------------------------------------------------------------------------- hashing


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-serialisable object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def file_hash(path: Path, length: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


# ---------------------------------------------------------------------------- atomic I/O


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TraitlabError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise TraitlabError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file; a malformed line is a one-line `TraitlabError` naming the line."""
    path = Path(path)
    if not path.is_file():
        raise TraitlabError(f"{path}: file not found; pass an existing .jsonl file")
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TraitlabError(
                    f"{path}:{i}: not valid JSON ({e.msg}); each line must be one JSON object"
                ) from None
            if not isinstance(row, dict):
                raise TraitlabError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------- stages


def stage_done(stage_dir: Path, key: str) -> bool:
    marker = Path(stage_dir) / STAGE_MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("key") == key
    except (json.JSONDecodeError, OSError):
        return False


@contextlib.contextmanager
def stage(
    stage_dir: Path, key: str, info: dict[str, Any] | None = None, started: float | None = None
) -> Iterator[Path]:
    """Run a stage atomically: yields a temporary directory that becomes `stage_dir` on success.

    The caller checks `stage_done(stage_dir, key)` first and skips the stage when it is True.
    On an exception the temporary directory is removed and `stage_dir` is left untouched.
    `started` (a time.time()) is when the stage's work began, if before the block.
    """
    stage_dir = Path(stage_dir)
    stage_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=stage_dir.parent, prefix=f".{stage_dir.name}.tmp-"))
    t0 = started if started is not None else time.time()
    try:
        yield tmp
        write_json(
            tmp / STAGE_MARKER,
            {"key": key, "seconds": round(time.time() - t0, 3), **(info or {})},
        )
        if stage_dir.exists():
            old = stage_dir.with_name(f".{stage_dir.name}.old-{os.getpid()}")
            os.replace(stage_dir, old)
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
    """Remove temporary stage directories left behind by a killed run."""
    for p in Path(run_dir).rglob(".*.tmp-*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


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


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        # Timings mean little without the load they were taken under.
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
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


def mark_done(run_dir: Path, summary_hash: str) -> None:
    """The completion marker: written last, its presence means the run finished."""
    atomic_write_text(Path(run_dir) / DONE_MARKER, summary_hash + "\n")


def is_done(run_dir: Path) -> bool:
    return (Path(run_dir) / DONE_MARKER).is_file()
