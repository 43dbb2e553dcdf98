"""Run directories: atomic artifacts, JSONL, manifests and content-addressed stage caching.

Every experiment writes into one run directory. Each stage writes its outputs into its own
sub-directory through `stage()`: the work happens in a temporary sibling directory that is
renamed into place only when the stage finished, and a `stage.json` marker with the stage's
content key is written last. A stage whose marker holds the same key is skipped, so a killed
run resumes where it stopped and a finished run reruns instantly.
"""

from __future__ import annotations

import contextlib
import fcntl
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private (0600/0700) files; artifacts follow the user's umask instead.
UMASK = _umask()
FILE_MODE = 0o666 & ~UMASK
DIR_MODE = 0o777 & ~UMASK


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
        os.chmod(tmp, FILE_MODE)
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
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise TraitlabError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def read_text(path: Path, what: str = "file") -> str:
    """A UTF-8 text file's contents; a missing, unreadable or non-UTF-8 file is one line."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraitlabError(f"{path}: {what} not found; check the path") from None
    except IsADirectoryError:
        raise TraitlabError(f"{path}: is a directory; pass a {what}") from None
    except PermissionError:
        raise TraitlabError(f"{path}: permission denied; make the {what} readable") from None
    except UnicodeDecodeError as e:
        raise TraitlabError(
            f"{path}: not UTF-8 text (bad byte at offset {e.start}); save the {what} as UTF-8"
        ) from None
    except OSError as e:
        raise TraitlabError(f"{path}: cannot read ({e.strerror})") from None


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file; a malformed line is a one-line `TraitlabError` naming the line."""
    path = Path(path)
    if path.is_dir():
        raise TraitlabError(f"{path}: is a directory; pass a .jsonl file")
    if not path.is_file():
        raise TraitlabError(f"{path}: file not found; pass an existing .jsonl file")
    rows: list[dict[str, Any]] = []
    for i, line in enumerate(read_text(path, "JSONL file").splitlines(), 1):
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


# ---------------------------------------------------------------------------- output safety

MANIFEST = "manifest.json"
LOCK_FILE = ".traitlab.lock"


def _protected(path: Path) -> str | None:
    """Why `path` may never be replaced, or None: the working directory, a folder above it,
    the home directory or the root."""
    p = path.resolve()
    cwd = Path.cwd().resolve()
    if p == cwd or p in cwd.parents:
        return "it is the working directory or contains it"
    if p == Path.home().resolve() or p == Path(p.anchor):
        return "it is the home or root directory"
    return None


def is_ours(path: Path) -> bool:
    """A directory traitlab wrote: a stage output (stage.json) or a run (manifest.json)."""
    return (path / STAGE_MARKER).is_file() or (path / MANIFEST).is_file()


def check_output_dir(path: Path, *, overwrite: bool = False, run: bool = False) -> None:
    """Refuse, before any work, an output directory traitlab must not write into.

    Allowed: a path that does not exist yet (its parent must be writable), an empty
    directory, or one of ours (a stage output or, with `run`, a run directory). A file, a
    link or someone else's non-empty directory is refused unless `overwrite`; the working
    directory, a folder above it, home and / are always refused.
    """
    path = Path(path)
    why = _protected(path)
    if why is not None:
        raise TraitlabError(f"{path}: refusing to write there ({why}); choose another --out")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        if overwrite:
            return
        raise TraitlabError(
            f"{path}: a file is in the way; choose another --out or pass --overwrite to replace it"
        )
    if path.is_dir():
        try:
            empty = not any(path.iterdir())
        except PermissionError:
            raise TraitlabError(f"{path}: permission denied; choose another --out") from None
        ours = (path / STAGE_MARKER).is_file() or (run and (path / MANIFEST).is_file())
        if not (empty or ours or overwrite):
            raise TraitlabError(
                f"{path}: not empty and not a traitlab output; choose another --out or pass "
                "--overwrite to replace it"
            )
        if not os.access(path, os.W_OK | os.X_OK):
            raise TraitlabError(f"{path}: not writable; choose another --out")
        return
    check_writable_parent(path)


def check_writable_parent(path: Path) -> None:
    """Refuse an output path whose nearest existing ancestor is not a writable directory."""
    parent = Path(path).absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise TraitlabError(f"{path}: {parent} is a file, not a directory; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TraitlabError(f"{path}: cannot create it ({parent} is not writable)")


def check_output_file(path: Path) -> None:
    """Refuse, before any work, an output file path that cannot be written atomically."""
    path = Path(path)
    if path.is_dir():
        raise TraitlabError(f"{path}: is a directory; pass a file path for --out")
    if path.exists() and not path.is_file():
        raise TraitlabError(f"{path}: not a regular file; pass a file path for --out")
    check_writable_parent(path)


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock: one writer at a time.

    The lock is `flock` on `.traitlab.lock`, so the kernel releases it when its process dies:
    a lock left by a killed run is reclaimed at once. The file records who holds it (pid,
    host, start time), which the refusal names.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            raise TraitlabError(
                f"{run_dir}: in use by {holder}; wait for that run to finish or choose another --out"
            ) from None
        me = f"pid {os.getpid()} on {platform.node()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.encode(), 0)
        yield
    finally:
        # The file stays (unlinking it would let two processes lock two different files).
        os.close(fd)


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


def finished(run_dir: Path, config_hash: str, summary: str) -> bool:
    """Whether `run_dir` holds a finished run of the config with hash `config_hash`."""
    run_dir = Path(run_dir)
    if not (is_done(run_dir) and (run_dir / summary).is_file()):
        return False
    try:
        return read_json(run_dir / MANIFEST).get("config_hash") == config_hash
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
