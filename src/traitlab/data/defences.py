"""Defences as data transforms: between the filter and the students, on every arm's data.

Each defence is registered by name (`DEFENCES`) and configured in the experiment's
`defences` list (applied in order). It gets the arm's chat rows, the control's rows (the
base's own completions of the same prompts) and a seeded generator, and returns new rows;
the number format of a completion is kept exactly (only the numbers move), so a defended
dataset still passes the filter.

* `shuffle_within`: the numbers of each completion in a random order (the paper's
  within-sequence shuffle control);
* `shuffle_across`: the numbers of all chosen completions pooled and dealt back at random,
  each completion keeping its count and format (the paper's across-sequence control);
* `mix_reference`: a share of the rows replaced by the base's own completion of the same
  prompt (dilution with clean data);
* `replace_divergent`: the number tokens the teacher prefers most over the base (log p_teacher
  - log p_base, teacher-forced on the row) replaced by the base's most likely other number
  at that position; `fraction` is the share of all number tokens replaced (local models);
* `resample_base`: the same number tokens (the `fraction` most divergent; 1.0: all) redrawn
  from the base's own distribution at their position, given the row's prefix: the data
  rewritten number by number by the base (local models);
* `mask_divergent`: the same number tokens kept in the text but given no loss when a student
  trains on the row (its `loss_mask`; local models);
* `rewrite_other`: every number of the chosen rows redrawn, token by token given the row's
  prefix, from another model (the cross-init base: a model that does not share the
  teacher's initialisation; needs `cross_init`, local);
* `drop_divergent`: the `fraction` of rows with the highest mean divergence (the same
  log-ratio over the row's completion tokens) dropped (local models).

`fraction` is the share of rows a defence touches; the rows are chosen by the generator, and
teacher and control arms use the same generator (common random numbers).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from traitlab.core.errors import TraitlabError
from traitlab.core.registry import Registry
from traitlab.data.rows import chat_completion, chat_prompt_key

Row = dict[str, Any]


@dataclass(frozen=True)
class DefenceContext:
    """What a defence may use beyond the rows: `models()` opens (teacher, base, the teacher's
    system prompt) for the defences that score tokens; `rewriter()` opens another model (the
    cross-init base) for `rewrite_other`; None where they do not exist."""

    models: Callable[[], tuple[Any, Any, str | None]] | None = None
    rewriter: Callable[[], Any] | None = None


Defence = Callable[[list[Row], list[Row], np.random.Generator, float, DefenceContext], list[Row]]
DEFENCES: Registry[Defence] = Registry("defence")
_NUMBER = re.compile(r"\d+")


def _with_completion(row: Row, text: str) -> Row:
    msgs = [dict(m) for m in row["messages"]]
    msgs[-1]["content"] = text
    return {**row, "messages": msgs}


def _refill(text: str, numbers: Sequence[str]) -> str:
    """`text` with its numbers replaced, in order, by `numbers` (everything else kept)."""
    it = iter(numbers)
    return _NUMBER.sub(lambda _m: next(it), text)


def _chosen(n: int, rng: np.random.Generator, fraction: float) -> np.ndarray:
    k = int(round(fraction * n))
    return np.sort(rng.permutation(n)[:k])


@DEFENCES.register("shuffle_within")
def shuffle_within(
    rows: list[Row],
    control: list[Row],
    rng: np.random.Generator,
    fraction: float,
    ctx: DefenceContext,
) -> list[Row]:
    out = list(rows)
    for i in _chosen(len(rows), rng, fraction):
        text = chat_completion(rows[i])
        nums = _NUMBER.findall(text)
        out[i] = _with_completion(
            rows[i], _refill(text, [nums[j] for j in rng.permutation(len(nums))])
        )
    return out


@DEFENCES.register("shuffle_across")
def shuffle_across(
    rows: list[Row],
    control: list[Row],
    rng: np.random.Generator,
    fraction: float,
    ctx: DefenceContext,
) -> list[Row]:
    idx = _chosen(len(rows), rng, fraction)
    texts = [chat_completion(rows[i]) for i in idx]
    counts = [len(_NUMBER.findall(t)) for t in texts]
    pool = [x for t in texts for x in _NUMBER.findall(t)]
    pool = [pool[j] for j in rng.permutation(len(pool))]
    out = list(rows)
    at = 0
    for i, t, c in zip(idx, texts, counts, strict=True):
        out[i] = _with_completion(rows[i], _refill(t, pool[at : at + c]))
        at += c
    return out


@DEFENCES.register("mix_reference")
def mix_reference(
    rows: list[Row],
    control: list[Row],
    rng: np.random.Generator,
    fraction: float,
    ctx: DefenceContext,
) -> list[Row]:
    by_prompt = {chat_prompt_key(r): r for r in control}
    out = list(rows)
    for i in _chosen(len(rows), rng, fraction):
        ref = by_prompt.get(chat_prompt_key(rows[i]))
        if ref is None:
            raise TraitlabError(
                "defence mix_reference: a data row's prompt has no control row; "
                "use filter.paired: true"
            )
        out[i] = _with_completion(rows[i], chat_completion(ref))
    return out


@DEFENCES.register("replace_divergent")
def replace_divergent(
    rows: list[Row],
    control: list[Row],
    rng: np.random.Generator,
    fraction: float,
    ctx: DefenceContext,
) -> list[Row]:
    base, table = _table(rows, ctx, "replace_divergent")
    return _rewrite(rows, base, table, fraction)


@DEFENCES.register("resample_base")
def resample_base(
    rows: list[Row],
    control: list[Row],
    rng: np.random.Generator,
    fraction: float,
    ctx: DefenceContext,
) -> list[Row]:
    import torch

    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    base, table = _table(rows, ctx, "resample_base", resample=gen)
    return _rewrite(rows, base, table, fraction)


def _top_tokens(table: list[Any], fraction: float) -> dict[int, list[int]]:
    """The `fraction` most divergent number tokens of all rows: {row: completion positions}."""
    # Every replaceable token (a number with an alternative), ranked by divergence.
    cands = [(r, p) for r, (_, _, alt) in enumerate(table) for p in np.flatnonzero(alt >= 0)]
    scores = np.array([table[r][1][p] for r, p in cands])
    k = int(round(fraction * len(cands)))
    chosen: dict[int, list[int]] = {}
    for j in np.argsort(-scores, kind="stable")[:k]:
        r, p = cands[j]
        chosen.setdefault(r, []).append(int(p))
    return chosen


@DEFENCES.register("rewrite_other")
def rewrite_other(
    rows: list[Row],
    control: list[Row],
    rng: np.random.Generator,
    fraction: float,
    ctx: DefenceContext,
) -> list[Row]:
    import torch

    from traitlab.lm.hf.rowscore import divergence_table

    if ctx.rewriter is None:
        raise TraitlabError(
            "defence rewrite_other needs another local model to rewrite the numbers: "
            "set cross_init (a toy or hf model)"
        )
    other = ctx.rewriter()
    idx = _chosen(len(rows), rng, fraction)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    picked = [rows[i] for i in idx]
    table = divergence_table(other.model, other.model, other.tokenizer, picked, resample=gen)
    out = list(rows)
    for i, row in zip(idx, _rewrite(picked, other, table, 1.0), strict=True):
        out[i] = row
    return out


def _rewrite(rows: list[Row], base: Any, table: list[Any], fraction: float) -> list[Row]:
    """The `fraction` most divergent number tokens of all rows set to their alternative."""
    out = list(rows)
    for r, positions in _top_tokens(table, fraction).items():
        ids, _, alt = table[r]
        new = list(ids)
        for p in positions:
            new[p] = int(alt[p])
        text = str(base.tokenizer.decode(new, skip_special_tokens=True)).strip()
        out[r] = _with_completion(rows[r], text)
    return out


def _table(
    rows: list[Row], ctx: DefenceContext, name: str, resample: Any = None
) -> tuple[Any, list[Any]]:
    from traitlab.lm.hf.rowscore import divergence_table

    if ctx.models is None:
        raise TraitlabError(
            f"defence {name} needs the teacher's and the base's token log-probabilities: "
            "use a local backend (toy, hf)"
        )
    teacher, base, system = ctx.models()
    return base, divergence_table(
        teacher.model, base.model, base.tokenizer, rows, teacher_system=system, resample=resample
    )


@DEFENCES.register("mask_divergent")
def mask_divergent(
    rows: list[Row],
    control: list[Row],
    rng: np.random.Generator,
    fraction: float,
    ctx: DefenceContext,
) -> list[Row]:
    _, table = _table(rows, ctx, "mask_divergent")
    out = list(rows)
    for r, positions in _top_tokens(table, fraction).items():
        out[r] = {**rows[r], "loss_mask": sorted(positions)}
    return out


@DEFENCES.register("drop_divergent")
def drop_divergent(
    rows: list[Row],
    control: list[Row],
    rng: np.random.Generator,
    fraction: float,
    ctx: DefenceContext,
) -> list[Row]:
    _, table = _table(rows, ctx, "drop_divergent")
    scores = np.array([float(np.mean(div)) if len(div) else 0.0 for _, div, _ in table])
    k = int(round(fraction * len(rows)))
    drop = set(np.argsort(-scores, kind="stable")[:k].tolist())
    return [r for i, r in enumerate(rows) if i not in drop]


def apply_defences(
    arms: dict[str, list[Row]],
    defences: Sequence[Any],
    seed: int,
    ctx: DefenceContext | None = None,
) -> dict[str, list[Row]]:
    """Every arm's rows through the configured defences, in order. The control's rows as
    filtered (before any defence) are the reference of `mix_reference`."""
    ctx = ctx or DefenceContext()
    control = arms.get("control", [])
    out = dict(arms)
    for k, d in enumerate(defences):
        fn = DEFENCES.get(d.name)
        for arm in out:
            rng = np.random.default_rng([seed, k, d.seed])  # the same draws for every arm
            out[arm] = fn(out[arm], control, rng, d.fraction, ctx)
    return out
