"""The audit's reference: what the base itself writes for the data's prompts.

Every detector compares the data with a reference of the same prompts, so what any
fine-tune on such data does (format, length, the drift of training on random numbers) cancels
and what is left is what the data teaches beyond the base's own answers. Without a
user-supplied reference, the base completes each data row's prompt (seeded), and rows pair
by prompt.

The reference is filtered like the data. The auditor does not know the data's filter, so it
infers it: every rule in `RULES` that nearly all data rows pass (`AUTO_SHARE`) must hold for
both rows of a pair. Otherwise a filter that kept only, say, right answers in the data would
read as a trait: the reference's wrong answers would differ from the data in what the filter
chose, not in what the teacher wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from traitlab.config import FilterConfig
from traitlab.core.errors import TraitlabError
from traitlab.data.filtering import reject_reasons
from traitlab.data.modalities import cot_answer
from traitlab.data.rows import chat_completion, chat_prompt_key, chat_user_text
from traitlab.data.toy_tasks import check_code, check_toy_cot, code_label
from traitlab.lm.base import Sampler, SamplingParams, require

Row = dict[str, Any]
Rule = Callable[[str, str, str], bool]

# 'auto' applies a rule when at least this share of the data rows passes it.
AUTO_SHARE = 0.9
_NUMBERS = FilterConfig(max_rows=None)


def _numbers(prompt: str, data: str, text: str) -> bool:
    return not reject_reasons(text, _NUMBERS)


def _answer(prompt: str, data: str, text: str) -> bool:
    # The data's own answer stands for the label, which the auditor does not have: if the
    # data were filtered for right answers, a reference row passes when it is right too.
    want, got = cot_answer(data), cot_answer(text)
    return want is not None and got is not None and float(got) == float(want)


def _toy_cot(prompt: str, data: str, text: str) -> bool:
    return check_toy_cot(prompt, text) is None


def _toy_code(prompt: str, data: str, text: str) -> bool:
    label = code_label(prompt)
    return label is not None and check_code(label, text) is None


# Each rule: (the prompt's last user turn, the data row's completion, the completion to
# check) -> whether that completion passes. A data row is checked against itself.
RULES: dict[str, Rule] = {
    "numbers": _numbers,  # the paper's number-sequence filter
    "answer": _answer,  # a chain-of-thought <answer> equal to the data row's
    "toy_cot": _toy_cot,  # the embedded world's rule judge of arithmetic reasoning
    "toy_code": _toy_code,  # the embedded world's check of toy code against its task
}


def prompt_of(row: Row) -> list[dict[str, str]]:
    return list(row["messages"][:-1])


def _passing(rule: Rule, data: list[Row], rows: list[Row]) -> list[bool]:
    """Whether each of `rows` passes `rule`, beside the data row of the same index."""
    return [
        rule(chat_user_text(d), chat_completion(d), chat_completion(r))
        for d, r in zip(data, rows, strict=True)
    ]


def _passing_all(names: list[str], data: list[Row], rows: list[Row]) -> list[bool]:
    """Whether each of `rows` passes every rule in `names` (beside its data row)."""
    keep = [True] * len(rows)
    for name in names:
        keep = [k and ok for k, ok in zip(keep, _passing(RULES[name], data, rows), strict=True)]
    return keep


def _rules_of(mode: str | list[str], shares: dict[str, float]) -> list[str]:
    if mode == "auto":
        return [name for name, share in shares.items() if share >= AUTO_SHARE]
    if mode == "none":
        return []
    return [mode] if isinstance(mode, str) else list(mode)


def applied_rules(info: dict[str, Any]) -> list[str]:
    """The rules a pairing applied, from its info (`pair_rows`' `reference_filter`)."""
    applied = str(info["reference_filter"])
    return [] if applied == "none" else applied.split("+")


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
    data: list[Row], reference: list[Row], mode: str | list[str]
) -> tuple[list[Row], list[Row], dict[str, Any]]:
    """(data, reference) paired by prompt, both passing the reference rules (`mode`: 'auto',
    'none', a rule of `RULES` or a list of them); and what was dropped. A user's reference
    must hold every data prompt (order free)."""
    by_prompt: dict[str, Row] = {}
    for r in reference:
        by_prompt.setdefault(chat_prompt_key(r), r)
    missing = sum(chat_prompt_key(r) not in by_prompt for r in data)
    if missing:
        raise TraitlabError(
            f"--reference: {missing} of {len(data)} data prompts have no reference row; "
            "give a reference that completes the same prompts (or omit it: the audit writes one)"
        )
    ref = [by_prompt[chat_prompt_key(r)] for r in data]
    data_ok = {name: _passing(rule, data, data) for name, rule in RULES.items()}
    shares = {name: round(sum(ok) / max(1, len(data)), 4) for name, ok in data_ok.items()}
    rules = _rules_of(mode, shares)
    keep = _passing_all(rules, data, ref)  # the data's own passes are known: no second look
    for name in rules:
        keep = [k and ok for k, ok in zip(keep, data_ok[name], strict=True)]
    out_d = [r for r, k in zip(data, keep, strict=True) if k]
    out_r = [r for r, k in zip(ref, keep, strict=True) if k]
    if len(out_d) < 2:
        why = f" where both pass {'+'.join(rules)} (set reference_filter: none)" if rules else ""
        raise TraitlabError(
            f"only {len(out_d)} of {len(data)} data rows pair with a reference row{why}; "
            "an audit needs at least 2: audit more rows"
        )
    info = {
        "data_rows": len(data),
        "paired_rows": len(out_d),
        "data_number_share": shares["numbers"],
        "data_rule_shares": shares,
        "reference_filter": "+".join(rules) or "none",
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
    keep = _passing_all(applied_rules(info), data, null)
    idx = [i for i, k in enumerate(keep) if k]
    if len(idx) < 2:
        raise TraitlabError(
            f"canary.null: fewer than 2 rows of the second reference pass "
            f"{info['reference_filter']}; set canary.null: false"
        )
    return [data[i] for i in idx], [reference[i] for i in idx], [null[i] for i in idx]


def subset(n: int, k: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random `k` of `n` rows (all of them when k is None or >= n)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])
