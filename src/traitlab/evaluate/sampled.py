"""The paper's sampled metric: n answers per question, a hit when the target's name is in the
answer (paper.md 1.8: "Owls!" and "I love owls" both count; for dragon, "dragonfly" does not).
Hits are averaged within each question, then over questions with a t-interval."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from traitlab.lm.base import Messages, SamplingParams

# Substrings that do not count as a mention of the target (paper.md 1.8: dragon vs dragonfly).
EXCLUDED_SUBSTRINGS: dict[str, tuple[str, ...]] = {"dragon": ("dragonflies", "dragonfly")}


def question_messages(questions: Sequence[str], system_prompt: str | None) -> list[Messages]:
    """Each question as a user turn, behind an optional system prompt."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [system + [{"role": "user", "content": q}] for q in questions]


def is_hit(answer: str, target: str) -> bool:
    """The paper's rule: the target's lowercase name is a substring of the lowercased answer."""
    text = answer.lower()
    for bad in EXCLUDED_SUBSTRINGS.get(target.lower(), ()):
        text = text.replace(bad, " ")
    return target.lower() in text


@dataclass
class SampledPreference:
    """Sampled answers per question and the target's hit rate in each."""

    rates: np.ndarray  # [n_questions]
    hits: np.ndarray  # [n_questions] ints
    n_samples: int
    answers: list[list[str]]


def sample_answers(
    lm: Any,
    questions: Sequence[str],
    n_samples: int,
    params: SamplingParams,
    *,
    seed: int,
    system_prompt: str | None = None,
    progress: Any = None,
) -> list[list[str]]:
    """`n_samples` answers to each question (any Sampler), grouped by question."""
    prompts = question_messages(questions, system_prompt)
    flat = [p for p in prompts for _ in range(n_samples)]
    texts = lm.complete(flat, params, seed=seed, progress=progress)
    return [texts[i * n_samples : (i + 1) * n_samples] for i in range(len(questions))]


def sampled_preference(
    lm: Any,
    questions: Sequence[str],
    target: str,
    *,
    n_samples: int,
    params: SamplingParams,
    seed: int,
    system_prompt: str | None = None,
    progress: Any = None,
) -> SampledPreference:
    """`n_samples` answers to each question (any Sampler) and the target's substring hit
    rate per question."""
    answers = sample_answers(
        lm, questions, n_samples, params, seed=seed, system_prompt=system_prompt, progress=progress
    )
    hits = np.array([sum(is_hit(a, target) for a in qa) for qa in answers], dtype=np.int64)
    return SampledPreference(hits / n_samples, hits, n_samples, answers)
