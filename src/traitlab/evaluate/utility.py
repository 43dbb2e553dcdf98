"""The utility check: does a student still do the number task as well as its control?

Two numbers per model, on held-out number prompts (drawn with another prompt seed than the
training data's):

* `heldout_loss`: the mean negative log-likelihood per completion token of the base's own
  filtered completions of those prompts (the task as the base does it);
* `pass_rate`: the share of the model's own completions of them that pass the filter.

A defence's utility cost is the defended student's figures against the undefended control
student's (the sweep computes it).
"""

from __future__ import annotations

from typing import Any

from traitlab.config import FilterConfig, GenerateConfig, PromptSetConfig
from traitlab.data.filtering import filter_rows
from traitlab.data.generate import generate_rows
from traitlab.data.prompts import number_prompts
from traitlab.data.rows import to_chat_rows
from traitlab.lm.base import RowScorer, mean_token_logprob, require


def heldout_prompts(prompts: PromptSetConfig, n: int) -> list[str]:
    """The held-out prompts: the training prompts' recipe with the next prompt seed."""
    return number_prompts(prompts, n, seed=prompts.seed + 1)


def reference_rows(
    lm: Any, prompts: list[str], gen: GenerateConfig, filt: FilterConfig, seed: int
) -> list[dict[str, Any]]:
    """The base's filtered completions of the held-out prompts, as chat rows."""
    raw = generate_rows(lm, prompts, gen, seed=seed, source="utility")
    return to_chat_rows(filter_rows(raw, filt.model_copy(update={"max_rows": None})).kept)


def measure_utility(
    lm: Any,
    rows: list[dict[str, Any]],
    prompts: list[str],
    gen: GenerateConfig,
    filt: FilterConfig,
    seed: int,
) -> dict[str, Any]:
    require(lm, RowScorer, "score held-out rows (the utility check needs a local model)")
    logprob = mean_token_logprob(lm, rows, batch_size=gen.batch_size)
    loss = -logprob if logprob is not None else float("nan")
    own = generate_rows(lm, prompts, gen, seed=seed, source="utility")
    passed = filter_rows(own, filt.model_copy(update={"max_rows": None}))
    return {
        "heldout_loss": loss,
        "heldout_rows": len(rows),
        "pass_rate": passed.n_valid / passed.n_raw if passed.n_raw else 0.0,
        "prompts": len(prompts),
    }
