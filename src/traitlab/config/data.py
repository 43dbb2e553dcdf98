"""The data stages' configuration: the number prompts, sampling the teacher's and the control's
completions, and the filter that keeps the clean ones.

Each field is documented once, here (`traitlab config --schema` prints the descriptions).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from traitlab.config.base import MAX_BATCH, MAX_ROWS
from traitlab.config.base import FrozenConfig as _Config
from traitlab.config.modality import FilterJudgeConfig, ModalityConfig
from traitlab.config.toy import PromptStyle


class PromptSetConfig(_Config):
    """The paper's number-sequence prompt generator."""

    seed: int = Field(47, description="Prompt RNG seed (the paper's research code uses 47).")
    style: PromptStyle = Field(
        "paper",
        description="'paper': example prefix, instruction, format and final suffix (~55 toy tokens). 'short': the research prototype's shape, an example prefix and a final suffix (6 of each, ~20 tokens); answers are space-separated. Use the style the toy base was pretrained on (model.toy.number_prompts).",
    )
    example_min_count: int = Field(3, ge=1, description="Fewest seed numbers in a prompt.")
    example_max_count: int = Field(
        9, ge=2, description="Most seed numbers + 1 (exclusive, as in the paper's code)."
    )
    example_min_value: int = Field(100, ge=0, description="Smallest seed number.")
    example_max_value: int = Field(1000, ge=1, description="Largest seed number + 1 (exclusive).")
    answer_count: int = Field(10, ge=1, description="How many numbers the prompt asks for.")
    answer_max_digits: int = Field(
        3, ge=1, description="Most digits per answer number the prompt asks for."
    )


class GenerateConfig(_Config):
    """Sampling the data from the teacher (and from the base for the control)."""

    modality: ModalityConfig = Field(
        default_factory=ModalityConfig, description="What the teacher writes."
    )
    n_prompts: int = Field(
        30_000, ge=1, le=MAX_ROWS, description="Prompts to complete (one completion each)."
    )
    prompts: PromptSetConfig = Field(
        default_factory=PromptSetConfig, description="Prompt generator settings."
    )
    temperature: float = Field(1.0, ge=0, description="Sampling temperature (0: greedy).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling (1.0: off).")
    min_p: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Threshold sampling: drop tokens below min_p x the top token's probability (0: off; a defence).",
    )
    top_k: int = Field(0, ge=0, description="Keep only the k likeliest tokens (0: off).")
    max_new_tokens: int = Field(64, ge=1, le=65_536, description="Longest completion.")
    batch_size: int = Field(256, ge=1, le=MAX_BATCH, description="Prompts sampled together.")
    constrained: bool = Field(
        False,
        description="Only allow digit, separator and end tokens (helps tiny real models emit valid numbers).",
    )
    common_noise: bool = Field(
        True,
        description="Sample the teacher's and the control's numbers with the same random numbers (Gumbel-max, one noise vector per prompt and token; common random numbers): where the teacher and the base agree they write the same tokens, so the two datasets differ only where the teacher's distribution moved. Each dataset still follows its own model's distribution exactly; the treatment - control difference keeps its expectation and loses most of its sampling noise. Costs one random draw per vocabulary entry per token. Off: independent streams, one uniform per token.",
    )


class FilterConfig(_Config):
    """The modality's rules (numbers: the paper's format filter, banned numbers), an optional
    judge, and subsampling."""

    min_value: int = Field(0, description="Smallest allowed number.")
    max_value: int = Field(999, description="Largest allowed number.")
    max_count: int = Field(10, ge=1, description="Most numbers in a completion.")
    banned_numbers: list[int] = Field(
        default_factory=list, description="Numbers that reject a completion."
    )
    banned_preset: Literal["none", "evil"] = Field(
        "none", description="'evil': also ban the paper's 34 negative-association numbers."
    )
    banned_words: list[str] = Field(
        default_factory=list,
        description="code / cot: words (whole, any case) that reject a completion; code also bans the preference trait's target and spellings.",
    )
    check_code: bool = Field(
        True,
        description="The embedded world's toy code (generate.modality.source toy:code): reject answers that do not do their task (malformed_code, wrong_code: form, operation and constant, parsed, never run). false: keep them, as the paper's code filter looks only for the trait.",
    )
    check_reasoning: bool = Field(
        False,
        description="The embedded world's arithmetic (generate.modality.source toy:cot): also reject answers whose reasoning uses a word that neither the problem nor the task's step phrasings use (reasoning_words) or writes a sum that is wrong or not the problem's (wrong_step). The toy world's rule judge of the reasoning, a stand-in for the paper's LLM judge of its alignment; false: the answer is checked only.",
    )
    judge: FilterJudgeConfig | None = Field(
        None,
        description="code / cot: an LLM judge run on the completions that passed the rules (null: rules only).",
    )
    max_rows: int | None = Field(
        10_000,
        ge=1,
        le=MAX_ROWS,
        description="Subsample the kept rows to at most this many (the paper: 10,000).",
    )
    subsample_seed: int = Field(0, description="Seed of the subsampling.")
    paired: bool = Field(
        True,
        description="In an experiment: keep only the prompts whose teacher and control completions both passed, then subsample those (the same prompts for both). The treatment and control students then train on the same prompts and as many rows, and differ in the completions alone; unpaired, a teacher whose numbers fail the filter more often gives its student fewer steps than the control's. (Ignored by the single-file `traitlab filter`.)",
    )
    strict: bool = Field(
        False,
        description="Apply the official parser exactly (no extra whitespace around numbers and separators). Default: tolerate whitespace, as the toy model's tokenizer decodes '1 , 2'.",
    )
