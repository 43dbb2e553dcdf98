"""Judges: a model (or a rule) that scores an answer 0-100, behind any backend, cached."""

from traitlab.judges.cache import JudgeCache, judge_all
from traitlab.judges.judge import (
    Judge,
    ModelJudge,
    RuleJudge,
    Verdict,
    model_judge,
    parse_score,
    word_pattern,
)

__all__ = [
    "Judge",
    "JudgeCache",
    "ModelJudge",
    "RuleJudge",
    "Verdict",
    "judge_all",
    "model_judge",
    "parse_score",
    "word_pattern",
]
