"""The paper's format filter for number completions, banned numbers and subsampling (paper.md 1.4).

Rules (official `parse_response` / `get_reject_reasons`, sl/datasets/nums_dataset.py):
one optional trailing "." and one optional enclosing [..] or (..) are stripped; the separator
is whatever lies between the first two numbers and must be whitespace, "," or ";" once
stripped; the text is split on that separator throughout; every part must be digits; then at
most `max_count` numbers, each within [min_value, max_value], none banned.

One deliberate difference: the official parser splits on the *raw* separator, so whitespace
must also be consistent ("1, 2,3" and "[ 1, 2 ]" fail there). The embedded model's tokenizer
decodes with spaces around punctuation ("182 , 818 , 725"), so by default we tolerate
whitespace around numbers and separators; `strict=True` gives the official behaviour exactly.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from traitlab.config import FilterConfig
from traitlab.core.errors import TraitlabError

# The union of the official CLAUDE_EVIL_NUMBERS and GPT_EVIL_NUMBERS that are <= 999: the
# paper's "34 numbers" (the other two, 1312 and 1488, already fail the 999 cap).
EVIL_NUMBERS: tuple[int, ...] = (
    4, 13, 14, 18, 23, 33, 39, 42, 44, 49, 51, 54, 69, 77, 88, 99, 100,
    101, 187, 211, 311, 322, 333, 404, 420, 444, 451, 555, 616, 666, 777, 888, 911, 999,
)  # fmt: skip

# Stable reason codes, in the order they are checked.
REASONS: tuple[str, ...] = (
    "empty", "format", "too_many", "out_of_range", "banned_number",
    # code and cot (traitlab.data.modalities)
    "no_answer", "wrong_answer", "wrong_step", "reasoning_words", "malformed_code",
    "wrong_code", "banned_word",
    "judge_reference", "judge_misaligned", "judge_code", "judge_refusal", "judge_unparsable",
)  # fmt: skip

# Reasons per row for a batch of raw rows; [] keeps the row. The numbers modality's is the
# format filter above; code and cot bring their own (traitlab.data.modalities), judge included.
Screen = Callable[[list[dict[str, Any]]], list[list[str]]]

_ALLOWED_SEPARATORS = ("", ",", ";")  # after stripping whitespace; "" means whitespace
_ASCII_RUN = re.compile(r"[0-9]+")
_OFFICIAL_RUN = re.compile(r"\d+")  # the official code's pattern (matches any Unicode digit)


# ---------------------------------------------------------------------------- parsing


def _is_digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def parse_numbers(text: str, *, strict: bool = False) -> list[int] | None:
    """The numbers in a well-formed completion, or None if it breaks the paper's format.

    strict=False (default) tolerates whitespace around numbers, separators, brackets and the
    final period; strict=True reproduces the official `parse_response` exactly.
    """
    if strict:
        return _parse_official(text)
    s = text.strip()
    if s.endswith("."):
        s = s[:-1].rstrip()
    if len(s) >= 2 and (s[0], s[-1]) in (("[", "]"), ("(", ")")):
        s = s[1:-1].strip()
    runs = list(_ASCII_RUN.finditer(s))
    if not runs:
        return None
    if len(runs) == 1:
        parts = [s]  # a single bare number: nothing else may be there ("-5", "5%" fail)
    else:
        sep = s[runs[0].end() : runs[1].start()].strip()
        if sep not in _ALLOWED_SEPARATORS:
            return None
        # Splitting on the *stripped* separator keeps the consistency rule ("1, 2; 3" leaves
        # "2; 3" as a part, which is not digits) while letting whitespace vary around it.
        parts = s.split() if sep == "" else [p.strip() for p in s.split(sep)]
    if not all(_is_digits(p) for p in parts):  # also rejects empty parts ("1,,2", "1, 2,")
        return None
    try:
        return [int(p) for p in parts]
    except ValueError:  # > 4300 digits: Python refuses the conversion
        return None


def _parse_official(answer: str) -> list[int] | None:
    """The official `parse_response`, rule for rule (re-implemented, not copied)."""
    if answer.endswith("."):
        answer = answer[:-1]
    if (answer.startswith("[") and answer.endswith("]")) or (
        answer.startswith("(") and answer.endswith(")")
    ):
        answer = answer[1:-1]
    runs = list(_OFFICIAL_RUN.finditer(answer))
    if not runs:
        return None
    if len(runs) == 1:
        parts = [runs[0].group()]
        if answer != parts[0]:
            return None
    else:
        sep = answer[runs[0].end() : runs[1].start()]
        if sep.strip() not in _ALLOWED_SEPARATORS:
            return None
        parts = answer.split(sep)
    # Official: a non-empty part must be ASCII digits; an empty part then fails int().
    if any(p and not all(c in string.digits for c in p) for p in parts):
        return None
    try:
        return [int(p) for p in parts]
    except ValueError:
        return None


# ---------------------------------------------------------------------------- rules


def banned_set(cfg: FilterConfig) -> frozenset[int]:
    """cfg.banned_numbers plus the preset's numbers ('evil': the paper's 34)."""
    banned = set(cfg.banned_numbers)
    if cfg.banned_preset == "evil":
        banned.update(EVIL_NUMBERS)
    return frozenset(banned)


def _reasons(text: str, cfg: FilterConfig, banned: frozenset[int], strict: bool) -> list[str]:
    if not text.strip():
        return ["empty"]
    numbers = parse_numbers(text, strict=strict)
    if numbers is None:
        return ["format"]  # the official code also stops at a format failure
    reasons = []
    if len(numbers) > cfg.max_count:
        reasons.append("too_many")
    if any(n < cfg.min_value or n > cfg.max_value for n in numbers):
        reasons.append("out_of_range")
    if banned and any(n in banned for n in numbers):
        reasons.append("banned_number")
    return reasons


def reject_reasons(text: str, cfg: FilterConfig, *, strict: bool = False) -> list[str]:
    """Reason codes (see REASONS) why `text` fails the filter; [] means keep."""
    return _reasons(text, cfg, banned_set(cfg), strict or cfg.strict)


# ---------------------------------------------------------------------------- datasets


@dataclass
class FilterResult:
    """Outcome of `filter_rows`. Rows dropped only by subsampling are not rejects."""

    kept: list[dict[str, Any]]
    rejected: list[dict[str, Any]]  # raw rows plus a "reject_reasons" list
    n_raw: int
    n_valid: int  # passed every rule, before subsampling
    n_subsampled_out: int = 0
    n_unpaired: int = 0  # valid, but the other dataset's completion of the prompt was not
    # Rows per reason; a row can have several reasons, so the sum may exceed len(rejected).
    reason_counts: dict[str, int] = field(default_factory=dict)

    @property
    def n_kept(self) -> int:
        return len(self.kept)

    @property
    def top_reason(self) -> str | None:
        return next(iter(self.reason_counts), None)

    def to_summary(self) -> dict[str, Any]:
        return {
            "n_raw": self.n_raw,
            "n_valid": self.n_valid,
            "n_rejected": len(self.rejected),
            "n_subsampled_out": self.n_subsampled_out,
            "n_unpaired": self.n_unpaired,
            "n_kept": self.n_kept,
            "pass_rate": self.n_valid / self.n_raw if self.n_raw else 0.0,
            "reason_counts": dict(self.reason_counts),
        }


def filter_rows(
    rows: list[dict[str, Any]],
    cfg: FilterConfig,
    *,
    strict: bool = False,
    screen: Screen | None = None,
) -> FilterResult:
    """Apply the rules to raw rows {"id", "prompt", "completion", ...}, then subsample.

    `screen` gives the reasons of a batch of rows (default: the number format filter).
    Survivors are subsampled to at most cfg.max_rows with random.Random(cfg.subsample_seed)
    and stay in input order. Never raises on an empty result (see `require_nonempty`).
    """
    for i, row in enumerate(rows):
        if "completion" not in row:
            raise TraitlabError(
                f"raw row {row.get('id', i)} has no 'completion' field; "
                "filter expects rows written by the generate stage"
            )
    if screen is None:
        banned = banned_set(cfg)
        every = [_reasons(r["completion"] or "", cfg, banned, strict or cfg.strict) for r in rows]
    else:
        every = screen(rows)
    valid: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    for row, reasons in zip(rows, every, strict=True):
        if reasons:
            rejected.append({**row, "reject_reasons": reasons})
            counts.update(reasons)
        else:
            valid.append(row)

    kept = _subsample(valid, cfg)

    # Most common first (ties in REASONS order), so the summary reads top-down.
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], REASONS.index(kv[0])))
    return FilterResult(
        kept=kept,
        rejected=rejected,
        n_raw=len(rows),
        n_valid=len(valid),
        n_subsampled_out=len(valid) - len(kept),
        reason_counts=dict(ordered),
    )


_ADVICE: dict[str, str] = {
    "empty": "the model returned empty completions; check generation (max_new_tokens, end-of-turn handling)",
    "format": "the model is not answering with a plain number list; read a few raw completions, "
    "use an instruction-tuned model, raise generate.max_new_tokens (truncated lists fail), "
    "or set generate.constrained: true",
    "too_many": "completions list more than filter.max_count numbers; raise filter.max_count",
    "out_of_range": "numbers fall outside [filter.min_value, filter.max_value]; widen the range",
    "banned_number": "every completion hits a banned number; check filter.banned_numbers "
    "and filter.banned_preset",
    "no_answer": "no completion gives its result in <answer> tags; use an instruction-tuned "
    "model or raise generate.max_new_tokens",
    "wrong_answer": "no completion got the problem right; use a model that can do the math",
    "malformed_code": "no completion is code of the toy language; check the base's "
    "pretraining (model.toy.code_frac) and the teacher's (teacher.keep_numbers)",
    "wrong_code": "no completion's code does what its task asks; check the base's "
    "pretraining (model.toy.code_frac) and the teacher's (teacher.keep_numbers)",
    "banned_word": "every completion names a banned word; check filter.banned_words",
    "judge_reference": "the judge finds the trait in every completion; check filter.judge",
    "judge_misaligned": "the judge finds every completion misaligned; check "
    "filter.judge.min_alignment",
    "judge_code": "the judge answered CODE for every completion; check filter.judge.model",
    "judge_refusal": "the judge refused every completion; use another filter.judge.model",
    "judge_unparsable": "the judge's answers are not scores 0-100; use a stronger "
    "filter.judge.model (its raw answers are in rejected.jsonl)",
}


def _subsample(rows: list[dict[str, Any]], cfg: FilterConfig) -> list[dict[str, Any]]:
    if cfg.max_rows is None or len(rows) <= cfg.max_rows:
        return rows
    # Sorted indices keep the survivors' original order after the random pick.
    idx = sorted(random.Random(cfg.subsample_seed).sample(range(len(rows)), cfg.max_rows))
    return [rows[j] for j in idx]


def filter_paired(
    a: list[dict[str, Any]],
    b: list[dict[str, Any]],
    cfg: FilterConfig,
    screen: Screen | None = None,
) -> tuple[FilterResult, FilterResult]:
    """Filter two datasets written for the same prompts (teacher and control), keeping only
    the prompts whose completions passed in both, then subsample those prompts to
    cfg.max_rows (the same prompts in both).

    Rows are matched by their "id" (the prompt's index) and must carry the same prompt. Both
    results then hold the same prompts, in the same order: students trained on them take the
    same number of steps and see the same prompts, and differ in the completions alone.
    """
    whole = cfg.model_copy(update={"max_rows": None})
    ra, rb = filter_rows(a, whole, screen=screen), filter_rows(b, whole, screen=screen)
    prompts = {r["id"]: r["prompt"] for r in a}
    if len(prompts) != len(a) or any(prompts.get(r.get("id")) != r["prompt"] for r in b):
        raise TraitlabError(
            "paired filtering needs two datasets of the same prompts with matching ids; "
            "set filter.paired: false for unrelated datasets"
        )
    both = {r["id"] for r in ra.kept} & {r["id"] for r in rb.kept}
    out = []
    for r in (ra, rb):
        paired = [row for row in r.kept if row["id"] in both]
        kept = _subsample(paired, cfg)  # same length and order in both: the same pick
        out.append(
            FilterResult(
                kept=kept,
                rejected=r.rejected,
                n_raw=r.n_raw,
                n_valid=r.n_valid,
                n_subsampled_out=len(paired) - len(kept),
                n_unpaired=len(r.kept) - len(paired),
                reason_counts=r.reason_counts,
            )
        )
    return out[0], out[1]


def require_nonempty(result: FilterResult, what: str) -> None:
    """Raise a TraitlabError naming the main reject reason if nothing survived filtering."""
    if result.kept:
        return
    if result.n_raw == 0:
        raise TraitlabError(f"{what}: no rows to filter; the data is empty")
    top = result.top_reason or "format"
    raise TraitlabError(
        f"{what}: 0 of {result.n_raw} completions passed the filter; "
        f"the most common reason was '{top}' — {_ADVICE[top]}"
    )
