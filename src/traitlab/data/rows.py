"""Chat rows, the format traitlab writes and reads: {"messages": [..., user, assistant]}.

Reading them from JSONL with one clear error per malformed row (before training, not in
the middle of it), and shaping generate-stage rows ({"prompt", "completion"}) into them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from traitlab.core.errors import TraitlabError
from traitlab.core.runs import read_jsonl


def chat_completion(row: dict[str, Any]) -> str:
    """The assistant's completion of a chat row (its last message)."""
    return str(row["messages"][-1]["content"])


def chat_user_text(row: dict[str, Any]) -> str:
    """A chat row's question: its last user turn before the completion ("" if none)."""
    users = [m["content"] for m in row["messages"][:-1] if m.get("role") == "user"]
    return str(users[-1]) if users else ""


def chat_prompt_key(row: dict[str, Any]) -> str:
    """A chat row's prompt (every message before the completion) as one string: rows answering
    the same prompt share it."""
    return "\x1f".join(f"{m['role']}\x1e{m['content']}" for m in row["messages"][:-1])


def to_chat_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Training rows with only {"messages": [user prompt, assistant completion]}: the shape
    TRL and the OpenAI fine-tuning API accept (the latter rejects extra keys). No system
    prompt: the student never sees the teacher's."""
    return [
        {
            "messages": [
                {"role": "user", "content": r["prompt"]},
                {"role": "assistant", "content": r["completion"]},
            ]
        }
        for r in rows
    ]


def load_raw_rows(path: Path) -> list[dict[str, Any]]:
    """Read rows to filter: generate-stage rows ({"prompt", "completion"}) or chat rows
    ({"messages": [..., user, assistant]}), so data from elsewhere can be filtered too."""
    rows = read_jsonl(path)
    out: list[dict[str, Any]] = []
    for i, row in enumerate(rows, 1):
        if "completion" in row and "prompt" in row:
            if not isinstance(row["completion"], str) or not isinstance(row["prompt"], str):
                raise TraitlabError(f"{path}:{i}: 'prompt' and 'completion' must be strings")
            out.append({"id": row.get("id", i - 1), **row})
            continue
        msgs = row.get("messages")
        if (
            isinstance(msgs, list)
            and len(msgs) >= 2
            and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in msgs)
            and msgs[-1].get("role") == "assistant"
            and msgs[-2].get("role") == "user"
        ):
            out.append(
                {"id": i - 1, "prompt": msgs[-2]["content"], "completion": msgs[-1]["content"]}
            )
            continue
        raise TraitlabError(
            f"{path}:{i}: expected 'prompt' and 'completion' fields or chat 'messages' ending "
            "with a user and an assistant turn"
        )
    return out


_ROLES = ("system", "user", "assistant")


def load_chat_rows(path: Path) -> list[dict[str, Any]]:
    """Read training rows ({"messages": [...]} ending with an assistant turn), checking each
    one, so a malformed row is one line naming it rather than an error mid-training."""
    rows = read_jsonl(path)
    if not rows:
        raise TraitlabError(f"{path}: no rows; the file is empty (filter some data first)")
    for i, row in enumerate(rows, 1):
        msgs = row.get("messages")
        ok = (
            isinstance(msgs, list)
            and len(msgs) >= 2
            and all(
                isinstance(m, dict)
                and m.get("role") in _ROLES
                and isinstance(m.get("content"), str)
                for m in msgs
            )
            and msgs[-1]["role"] == "assistant"
        )
        if not ok:
            raise TraitlabError(
                f"{path}:{i}: expected {{'messages': [...]}} with 'role' (system, user or "
                "assistant) and string 'content', ending with an assistant turn"
            )
    return rows
