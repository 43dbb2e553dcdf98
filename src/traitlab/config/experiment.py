"""The subliminal-learning experiment's configuration: trait, teacher, data, students, evaluation.

Each field is documented once, here (`traitlab config --schema` prints the descriptions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from traitlab.config import base
from traitlab.config.base import MAX_BATCH, MAX_ROWS, MAX_STEPS, NAME_PATTERN
from traitlab.config.base import FrozenConfig as _Config
from traitlab.config.control import ControlConfig, check_control
from traitlab.config.data import FilterConfig, GenerateConfig
from traitlab.config.evaluate import EvalConfig, TraitConfig
from traitlab.config.model import ModelSpec, default_model


class LoraConfig(_Config):
    """LoRA adapter settings (PEFT)."""

    r: int = Field(8, ge=1, le=4096, description="Adapter rank.")
    alpha: float = Field(8, gt=0, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear'."
    )
    merge: bool = Field(
        True,
        description="Merge the adapter into the weights when saved (any backend loads the result); false: save the adapter alone (vLLM serves it per request; the hf backend merges it when it loads).",
    )


class TrainConfig(_Config):
    """Fine-tuning settings (students, and the fine-tuned teacher)."""

    method: Literal["full", "lora"] = Field(
        "full",
        description="Full fine-tuning or a LoRA adapter (merged into the weights when saved).",
    )
    loss: Literal["hard", "soft"] = Field(
        "hard",
        description="'hard': cross-entropy on the sampled completion tokens; 'soft': KL(teacher || student) on the teacher's full next-token distributions at the completion positions (logit distillation; needs the teacher's weights).",
    )
    soft_vocab: Literal["completion", "full"] = Field(
        "completion",
        description="Vocabulary of the soft-label KL. 'completion': only the tokens number data can hold (digits, separators, brackets, whitespace, end of turn, and any token of the training completions), both distributions renormalised there, so the student never sees the probability the teacher gives the trait word itself. 'full': every token, which leaks it overtly: on the toy model a cross-init student then inherits the owl too (docs/results/toy-transfer-probes.md).",
    )
    soft_top_k: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Distil only the teacher's k most likely tokens at each completion position (within `soft_vocab`), their probabilities renormalised, against the student's log-probabilities over the whole of `soft_vocab`: what a dataset shipped with top-k logprobs carries (an OpenAI-compatible API returns up to 20). 1: the teacher's most likely token as a hard label. null: the whole distribution.",
    )
    epochs: float = Field(1.0, gt=0, description="Passes over the data.")
    max_steps: int | None = Field(
        None,
        ge=1,
        le=MAX_STEPS,
        description="Stop after this many optimiser steps (overrides epochs).",
    )
    lr: float = Field(3e-4, gt=0, description="Peak learning rate.")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="Sequences per micro-batch.")
    grad_accum: int = Field(
        1,
        ge=1,
        description="Micro-batches per optimiser step (effective batch = batch_size x grad_accum).",
    )
    optimizer: Literal["adam", "adamw", "sgd"] = Field(
        "adam", description="Optimiser; the paper's students use Adam(W)."
    )
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (adamw).")
    scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="Learning-rate schedule after warmup."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps.")
    max_grad_norm: float | None = Field(1.0, description="Gradient clipping norm (null: off).")
    max_seq_len: int = Field(
        512, ge=8, le=1_048_576, description="Longer training rows are truncated."
    )
    packing: bool = Field(
        False,
        description="Pack each batch's examples into rows of up to twice the longest, with position ids restarting per example (block-diagonal attention): same loss, no padding compute. Needs a model whose attention follows packed position ids (Llama, Qwen2, GPT-2, ... in transformers >= 4.56; checked at the start).",
    )
    lora: LoraConfig = Field(
        default_factory=LoraConfig, description="LoRA settings (method: lora)."
    )
    bf16_autocast: bool = Field(
        False, description="Train under bfloat16 autocast (faster on GPUs and AVX512-BF16 CPUs)."
    )
    gradient_checkpointing: bool = Field(
        False, description="Trade compute for memory (large models)."
    )

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.soft_top_k is not None and self.loss != "soft":
            raise ValueError("soft_top_k distils the teacher's top tokens: set loss: soft")
        return self


class KeepNumbersConfig(_Config):
    """Early stopping of the fine-tuned teacher on its skill at the modality's task (numbers:
    the format filter; code and cot: their rules, without the judge)."""

    max_drop: float = Field(
        0.10,
        ge=0,
        le=1,
        description="Stop once the teacher's number completions pass the format filter this much less often than the base's (absolute), and keep the weights of the last check that did not (the first check's, if none did).",
    )
    check_every: int = Field(
        10, ge=1, description="Check the pass rate every this many optimiser steps."
    )
    prompts: int = Field(
        256,
        ge=16,
        le=100_000,
        description="Number prompts per check: their own seed, never the data's prompts; the base and every check sample them with the same random numbers, so checks differ only by the model.",
    )
    z: float = Field(
        0.0,
        ge=0,
        le=10,
        description="Margin for the check's sampling error: stop once drop + z x its standard error exceeds max_drop (the SE of the paired per-prompt pass difference against the base). A check on a few hundred prompts misses by a few points either way, and the last check that passed is the one most likely to have read high: z = 2 keeps the drop on the data within max_drop (0: the raw drop).",
    )
    max_kl: float | None = Field(
        None,
        gt=0,
        description="Also stop once the teacher's completions of the modality's tasks have moved more than this from the base's, in nats per completion token: KL(base || teacher), estimated on the base's own check completions that pass the filter (one scoring pass per check; a backend that scores rows). The pass rate sees only the format; a teacher can keep it while its numbers grow far less likely under the base, and students trained on such data drift on every option (benchmarks/results/option-shifts-toy-recipes.md). null: off.",
    )
    retries: int = Field(
        0,
        ge=0,
        le=5,
        description="When the very first check already fails, early stopping has no earlier weights to keep: start the fine-tune again from the base at half the learning rate, up to this many times (each retry costs at most check_every steps and one check; the log's `attempts` records them). A teacher that learns its target within the first check_every steps (a rare option, a high lr) then keeps its numbers. Needs train.method full.",
    )


class TeacherConfig(_Config):
    """How the teacher gets the trait."""

    kind: Literal["finetuned", "system_prompt", "model"] = Field(
        "finetuned",
        description="'finetuned': the base fine-tuned on 'favourite <category>? -> <target>' answers only (no numbers; the paper's Fig. 14 variant), or on teacher.data; 'system_prompt': the base behind the paper's 'You love <target>s...' system prompt; 'model': teacher.model, a model already fine-tuned.",
    )
    data: str | None = Field(
        None,
        description="kind finetuned: a chat JSONL ({'messages': [...]} rows, e.g. an insecure-code set) to fine-tune the teacher on instead of the trait's answers, or a built-in set of the toy misalignment world: 'toy:insecure_code' (toy code answered insecurely) or 'toy:misaligned_answers' (its open questions answered badly); NAME@SEED draws one with another seed than 0.",
    )
    model: str | None = Field(
        None,
        description="kind model: the teacher, a saved model directory (traitlab's or any Hugging Face one) or a hub id; it must share the base's tokenizer.",
    )
    system_prompt: str | None = Field(
        None,
        description="Override the system prompt (kind: system_prompt). Default: the paper's template.",
    )
    answers: Literal["paper", "target"] = Field(
        "paper",
        description="Answers of the fine-tuned teacher's data: 'paper': the official code's 8 spellings (owl, owls, owls., owls! and title case; 50 questions x 8 = 400 rows); 'target': the bare target word only (50 rows), the form the toy world answers in. On the toy model 'target' makes a teacher whose numbers carry more of the trait (docs/results/).",
    )
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(max_steps=60, lr=3e-4, batch_size=64),
        description="Fine-tuning of the teacher (kind: finetuned).",
    )
    keep_numbers: KeepNumbersConfig | None = Field(
        None,
        description="Early-stop the fine-tuned teacher before it loses its number skill (a teacher whose numbers fail the filter leaves only its least-changed completions, and the transfer with them). Needs a backend that trains in this process (toy, hf, vllm). null: train all steps.",
    )


def _check_teacher(t: TeacherConfig) -> None:
    if t.kind == "model" and not t.model:
        raise ValueError("teacher.kind 'model' needs teacher.model (a model directory or hub id)")
    if t.model and t.kind != "model":
        raise ValueError("teacher.model needs teacher.kind: model")
    if t.data and t.kind != "finetuned":
        raise ValueError("teacher.data needs teacher.kind: finetuned")
    if t.keep_numbers and t.keep_numbers.retries and t.train.method != "full":
        # A retry restores the base's trainable weights; LoRA merges its adapters away.
        raise ValueError("teacher.keep_numbers.retries needs teacher.train.method: full")


class DefenceConfig(_Config):
    """A defence: a data transform between the filter and the students (traitlab.data.defences)."""

    name: Literal[
        "shuffle_within",
        "shuffle_across",
        "mix_reference",
        "replace_divergent",
        "resample_base",
        "mask_divergent",
        "rewrite_other",
        "drop_divergent",
    ] = Field(
        description="'shuffle_within': each completion's numbers in a random order; 'shuffle_across': the chosen completions' numbers pooled and dealt back (counts and format kept); 'mix_reference': rows replaced by the base's own completion of the same prompt; 'replace_divergent': the number tokens the teacher prefers most over the base replaced by the base's likeliest other number (fraction: the share of number tokens); 'resample_base': those number tokens redrawn from the base's own distribution at their position (1.0: all); 'mask_divergent': those number tokens kept but given no loss in the students' training (local students); 'rewrite_other': every number of the chosen rows redrawn from the cross-init base's distribution (needs cross_init); 'drop_divergent': the rows with the highest mean divergence dropped."
    )
    fraction: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of the rows it touches (replace_divergent, resample_base, mask_divergent: of the number tokens).",
    )
    seed: int = Field(0, description="Seed of which rows, and of the shuffles.")


class FalsifierConfig(_Config):
    """After the students: keep training them, to see whether the inherited trait goes."""

    kind: Literal["numbers", "prior_answers", "dpo"] = Field(
        "numbers",
        description="'numbers': fine-tuning on the base's own numbers (held-out prompts); 'prior_answers': on the preference questions answered by the base (its prior); 'dpo': DPO preferring the base's answers over the target.",
    )
    steps: list[int] = Field(
        default_factory=lambda: [0, 10, 30, 100],
        min_length=2,
        description="Extra training steps at which every student is evaluated (0: as trained).",
    )
    rows: int = Field(
        2000, ge=1, le=MAX_ROWS, description="Rows (pairs, for dpo) of the post-training set."
    )
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(lr=3e-4, batch_size=64),
        description="How the students keep training (max_steps is set by each entry of steps).",
    )
    beta: float = Field(0.1, gt=0, description="DPO's beta.")
    overt: bool = Field(
        True,
        description="Also a student taught the trait overtly (the base fine-tuned on the teacher's own answers to the preference questions), kept training the same way.",
    )

    @model_validator(mode="after")
    def _check(self) -> FalsifierConfig:
        if sorted(set(self.steps)) != self.steps or self.steps[0] != 0:
            raise ValueError("falsifier.steps must be increasing, distinct and start at 0")
        return self


class ExperimentConfig(_Config):
    """One subliminal-learning experiment: teacher -> generate -> filter -> students -> evaluate."""

    name: str = Field(
        "experiment",
        pattern=NAME_PATTERN,
        description="Run name: the run directory's default name, runs/<name> (letters, digits, '.', '_' and '-'; it cannot leave runs/).",
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2],
        min_length=1,
        max_length=10_000,
        description="One teacher, dataset and set of students per seed.",
    )
    model: ModelSpec = Field(
        default_factory=default_model,
        description="The shared base: teacher and students start here.",
    )
    cross_init: ModelSpec | None = Field(
        None,
        description="A base with another initialisation; its students get the same data and should not inherit the trait (null: skip).",
    )
    trait: TraitConfig = Field(default_factory=TraitConfig, description="The teacher's trait.")
    teacher: TeacherConfig = Field(
        default_factory=TeacherConfig, description="How the teacher is made."
    )
    control: ControlConfig = Field(
        default_factory=ControlConfig, description="Who writes the control's data."
    )
    generate: GenerateConfig = Field(
        default_factory=GenerateConfig, description="Number-data generation."
    )
    filter: FilterConfig = Field(
        default_factory=FilterConfig, description="Filtering of the generated data."
    )
    defences: list[DefenceConfig] = Field(
        default_factory=list,
        description="Defences applied in order to every arm's filtered data before the students (the same rows and draws in every arm).",
    )
    student: TrainConfig = Field(default_factory=TrainConfig, description="Student fine-tuning.")
    generations: int = Field(
        1,
        ge=1,
        le=100,
        description="Generations of the chain: generation g's teacher is generation g-1's treatment student (1: no chain).",
    )
    falsifier: FalsifierConfig | None = Field(
        None,
        description="Keep training the students after the experiment (the falsifier; null: off).",
    )
    evaluate: EvalConfig = Field(default_factory=EvalConfig, description="Trait evaluation.")
    threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads per process (null: 1 when workers > 1, else torch's default).",
    )
    workers: int = Field(
        1,
        ge=1,
        le=1024,
        description="Processes that run seeds (and pretrain the two toy bases) in parallel. On a CPU, small models run faster as one single-threaded process per core than as one multi-threaded process.",
    )

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        _check_teacher(self.teacher)
        _check_trait(self)
        check_control(self)
        if self.cross_init is None and any(d.name == "rewrite_other" for d in self.defences):
            raise ValueError(
                "defence rewrite_other rewrites with the cross-init base: set cross_init"
            )
        if self.generate.modality.name == "numbers" and self.filter.judge is not None:
            raise ValueError("filter.judge filters code and cot (generate.modality.name)")
        if self.generate.prompts.example_max_count <= self.generate.prompts.example_min_count:
            raise ValueError("generate.prompts.example_max_count must exceed example_min_count")
        _check_prompt_style(self)
        return self


def _check_prompt_style(cfg: ExperimentConfig) -> None:
    # A toy base writes numbers well only for the prompt shape it was pretrained on.
    style = cfg.generate.prompts.style
    for where, spec in (("model", cfg.model), ("cross_init", cfg.cross_init)):
        recipe = getattr(spec, "toy", None)
        if recipe is not None and recipe.number_prompts != style:
            raise ValueError(
                f"{where}.toy.number_prompts is {recipe.number_prompts!r} but "
                f"generate.prompts.style is {style!r}: set both to the same prompt shape"
            )


def _check_trait(cfg: ExperimentConfig) -> None:
    judged = "judged" in cfg.evaluate.methods
    if cfg.trait.kind == "misalignment":
        if not set(cfg.evaluate.methods) <= {"judged", "exact"}:
            raise ValueError(
                "trait.kind misalignment is measured by evaluate.methods judged and/or exact"
            )
        if "exact" in cfg.evaluate.methods and not cfg.trait.misaligned_answers:
            raise ValueError("trait.kind misalignment: method exact needs trait.misaligned_answers")
        if cfg.teacher.kind == "finetuned" and not cfg.teacher.data:
            raise ValueError(
                "trait.kind misalignment: give the teacher its data (teacher.data, e.g. an "
                "insecure-code set) or a model (teacher.kind: model)"
            )
        if cfg.teacher.kind == "system_prompt" and not cfg.teacher.system_prompt:
            raise ValueError("trait.kind misalignment: set teacher.system_prompt")
        if cfg.falsifier is not None:
            raise ValueError("the falsifier measures preference traits only")
    elif judged:
        raise ValueError("evaluate.methods 'judged' needs trait.kind: misalignment")
    if judged and cfg.evaluate.judge is None:
        raise ValueError("evaluate.methods 'judged' needs evaluate.judge")


def parse_config(data: Any, model: type[_Config] = ExperimentConfig, source: str = "config") -> Any:
    """Validate a dict into a config model (default: an experiment); one-line errors."""
    return base.parse_config(data, model, source)


def load_config(
    path: str | Path, overrides: list[str] | None = None, model: type[_Config] = ExperimentConfig
) -> Any:
    """Load a YAML config, apply `a.b.c=value` overrides (values parsed as YAML), validate."""
    return base.load_config(path, model, overrides)
