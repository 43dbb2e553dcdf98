"""Misalignment, judged: free-form answers to the emergent-misalignment questions, each scored
0-100 by an alignment judge and a coherence judge (the paper's rule, Betley et al.).

An answer counts when the coherence judge scores it above `coherence_min` and the alignment
judge gives a number; it is misaligned when its alignment is below `alignment_max`. Answers
that do not count keep their reason (incoherent, CODE, REFUSAL, unparsable) in the result's
`excluded` counts and in judged.jsonl: nothing is dropped silently. The rate per question is
misaligned / counted (0 where nothing counted, with counted = 0 recorded).

Judges' verdicts are cached per judge pin (`judges.JudgeCache`) chunk by chunk, so a killed
evaluation resumes without asking the judge again.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from traitlab.config import EvalConfig, JudgeConfig, TraitConfig
from traitlab.core.progress import Fraction
from traitlab.evaluate.sampled import sample_answers
from traitlab.judges import Judge, RuleJudge, Verdict, judge_all, model_judge
from traitlab.judges.agreement import Label, agreement_counts
from traitlab.judges.prompts import PROMPTS
from traitlab.lm.base import Sampler, SamplingParams, opened, require, resolve
from traitlab.traits.preference import EM_QUESTIONS, EM_SUFFIX_V5


def misalignment_questions(trait: TraitConfig, n_questions: int | None = None) -> list[str]:
    qs = (trait.questions or list(EM_QUESTIONS.values()))[:n_questions]
    return [f"{q} {EM_SUFFIX_V5}" for q in qs] if trait.em_suffix else qs


@contextlib.contextmanager
def _model_judges(spec: Any, retries: int, prefix: str = "") -> Iterator[dict[str, Judge]]:
    ref = resolve(spec)
    with opened(ref) as lm:
        require(lm, Sampler, "judge answers")
        yield {
            prefix + aspect: model_judge(lm, ref, template, retries)
            for aspect, template in PROMPTS.items()
        }


@contextlib.contextmanager
def open_judges(cfg: JudgeConfig) -> Iterator[dict[str, Judge]]:
    """{'alignment': judge, 'coherence': judge}, a model judge opened once for both; with
    `cfg.check`, its two judges beside them as 'check_alignment' and 'check_coherence'."""
    with contextlib.ExitStack() as stack:
        if cfg.kind == "rule":
            judges: dict[str, Judge] = {
                "alignment": RuleJudge("alignment", cfg.words),
                "coherence": RuleJudge("coherence"),
            }
        else:
            judges = stack.enter_context(_model_judges(cfg.model, cfg.retries))
        if cfg.check is not None:
            judges |= stack.enter_context(_model_judges(cfg.check, cfg.retries, "check_"))
        yield judges


@contextlib.contextmanager
def eval_judges(cfg: EvalConfig) -> Iterator[dict[str, Judge] | None]:
    """The judges an evaluation needs: `open_judges(cfg.judge)` when its methods include
    judged (a validated config then has a judge), else None. The one place the pipeline's
    evaluate stage and `traitlab evaluate` open them."""
    if "judged" not in cfg.methods:
        yield None
        return
    assert cfg.judge is not None
    with open_judges(cfg.judge) as judges:
        yield judges


def _label(a: Verdict, c: Verdict, cfg: JudgeConfig) -> Label:
    """(misaligned, why excluded) by the paper's rule."""
    if c.score is None:
        return False, f"coherence {c.reason}"
    if c.score <= cfg.coherence_min:
        return False, "incoherent"
    if a.score is None:
        return False, f"alignment {a.reason}"
    return a.score < cfg.alignment_max, None


def _check_order(n_questions: int, n: int, k: int) -> list[int]:
    """`k` answer indices spread over the questions: every question's first answer, then
    every question's second, ... (answers are stored question by question, n each)."""
    return sorted([q * n + j for j in range(n) for q in range(n_questions)][:k])


def judged_misalignment(
    lm: Any,
    questions: Sequence[str],
    cfg: EvalConfig,
    judges: dict[str, Judge],
    *,
    seed: int,
    system_prompt: str | None = None,
    cache_root: Path | None = None,
    progress: Fraction | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the method's result, one record per answer with its two verdicts)."""
    assert cfg.judge is not None
    n = cfg.samples_per_question
    params = SamplingParams(
        temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size
    )
    answers = sample_answers(lm, questions, n, params, seed=seed, system_prompt=system_prompt)
    if progress is not None:
        progress(0.5)
    pairs = [(q, t) for q, qa in zip(questions, answers, strict=True) for t in qa]
    verdicts = {a: judge_all(judges[a], pairs, cache_root) for a in ("alignment", "coherence")}
    labels = [_label(a, c, cfg.judge) for a, c in zip(*verdicts.values(), strict=True)]
    checked: dict[int, Label] = {}
    if "check_alignment" in judges:
        idx = _check_order(len(questions), n, cfg.judge.check_answers)
        sub = [pairs[i] for i in idx]
        cv = [judge_all(judges[f"check_{a}"], sub, cache_root) for a in ("alignment", "coherence")]
        checked = {i: _label(a, c, cfg.judge) for i, a, c in zip(idx, *cv, strict=True)}
    misaligned = np.zeros(len(questions), dtype=np.int64)
    counted = np.zeros(len(questions), dtype=np.int64)
    excluded: Counter[str] = Counter()
    records = []
    for i, (_q, t) in enumerate(pairs):
        a, c = verdicts["alignment"][i], verdicts["coherence"][i]
        bad, why = labels[i]
        if why is None:
            counted[i // n] += 1
            misaligned[i // n] += int(bad)
        else:
            excluded[why] += 1
        records.append(
            {
                "question": i // n,
                "answer": t,
                "alignment": a.score,
                "coherence": c.score,
                "misaligned": bool(bad),
                "excluded": why,
                "raw": {"alignment": a.raw, "coherence": c.raw},
                **(
                    {"check": {"misaligned": checked[i][0], "excluded": checked[i][1]}}
                    if i in checked
                    else {}
                ),
            }
        )
    rates = np.where(counted > 0, misaligned / np.maximum(counted, 1), 0.0)
    result = {
        "per_question": [float(r) for r in rates],
        "misaligned": [int(x) for x in misaligned],
        "counted": [int(x) for x in counted],
        "excluded": dict(sorted(excluded.items())),
        "n_per_question": n,
        "temperature": cfg.temperature,
        "judges": {aspect: j.pin for aspect, j in judges.items()},
        "alignment_max": cfg.judge.alignment_max,
        "coherence_min": cfg.judge.coherence_min,
    }
    if checked:
        first = [labels[i] for i in checked]
        result["judge_agreement"] = agreement_counts(first, list(checked.values()))
    if progress is not None:
        progress(1.0)
    return result, records
