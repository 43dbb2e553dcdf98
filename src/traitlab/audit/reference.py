"""The audit's reference: what the base itself writes for the data's prompts.

Every detector compares the data with a reference of the same prompts, so what any
fine-tune on such data does (format, length, the drift of training on random numbers) cancels
and what is left is what the data teaches beyond the base's own answers. Without a
user-supplied reference, the base completes each data row's prompt (seeded); the reference is
filtered like the data (the number filter, when the data passes it), and rows pair by prompt.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from traitlab.config import FilterConfig
from traitlab.core.errors import TraitlabError
from traitlab.data.filtering import chat_completion, chat_prompt_key, reject_reasons
from traitlab.lm.base import Sampler, SamplingParams, require

Row = dict[str, Any]


def prompt_of(row: Row) -> list[dict[str, str]]:
    return list(row["messages"][:-1])


def _passes(rows: list[Row], cfg: FilterConfig) -> list[bool]:
    """Whether each row's completion passes the paper's number-sequence filter."""
    return [not reject_reasons(chat_completion(r), cfg) for r in rows]


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
        by_prompt.setdefault(chat_prompt_key(r), r)
    missing = sum(chat_prompt_key(r) not in by_prompt for r in data)
    if missing:
        raise TraitlabError(
            f"--reference: {missing} of {len(data)} data prompts have no reference row; "
            "give a reference that completes the same prompts (or omit it: the audit writes one)"
        )
    cfg = FilterConfig(max_rows=None)
    data_ok = _passes(data, cfg)  # once: it decides the filter and filters the data
    share = sum(data_ok) / max(1, len(data))
    use_filter = mode == "numbers" or (mode == "auto" and share >= 0.9)
    out_d, out_r = [], []
    for r, ok in zip(data, data_ok, strict=True):
        ref = by_prompt[chat_prompt_key(r)]
        if use_filter and (not ok or reject_reasons(chat_completion(ref), cfg)):
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


def second_reference(
    lm: Any,
    data: list[Row],
    reference: list[Row],
    info: dict[str, Any],
    *,
    seed: int,
    max_new_tokens: int,
    batch_size: int,
    progress: Any = None,
) -> tuple[list[Row], list[Row], list[Row]]:
    """A second reference for paired `data` / `reference` (the base again, sampling `seed`),
    filtered as the first was: the rows whose three versions all pass, as three lists."""
    null = sample_reference(
        lm,
        data,
        seed=seed,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
    )
    keep = range(len(data))
    if info["reference_filter"] == "numbers":
        keep = [i for i, ok in enumerate(_passes(null, FilterConfig(max_rows=None))) if ok]
    if len(keep) < 2:
        raise TraitlabError(
            "canary.null: fewer than 2 rows of the second reference pass the number filter; "
            "set canary.null: false"
        )
    return [data[i] for i in keep], [reference[i] for i in keep], [null[i] for i in keep]


def subset(n: int, k: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random `k` of `n` rows (all of them when k is None or >= n)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])
