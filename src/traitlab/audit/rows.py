"""Per-row and per-token scores: which rows and tokens carry what the data teaches.

* **shift** (no teacher): log p_canary(token) - log p_base(token) at every completion token,
  the canary being a base copy fine-tuned on the data. Tokens the canary learnt to prefer
  score high; a row's score is the mean over its completion tokens.
* **divergence** (with `--teacher`): log p_teacher(token) - log p_base(token), the teacher's
  own preference for what it wrote.

Both are exported as JSONL (row index, score, per-token scores) so a defence can drop or
replace what they flag. Local models only: they need token log-probabilities of given text.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from traitlab.lm.hf.rowscore import token_logprobs  # noqa: F401 - the audit's row scorer

Row = dict[str, Any]


def shift_scores(
    tokenizer: Any,
    base_lp: list[tuple[list[int], np.ndarray]],
    other_lp: list[tuple[list[int], np.ndarray]],
) -> list[dict[str, Any]]:
    """Rows as {"row", "score", "tokens": [[text, score], ...]}: other - base, per token."""
    out = []
    for i, ((ids, a), (_, b)) in enumerate(zip(base_lp, other_lp, strict=True)):
        d = b - a
        toks = [tokenizer.decode([t], skip_special_tokens=False) for t in ids]
        out.append(
            {
                "row": i,
                "score": float(d.mean()) if len(d) else 0.0,
                "tokens": [[t, round(float(x), 5)] for t, x in zip(toks, d, strict=True)],
            }
        )
    return out


def top_tokens(scored: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The tokens with the highest mean score over their occurrences (at least 5)."""
    sums: dict[str, list[float]] = {}
    for r in scored:
        for t, x in r["tokens"]:
            sums.setdefault(t, []).append(x)
    stats = [
        {"token": t, "mean": float(np.mean(v)), "count": len(v)}
        for t, v in sums.items()
        if len(v) >= 5
    ]
    return sorted(stats, key=lambda s: -s["mean"])[:k]
