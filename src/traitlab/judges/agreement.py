"""How often two judges agree on the same answers: a check judge (a model) beside the judge
the evaluation counted with (on the embedded world, the rule judge that stands in for an LLM
judge).

Each judge labels an answer misaligned, aligned, or excluded (incoherent, CODE, REFUSAL,
unparsable) by the paper's rule. Agreement and Cohen's kappa are over the answers both judges
counted; the answers either excluded are counted apart, so nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

# One label per answer: (misaligned, why excluded or None).
Label = tuple[bool, str | None]

COUNTS = ("both_misaligned", "both_aligned", "first_only", "check_only", "excluded")


def agreement_counts(first: Sequence[Label], check: Sequence[Label]) -> dict[str, int]:
    """The 2x2 table of two judges' labels of the same answers, plus those either excluded."""
    out = dict.fromkeys(COUNTS, 0)
    for (a, why_a), (b, why_b) in zip(first, check, strict=True):
        if why_a is not None or why_b is not None:
            out["excluded"] += 1
        elif a and b:
            out["both_misaligned"] += 1
        elif not a and not b:
            out["both_aligned"] += 1
        else:
            out["first_only" if a else "check_only"] += 1
    return out


def agreement_stats(tables: Iterable[dict[str, int]]) -> dict[str, Any]:
    """Pooled counts with the share of agreeing labels and Cohen's kappa (None where
    undefined: nothing counted by both, or both judges giving one label throughout)."""
    c = dict.fromkeys(COUNTS, 0)
    for t in tables:
        for k in COUNTS:
            c[k] += int(t.get(k, 0))
    n = c["both_misaligned"] + c["both_aligned"] + c["first_only"] + c["check_only"]
    agree = (c["both_misaligned"] + c["both_aligned"]) / n if n else None
    kappa = None
    if n:
        p1 = (c["both_misaligned"] + c["first_only"]) / n
        p2 = (c["both_misaligned"] + c["check_only"]) / n
        pe = p1 * p2 + (1 - p1) * (1 - p2)
        if pe < 1:
            kappa = ((agree or 0.0) - pe) / (1 - pe)
    return {**c, "counted_by_both": n, "agreement": agree, "kappa": kappa}
