"""Measuring a preference trait (favourite animal / tree), two ways, through any backend.

**sampled** (the paper's metric, `evaluate.sampled`): n answers per question at temperature T,
a hit when the target's name is a substring of the answer; per-question rates, then a
t-interval over questions, and the pooled Wilson interval over all answers.

**exact** (no sampling): the probability that the answer *starts with* each option, from the
backend's `Scorer` (teacher forcing for local models, `lm.hf.scoring`; first-token logprobs
on an API that returns them). Every option is scored, so each question yields a full
preference distribution.

`evaluate_model` runs the methods of an `EvalConfig` and returns an `Evaluation`: a typed
result whose JSON is the stage's eval.json. The sampled answers travel beside it
(`Evaluation.answers`, excluded from the JSON), since they are an artifact of their own.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from traitlab.config import EvalConfig, TraitConfig
from traitlab.core.errors import TraitlabError
from traitlab.core.progress import Fraction
from traitlab.core.stats import mean_ci, wilson
from traitlab.evaluate.sampled import sampled_preference
from traitlab.lm.base import Sampler, SamplingParams, Scorer, require
from traitlab.traits.preference import answer_spellings, get_trait


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MethodResult(_Result):
    """One method's rate: the mean over questions with its interval, per question."""

    mean: float
    ci: dict[str, Any]
    per_question: list[float]
    seconds: float


class ExactResult(MethodResult):
    options: dict[str, float] = Field(description="Mean probability of every option.")
    per_question_options: list[list[float]] = Field(description="[question][option] table.")


class SampledResult(MethodResult):
    pooled: dict[str, Any] = Field(description="Wilson interval over all answers.")
    hits: list[int]
    n_per_question: int
    temperature: float


class JudgedResult(MethodResult):
    """The share of answers the judges find misaligned (evaluate.judged)."""

    misaligned: list[int]
    counted: list[int] = Field(description="Answers per question that count (coherent, scored).")
    excluded: dict[str, int] = Field(description="Answers not counted, by reason.")
    n_per_question: int
    temperature: float
    judges: dict[str, dict[str, Any]] = Field(description="Each judge's pin.")
    alignment_max: float
    coherence_min: float
    judge_agreement: dict[str, int] | None = Field(
        None,
        description="With evaluate.judge.check: the check judge's labels of its answers "
        "against the counted judges' (traitlab.judges.agreement).",
    )


class Agreement(_Result):
    difference: float = Field(description="sampled - exact mean.")
    correlation: float | None = Field(description="Pearson over questions (null if undefined).")
    cost_ratio: float | None = Field(description="sampled / exact seconds.")


class Evaluation(_Result):
    """A model's trait rates: eval.json."""

    target: str
    category: str
    questions: list[str]
    options: list[str]
    seed: int
    system_prompt: str | None
    numbers_prefix: bool
    confidence: float
    exact: ExactResult | None = None
    sampled: SampledResult | None = None
    judged: JudgedResult | None = None
    agreement: Agreement | None = None
    answers: list[list[str]] | None = Field(None, exclude=True)
    judgements: list[dict[str, Any]] | None = Field(None, exclude=True)

    def to_json(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        return {k: v for k, v in d.items() if v is not None or k == "system_prompt"}


def _exact_result(
    vals: np.ndarray, table: np.ndarray, options: list[str], conf: float, t0: float
) -> ExactResult:
    """The exact method's result: the measured rate per question (`vals`) beside the full
    [question][option] table it came from."""
    return ExactResult(
        mean=float(vals.mean()),
        ci=mean_ci(vals, conf).to_dict(),
        per_question=[float(v) for v in vals],
        options={o: float(table[:, k].mean()) for k, o in enumerate(options)},
        per_question_options=[[float(v) for v in row] for row in table],
        seconds=time.perf_counter() - t0,
    )


def _misalignment(
    lm: Any,
    cfg: EvalConfig,
    trait: TraitConfig,
    questions: list[str],
    seed: int,
    system_prompt: str | None,
    progress: Fraction | None,
    judges: dict[str, Any] | None,
    judge_cache: Path | None,
) -> Evaluation:
    """The misaligned share: exact (summed probability of the misaligned first words) and/or
    judged (sampled answers scored by the judges)."""
    from traitlab.evaluate.judged import judged_misalignment

    words = list(dict.fromkeys(w.lower() for w in trait.misaligned_answers))
    out: dict[str, Any] = {}
    records = None
    if "exact" in cfg.methods:
        require(lm, Scorer, "score answers (use evaluate.methods: [judged])")
        t0 = time.perf_counter()
        table = lm.preference_probs(
            questions,
            {w: [w] for w in words},
            system_prompt=system_prompt,
            batch_size=cfg.batch_size,
            progress=None if "judged" in cfg.methods else progress,
        )
        out["exact"] = _exact_result(table.sum(axis=1), table, words, cfg.confidence, t0)
    if "judged" in cfg.methods:
        if judges is None:
            raise TraitlabError("evaluate: method judged needs judges (evaluate.judge)")
        require(lm, Sampler, "sample answers for the judges")
        t0 = time.perf_counter()
        res, records = judged_misalignment(
            lm,
            questions,
            cfg,
            judges,
            seed=seed,
            system_prompt=system_prompt,
            cache_root=judge_cache,
            progress=progress,
        )
        rates = np.asarray(res["per_question"])
        out["judged"] = JudgedResult(
            mean=float(rates.mean()),
            ci=mean_ci(rates, cfg.confidence).to_dict(),
            seconds=time.perf_counter() - t0,
            **res,
        )
    return Evaluation(
        target="misaligned",
        category="misalignment",
        questions=questions,
        options=words,
        seed=seed,
        system_prompt=system_prompt,
        numbers_prefix=False,
        confidence=cfg.confidence,
        judgements=records,
        **out,
    )


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or float(np.std(a)) == 0.0 or float(np.std(b)) == 0.0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def eval_questions(cfg: EvalConfig, trait: TraitConfig) -> list[str]:
    if trait.kind == "misalignment":
        from traitlab.evaluate.judged import misalignment_questions

        return misalignment_questions(trait, cfg.n_questions)
    spec = get_trait(trait.category)
    questions = list(spec.questions)
    if cfg.n_questions is not None:
        questions = questions[: cfg.n_questions]
    if cfg.numbers_prefix:
        from traitlab.data.prompts import with_numbers_prefix

        questions = with_numbers_prefix(questions)  # one seed-47 prefix per question, in order
    return questions


def evaluate_model(
    lm: Any,
    cfg: EvalConfig,
    trait: TraitConfig,
    *,
    seed: int,
    system_prompt: str | None = None,
    progress: Fraction | None = None,
    judges: dict[str, Any] | None = None,
    judge_cache: Path | None = None,
) -> Evaluation:
    """Measure `trait` on an opened model with each method of `cfg.methods` (`judges`, from
    `evaluate.judged.open_judges`, for method judged; their verdicts cached under
    `judge_cache`)."""
    questions = eval_questions(cfg, trait)
    if trait.kind == "misalignment":
        return _misalignment(
            lm, cfg, trait, questions, seed, system_prompt, progress, judges, judge_cache
        )
    target = trait.target.lower()
    options = list(get_trait(trait.category).options)
    if target not in options:
        options.append(target)
    conf = cfg.confidence
    methods = list(dict.fromkeys(cfg.methods))
    share = {"exact": 0.1, "sampled": 0.9} if len(methods) == 2 else {m: 1.0 for m in methods}
    offset = 0.0

    def sub(m: str) -> Fraction | None:
        if progress is None:
            return None
        base = offset
        return lambda f: progress(min(1.0, base + share[m] * f))

    out: dict[str, Any] = {
        "target": target,
        "category": trait.category,
        "questions": questions,
        "options": options,
        "seed": seed,
        "system_prompt": system_prompt,
        "numbers_prefix": cfg.numbers_prefix,
        "confidence": conf,
    }
    for m in methods:
        t0 = time.perf_counter()
        if m == "exact":
            require(lm, Scorer, "score answers (use evaluate.methods: [sampled])")
            table = lm.preference_probs(
                questions,
                {o: answer_spellings(o) for o in options},
                system_prompt=system_prompt,
                batch_size=cfg.batch_size,
                progress=sub(m),
            )
            vals = table[:, options.index(target)]
            out["exact"] = _exact_result(vals, table, options, conf, t0)
        else:
            params = SamplingParams(
                temperature=cfg.temperature,
                max_new_tokens=cfg.max_new_tokens,
                batch_size=cfg.batch_size,
            )
            sp = sampled_preference(
                lm,
                questions,
                target,
                n_samples=cfg.samples_per_question,
                params=params,
                seed=seed,
                system_prompt=system_prompt,
                progress=sub(m),
            )
            n_total = int(sp.n_samples * len(questions))
            out["sampled"] = SampledResult(
                mean=float(sp.rates.mean()),
                ci=mean_ci(sp.rates, conf).to_dict(),
                pooled=wilson(int(sp.hits.sum()), n_total, conf).to_dict(),
                per_question=[float(v) for v in sp.rates],
                hits=[int(h) for h in sp.hits],
                n_per_question=sp.n_samples,
                temperature=cfg.temperature,
                seconds=time.perf_counter() - t0,
            )
            out["answers"] = sp.answers
        offset += share[m]
    if "exact" in out and "sampled" in out:
        e, s = out["exact"], out["sampled"]
        ratio = s.seconds / e.seconds if e.seconds > 0 else math.inf
        out["agreement"] = Agreement(
            difference=s.mean - e.mean,
            correlation=_correlation(np.asarray(s.per_question), np.asarray(e.per_question)),
            cost_ratio=ratio if math.isfinite(ratio) else None,
        )
    if progress is not None:
        progress(1.0)
    return Evaluation(**out)
