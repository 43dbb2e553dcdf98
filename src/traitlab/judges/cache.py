"""A judge's answers cached on disk: a killed evaluation resumes without asking again.

One JSONL file per judge pin (its model, prompt hash and kind), appended under an exclusive
lock and flushed line by line; a torn last line (a kill mid-write) is skipped when read.
Keys hash the pin, the question and the answer, so a changed prompt or judge never reuses a
stale score.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from traitlab.core.files import stable_hash
from traitlab.judges.judge import Judge, Verdict

CHUNK = 256  # judged answers cached per write


class JudgeCache:
    def __init__(self, root: Path, pin: dict[str, Any]) -> None:
        self.pin = pin
        self.path = Path(root) / f"judge-{stable_hash(pin)}.jsonl"
        self._seen: dict[str, Verdict] | None = None

    def key(self, question: str, answer: str) -> str:
        return stable_hash({"pin": self.pin, "q": question, "a": answer})

    def _load(self) -> dict[str, Verdict]:
        if self._seen is None:
            self._seen = {}
            if self.path.is_file():
                for line in self.path.read_text(encoding="utf-8").splitlines():
                    try:
                        d = json.loads(line)
                        self._seen[d["key"]] = Verdict(d["score"], d["reason"], d.get("raw"))
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn line from a killed writer
        return self._seen

    def get(self, question: str, answer: str) -> Verdict | None:
        return self._load().get(self.key(question, answer))

    def put(self, items: list[tuple[str, str, Verdict]]) -> None:
        seen = self._load()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                for q, a, v in items:
                    k = self.key(q, a)
                    seen[k] = v
                    rec = {"key": k, "score": v.score, "reason": v.reason, "raw": v.raw}
                    f.write(json.dumps(rec) + "\n")
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def judge_all(
    judge: Judge, pairs: Sequence[tuple[str, str]], cache_root: Path | None
) -> list[Verdict]:
    """Verdicts for every pair: cached ones read, the rest asked in chunks and cached."""
    cache = JudgeCache(cache_root, judge.pin) if cache_root is not None else None
    out: list[Verdict | None] = [cache.get(q, a) if cache else None for q, a in pairs]
    todo = [i for i, v in enumerate(out) if v is None]
    for k in range(0, len(todo), CHUNK):
        part = todo[k : k + CHUNK]
        got = judge.score([pairs[i] for i in part])
        for i, v in zip(part, got, strict=True):
            out[i] = v
        if cache is not None:
            cache.put([(*pairs[i], v) for i, v in zip(part, got, strict=True)])
    return [v for v in out if v is not None]
