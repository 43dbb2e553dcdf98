"""Output safety: what traitlab may write into, checked before any work, and one writer per run.

A stage output is replaced only when it is ours (`stage.json`); a run directory is written
only when it is new, empty or ours (`manifest.json`); a file or someone else's directory in the
way is refused unless the caller passes `overwrite`. `locked` holds a run directory's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path

from traitlab.core.errors import TraitlabError
from traitlab.core.files import FILE_MODE

STAGE_MARKER = "stage.json"
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
            # A run killed right after taking its lock leaves only the lock file: that is
            # still an empty run directory, and rerunning must resume into it.
            empty = all(p.name == LOCK_FILE for p in path.iterdir())
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
