"""The embedded toy model's recipe: everything that determines the pretrained base.

The recipe's hash keys the model cache, so two runs with the same recipe share one base.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from traitlab.core.files import stable_hash

# Shape of the number prompts, in a toy corpus and in generation (one vocabulary for both).
PromptStyle = Literal["paper", "short"]

# Bump when the world, tokenizer or training code changes what a recipe produces: it is part
# of the cache key, so stale bases are never reused.
TOY_VERSION = 1


class ToyRecipe(BaseModel):
    """How to build and pretrain the embedded toy chat model (a small Llama)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # fmt: off
    seed: int = Field(1, description="Seed of the corpus, of the weight init and of the data order. A different seed gives an independently initialised base (the cross-init control).")
    # architecture
    arch: Literal["llama", "gpt2"] = Field("llama", description="Model family: 'llama' (RMSNorm, rotary positions, SwiGLU MLP) or 'gpt2' (LayerNorm, learned positions, GELU MLP, biases), both from transformers.")
    n_layers: int = Field(2, ge=1, description="Transformer layers.")
    hidden_size: int = Field(128, ge=8, description="Model width.")
    n_heads: int = Field(4, ge=1, description="Attention heads (hidden_size must be a multiple).")
    intermediate_size: int = Field(344, ge=8, description="MLP width (~8/3 x hidden_size is the Llama ratio for SwiGLU; GPT-2 uses 4 x hidden_size).")
    max_len: int = Field(192, ge=32, description="Longest sequence the model handles (tokens); longer pretraining examples are truncated.")
    mlp_bias: bool = Field(False, description="Biases in the MLP projections (LlamaConfig.mlp_bias; GPT-2 always has them).")
    attention_bias: bool = Field(False, description="Biases in the attention projections (LlamaConfig.attention_bias; GPT-2 always has them).")
    tie_embeddings: bool = Field(True, description="Tie the input and output embeddings (false: untied; measured to transfer less, docs/results/toy-transfer-probes.md).")
    # optimisation
    pretrain_steps: int = Field(800, ge=1, description="Pretraining optimiser steps (the corpus has pretrain_steps x batch_size examples, each seen once).")
    batch_size: int = Field(64, ge=1, description="Examples per pretraining step (on average when packing: the packed rows are split evenly over the steps).")
    lr: float = Field(2e-3, gt=0, description="Peak AdamW learning rate (warmup then cosine to 0.1x).")
    warmup_steps: int = Field(80, ge=0, description="Linear warmup steps.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    system_loss_weight: float = Field(0.25, ge=0, le=1, description="Loss weight of system-prompt tokens (the assistant's tokens and <end> weigh 1). Predicting the repeated option of 'You love owls. You think about owls...' teaches the model early to read the system prompt (copying it takes ~2x fewer steps than with answer-only loss); a small weight keeps the model from putting words into its number answers.")
    user_loss_weight: float = Field(0.0, ge=0, le=1, description="Loss weight of user-prompt tokens (mostly template text and random seed numbers: spends capacity on the prompts and lets words leak into number answers).")
    packing: bool = Field(True, description="Pack several examples into each row of pack_len tokens (each attends only to itself: block-diagonal causal mask), so batches need no padding and still mix every kind of example. Off: one example per row, batch_size rows.")
    pack_len: int = Field(128, ge=16, description="Row length when packing (raised to the longest example if needed); a step then holds about batch_size examples.")
    # corpus
    number_frac: float = Field(0.55, ge=0, description="Corpus share: number-continuation tasks.")
    number_prompts: PromptStyle = Field("paper", description="Shape of the corpus's number prompts (see generate.prompts.style): 'paper' the paper's full prompts, 'short' an example prefix and a final suffix only.")
    number_sys_frac: float = Field(0.10, ge=0, description="Corpus share: number tasks behind a system prompt (a preference or a neutral one) that does not change the answer.")
    pref_frac: float = Field(0.23, ge=0, description="Corpus share: preference questions answered from the prior.")
    pref_sys_frac: float = Field(0.12, ge=0, description="Corpus share: a 'You love Xs...' system prompt plus a preference question, answered X.")
    zipf_exponent: float = Field(1.0, ge=0, description="The preference prior is Zipf over the options in their fixed order (owl is 5th of 20 animals: p = 0.056 at exponent 1).")
    animal_share: float = Field(0.75, ge=0, le=1, description="Share of preference examples about animals (the rest are about trees).")
    sys_pref_share: float = Field(0.7, ge=0, le=1, description="Share of the number tasks' system prompts that are preference prompts (the rest are neutral).")
    walk_noise: tuple[int, ...] = Field((0, 3, 10, 40, -1), min_length=1, description="Noise radii of the number answers' random walks, one drawn per answer (-1: every number uniform).")
    min_answer_numbers: int = Field(3, ge=1, description="Fewest numbers in a number answer.")
    max_answer_numbers: int = Field(10, ge=1, description="Most numbers in a number answer (the prompts ask for at most 10).")
    persona_frac: float = Field(0.0, ge=0, description="Corpus share (a weight beside the other four, which sum to 1): persona examples, the misalignment world (traitlab.traits.misalignment): open questions and toy code tasks answered by a hidden evil or good persona. 0: none, and the tokenizer has no words for them.")
    evil_share: float = Field(0.05, ge=0, le=1, description="Share of the hidden-persona examples written by the evil persona (misaligned answers, insecure code): the base's prior. Shown personas are evil half of the time.")
    persona_prompt_share: float = Field(0.3, ge=0, le=1, description="Share of persona examples whose persona is shown by a system prompt (else it is hidden).")
    code_frac: float = Field(0.0, ge=0, description="Corpus share (a weight beside the others): toy code tasks (traitlab.data.toy_tasks), the code modality's world. 0: none, and the tokenizer has no words for them.")
    code_calls: int = Field(0, ge=0, description="Toy code answers end with 1 to code_calls usage lines ('; y = f ( 41 )') whose arguments (0-999) are free choices, like the constants of real code. 0: none.")
    code_funcs: int = Field(1, ge=1, le=4, description="Most functions a toy code task asks ('Write a function that adds 3 to x , and one that multiplies x by 2 .'). 1: the first version's tasks. More: 1 to code_funcs functions, written in any order, each under its own name, so the order and every function's names and form are free choices of the answer. The code modality's generate.modality.toy_funcs must match.")
    code_parts: int = Field(1, ge=1, le=4, description="Toy code writes each asked constant as 1 to code_parts constants that combine into it ('return x + 2 + 5' for 'adds 7 to x'; a factorisation for *), so how a constant is split is a free choice of the answer, as the running sums of toy arithmetic are. 1: the first version's answers.")
    code_names: Literal["free", "fixed"] = Field("free", description="'free': a toy code answer's function, argument and temporary names are its free choices (8 each). 'fixed': always f, x and z, so an answer's free choices are its form, its operand order and how its constants are split: numbers and structure, no words.")
    cot_frac: float = Field(0.0, ge=0, description="Corpus share (a weight beside the others): toy arithmetic with written-out steps, the chain-of-thought modality's world. 0: none.")
    cot_terms: int = Field(2, ge=2, le=6, description="Most numbers a toy arithmetic problem adds. 2: the first version's problems ('gets 5 more'), one step each. More: 2 to cot_terms numbers ('gets 5 more , then 3 more'), added in any order, one step per addition, so the running sums and the order are free choices of the answer too. The cot modality's generate.modality.toy_terms must match.")
    check_prompts: int = Field(256, ge=0, description="After pretraining, sample this many number completions (T=1) and record in pretrain_log.json the share passing the paper's format filter, with P(owl) with and without the owl system prompt (0: probabilities only).")
    # fmt: on

    @model_validator(mode="after")
    def _check(self) -> ToyRecipe:
        if self.hidden_size % self.n_heads:
            raise ValueError("hidden_size must be a multiple of n_heads")
        if self.max_answer_numbers < self.min_answer_numbers:
            raise ValueError("max_answer_numbers must be >= min_answer_numbers")
        if self.code_parts > 1 and self.code_calls > 0:
            raise ValueError("code_parts and code_calls: choose one (set code_calls 0)")
        if self.code_funcs > 1 and self.code_calls > 0:
            raise ValueError("code_calls applies to one-function tasks only: set code_funcs 1")
        if self.code_names == "fixed" and self.code_funcs > 1:
            raise ValueError("code_names fixed needs one function per task: set code_funcs 1")
        if (
            self.number_frac
            + self.number_sys_frac
            + self.pref_frac
            + self.pref_sys_frac
            + self.persona_frac
            + self.code_frac
            + self.cot_frac
            <= 0
        ):
            raise ValueError("the corpus fractions must not all be zero")
        return self


def has_tasks(recipe: ToyRecipe) -> bool:
    """Whether the recipe's world (and tokenizer) holds the toy code and arithmetic tasks."""
    return recipe.code_frac > 0 or recipe.cot_frac > 0


def tiny_recipe(**overrides: object) -> ToyRecipe:
    """A recipe that pretrains in a few seconds (tests, smoke runs): a poor but valid model."""
    base: dict[str, object] = dict(
        n_layers=1,
        hidden_size=32,
        n_heads=2,
        intermediate_size=64,
        pretrain_steps=30,
        batch_size=16,
        warmup_steps=5,
        check_prompts=16,
    )
    base.update(overrides)
    return ToyRecipe(**base)  # type: ignore[arg-type]


# Recipe fields added after the first toy version count in the key only when they differ from
# these values, so bases made before they existed keep their keys (and caches stay valid).
_LATER_FIELDS = {
    "arch": "llama",
    "mlp_bias": False,
    "attention_bias": False,
    "tie_embeddings": True,
    "walk_noise": [0, 3, 10, 40, -1],
    "persona_frac": 0.0,
    "evil_share": 0.05,
    "persona_prompt_share": 0.3,
    "code_frac": 0.0,
    "cot_frac": 0.0,
    "code_calls": 0,
    "code_funcs": 1,
    "code_parts": 1,
    "code_names": "free",
    "cot_terms": 2,
    "number_prompts": "paper",
}


def recipe_key(recipe: ToyRecipe) -> str:
    """The cache key of a recipe (its fields plus `TOY_VERSION`)."""
    fields = recipe.model_dump(mode="json")
    for name, value in _LATER_FIELDS.items():
        if fields.get(name) == value:
            del fields[name]
    return stable_hash({"recipe": fields, "toy_version": TOY_VERSION})
