"""A stage store shared by experiments: a finished stage made by one run is reused by another.

A sweep's cells are separate run directories, but many of their stages are the same (the
cells of a defence sweep share every teacher and every generation). The store keeps one copy
of each finished stage under its content key, `<root>/<key>/`. A run that needs a stage
first takes the key's lock (`flock`, so two processes, or two Ray workers on a shared file
system, never make the same stage twice), then either links the stored copy into its own run
directory or makes the stage and publishes it. Files are hard links where the file system
allows (copies otherwise): stage files are written once and never changed in place, so a
link is as good as a copy and costs nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from traitlab.core.files import FILE_MODE
from traitlab.core.outputs import STAGE_MARKER


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _place(src: Path, dst: Path) -> None:
    """Copy (by links) the stage directory `src` to `dst` atomically, replacing `dst`."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.tmp-"))
    try:
        shutil.copytree(src, tmp / "x", copy_function=_link_or_copy)
        if dst.exists():
            old = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.old-"))
            os.replace(dst, old / "x")
            os.replace(tmp / "x", dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp / "x", dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class StageStore:
    """Finished stages by content key, shared between run directories."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def has(self, key: str) -> bool:
        return (self.root / key / STAGE_MARKER).is_file()

    @contextlib.contextmanager
    def claim(self, key: str) -> Iterator[None]:
        """Hold `key`'s lock while the stage is looked up, or made and published."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / f".{key}.lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock, as does the process dying

    def fetch(self, key: str, stage_dir: Path) -> bool:
        """Place the stored stage `key` at `stage_dir`; False when the store lacks it."""
        if not self.has(key):
            return False
        _place(self.root / key, Path(stage_dir))
        return True

    def publish(self, key: str, stage_dir: Path) -> None:
        """Store a finished stage under its key (a no-op when already stored)."""
        if not self.has(key) and (Path(stage_dir) / STAGE_MARKER).is_file():
            _place(Path(stage_dir), self.root / key)


@contextlib.contextmanager
def shared(store: StageStore | None, key: str, stage_dirs: list[Path]) -> Iterator[bool]:
    """Around a cached stage: yields True when the store had it (now placed in
    `stage_dirs`: one stage may write several directories, each stored as
    `<directory name>.<key>`); otherwise the body makes the stage, and it is published on
    success."""
    if store is None:
        yield False
        return
    # Stored under the stage directory's name too: a stage is only ever reused in its own
    # role (a control student can never stand in for a treatment one, whatever the keys).
    keys = [f"{Path(d).name}.{key}" for d in stage_dirs]
    with store.claim(key):
        if all(store.has(k) for k in keys):
            for k, d in zip(keys, stage_dirs, strict=True):
                store.fetch(k, d)
            yield True
            return
        yield False
        for k, d in zip(keys, stage_dirs, strict=True):
            store.publish(k, d)
