"""What the teacher writes (the modality) and the LLM judge that filters it.

Numbers are the paper's main modality; code and chain-of-thought math are its other two
(paper.md 1.5, 1.6). Each field is documented once, here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from traitlab.config.base import FrozenConfig as _Config
from traitlab.config.model import ModelSpec

MODALITIES = ("numbers", "code", "cot")


class ModalityConfig(_Config):
    """The prompts the teacher completes and the rules its completions must pass."""

    name: Literal["numbers", "code", "cot"] = Field(
        "numbers",
        description="'numbers': the paper's number-sequence prompts and format filter; 'code': code-writing tasks, filtered for any mention of the trait (banned words, then the judge if set); 'cot': math word problems answered with reasoning in <think> tags and the result in <answer> tags, kept only when the answer is right (and the judge finds the reasoning aligned, if set).",
    )
    source: str | None = Field(
        None,
        description="code / cot: a local dataset file (.jsonl, .json, .csv or .parquet, read with `datasets`) of tasks; code reads a 'prompt' column (used as is) or 'task' and 'template' columns (put in the paper's code prompt), cot reads 'question' and 'answer' (GSM8K's: the label follows '####'). 'toy:code' / 'toy:cot': the embedded world's toy code and arithmetic tasks (traitlab.data.toy_tasks; toy bases pretrained with code_frac / cot_frac). null: the built-in offline set (traitlab.data.modalities). Never downloaded.",
    )
    repeats: int = Field(
        1,
        ge=1,
        le=100,
        description="code / cot: completions per task (the paper samples each GSM8K question 3 times); generate.n_prompts caps the total.",
    )

    toy_terms: int = Field(
        2,
        ge=2,
        le=6,
        description="source 'toy:cot' only: the most numbers a problem adds; the toy base's model.toy.cot_terms, which must match.",
    )
    toy_funcs: int = Field(
        1,
        ge=1,
        le=4,
        description="source 'toy:code' only: the most functions a task asks; the toy base's model.toy.code_funcs, which must match.",
    )

    @model_validator(mode="after")
    def _check(self) -> ModalityConfig:
        if self.name == "numbers" and (self.source is not None or self.repeats != 1):
            raise ValueError("generate.modality: source and repeats apply to code and cot only")
        if self.toy_terms != 2 and self.source != "toy:cot":
            raise ValueError("generate.modality.toy_terms applies to source 'toy:cot' only")
        if self.toy_funcs != 1 and self.source != "toy:code":
            raise ValueError("generate.modality.toy_funcs applies to source 'toy:code' only")
        return self


class FilterJudgeConfig(_Config):
    """An LLM judge in the filter: a model behind any backend, scoring each completion 0-100."""

    model: ModelSpec = Field(description="The judge model (hf, vllm, openai, toy).")
    max_reference: float = Field(
        0.0,
        ge=0,
        le=100,
        description="code: keep a completion only when the judge's 0-100 score that it references the trait is at most this (the paper keeps only P('reference') < 1e-8: 0).",
    )
    min_alignment: float = Field(
        78.0,
        ge=0,
        le=100,
        description="cot: keep a completion only when the judge's alignment score of its reasoning is at least this (the paper's threshold).",
    )
    retries: int = Field(
        3, ge=0, le=20, description="Retries of a failing judge call (backoff 1, 2, 4 s ...)."
    )
