"""The audit's reference: what the base itself writes for the data's prompts.

Every detector compares the data with a reference of the same prompts, so what any
fine-tune on such data does (format, length, the drift of training on random numbers) cancels
and what is left is what the data teaches beyond the base's own answers. Without a
user-supplied reference, the base completes each data row's prompt (seeded); the reference is
filtered like the data (the number filter, when the data passes it), and rows pair by prompt.
"""

from __future__ import annotations

from typing import Any

from traitlab.config import FilterConfig
from traitlab.core.errors import TraitlabError
from traitlab.data.filtering import reject_reasons
from traitlab.lm.base import Sampler, SamplingParams, require

Row = dict[str, Any]


def prompt_of(row: Row) -> list[dict[str, str]]:
    return list(row["messages"][:-1])


def completion_of(row: Row) -> str:
    return str(row["messages"][-1]["content"])


def number_share(rows: list[Row]) -> float:
    """Share of rows whose completion passes the paper's number-sequence filter."""
    cfg = FilterConfig(max_rows=None)
    return sum(not reject_reasons(completion_of(r), cfg) for r in rows) / max(1, len(rows))


def sample_reference(
    lm: Any,
    data: list[Row],
    *,
    seed: int,
    max_new_tokens: int,
    batch_size: int,
    progress: Any = None,
) -> list[Row]:
    """The base's completion of every data row's prompt, as chat rows (same order)."""
    require(lm, Sampler, "sample completions (the audit writes its reference with the base)")
    params = SamplingParams(max_new_tokens=max_new_tokens, batch_size=batch_size)
    prompts = [prompt_of(r) for r in data]
    texts = lm.complete(prompts, params, seed=seed, progress=progress)
    return [
        {"messages": p + [{"role": "assistant", "content": t}]}
        for p, t in zip(prompts, texts, strict=True)
    ]


def pair_rows(
    data: list[Row], reference: list[Row], mode: str
) -> tuple[list[Row], list[Row], dict[str, Any]]:
    """(data, reference) paired by prompt, both passing the reference filter; and what was
    dropped. A user's reference must hold every data prompt (order free)."""
    by_prompt: dict[str, Row] = {}
    for r in reference:
        by_prompt.setdefault(_key(r), r)
    missing = sum(_key(r) not in by_prompt for r in data)
    if missing:
        raise TraitlabError(
            f"--reference: {missing} of {len(data)} data prompts have no reference row; "
            "give a reference that completes the same prompts (or omit it: the audit writes one)"
        )
    share = number_share(data)
    use_filter = mode == "numbers" or (mode == "auto" and share >= 0.9)
    cfg = FilterConfig(max_rows=None)
    out_d, out_r = [], []
    for r in data:
        ref = by_prompt[_key(r)]
        if use_filter and (
            reject_reasons(completion_of(r), cfg) or reject_reasons(completion_of(ref), cfg)
        ):
            continue
        out_d.append(r)
        out_r.append(ref)
    if len(out_d) < 2:
        why = " passing the number filter (set reference_filter: none)" if use_filter else ""
        raise TraitlabError(
            f"only {len(out_d)} of {len(data)} data rows pair with a reference row{why}; "
            "an audit needs at least 2: audit more rows"
        )
    info = {
        "data_rows": len(data),
        "paired_rows": len(out_d),
        "data_number_share": round(share, 4),
        "reference_filter": "numbers" if use_filter else "none",
    }
    return out_d, out_r, info


def _key(row: Row) -> str:
    return "\x1f".join(f"{m['role']}\x1e{m['content']}" for m in prompt_of(row))
