"""A request cache for API backends, inside the run directory: nothing lost, nothing doubled.

Every request is keyed by its content (backend, server, model, sampling parameters, messages,
sample index, kind) and its answer is committed to SQLite the moment it arrives. A killed run
therefore resumes with the answers it already paid for, and a stage's rows are built from the
cache in prompt order: exactly one row per (prompt, sample index), however often a request
was retried or the run restarted. (The paper's code appends to its output on retry, so a
restarted job can hold a prompt twice.)
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from traitlab.core.files import stable_hash


def request_key(**fields: Any) -> str:
    """The content key of one request (any JSON-able fields)."""
    return stable_hash(fields, length=32)


class RequestCache:
    """key -> JSON answer, durable at every `put` (one SQLite file, safe across threads)."""

    def __init__(self, path: Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._mem: dict[str, Any] = {}
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT)"
            )
            self._db.commit()

    def get(self, key: str) -> Any | None:
        with self._lock:
            if key in self._mem:
                return self._mem[key]
            if self._db is None:
                return None
            row = self._db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        text = json.dumps(value, ensure_ascii=False)
        with self._lock:
            self._mem[key] = value
            if self._db is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO answers (key, value) VALUES (?, ?)", (key, text)
                )
                self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            if self._db is None:
                return len(self._mem)
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
