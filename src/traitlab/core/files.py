"""Files: content hashes, atomic writes (umask-respecting), JSON and JSONL with one-line errors.

Readers of an artifact see either the old file or the whole new one: every write goes to a
temporary sibling that is renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from traitlab.core.errors import TraitlabError

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
