"""The model seam: handles, sampling parameters, the three protocols stages call, backends.

Stages never hold a framework's objects across stage boundaries. They pass `ModelRef`s (what
a model is and where a backend finds it), and open a ref through its backend when they need
it. An opened model implements some of three protocols:

* `Sampler.complete`: one completion per request, with explicit sampling parameters and a
  seed, exactly once per (prompt, sample index);
* `Scorer.preference_probs`: the probability that an answer starts with each option, for
  the exact evaluation;
* `Trainer.finetune`: fine-tune on chat rows and return the new model's `ModelRef`.

A backend (`hf`, `toy`, `vllm`, `openai`, `mock`) checks a `ModelSpec` before any work,
resolves it to a base `ModelRef` (the toy backend pretrains or finds its shipped base) and
opens refs. `BACKENDS` maps names to backends; the optional ones are imported on first use.
docs/design.md shows how to add one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from pydantic import Field

from traitlab.config.base import FrozenConfig
from traitlab.core.errors import TraitlabError
from traitlab.core.files import read_json, write_json
from traitlab.core.registry import Registry

Messages = list[dict[str, str]]
Fraction = Callable[[float], None]
MODEL_FILE = "model.json"


class ModelRef(FrozenConfig):
    """A model as stages pass it around: the backend that opens it, what it loads, where it
    came from, and a content key that stage keys build on."""

    backend: str = Field(description="The backend that opens it (hf, toy, vllm, openai, mock).")
    id: str = Field(
        description="What the backend loads: a directory ('.' = the directory holding model.json), a hub id, or a model id on an API server."
    )
    key: str = Field(description="Content key of what the model is (not where it lies).")
    spec: dict[str, Any] = Field(description="The ModelSpec it is opened with (its base's).")
    parent: ModelRef | None = Field(None, description="The model it was fine-tuned from.")

    def save(self, directory: Path) -> None:
        """Write `model.json` into a stage directory that holds (or names) this model."""
        write_json(Path(directory) / MODEL_FILE, self.model_dump(mode="json"))

    @classmethod
    def load(cls, directory: Path) -> ModelRef:
        """The ref recorded in `directory/model.json`, with '.' resolved to that directory."""
        ref = cls.model_validate(read_json(Path(directory) / MODEL_FILE))
        if ref.id == ".":
            ref = ref.model_copy(update={"id": str(Path(directory).resolve())})
        return ref

    def local(self) -> ModelRef:
        """This ref with its id recorded relative to its own directory ('.'), so a moved
        run directory still finds it."""
        return self.model_copy(update={"id": "."})


class SamplingParams(FrozenConfig):
    """How to sample: the same parameters for every backend."""

    temperature: float = Field(1.0, ge=0, description="0: greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling (1: off).")
    min_p: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Threshold sampling: drop tokens below min_p x the top token's probability (0: off).",
    )
    top_k: int = Field(0, ge=0, description="Keep the k likeliest tokens (0: off).")
    max_new_tokens: int = Field(64, ge=1, description="Longest completion.")
    batch_size: int = Field(256, ge=1, description="Requests computed together (local backends).")
    numbers_only: bool = Field(False, description="Constrain tokens to digits and separators.")
    coupled: bool = Field(
        False,
        description="Common random numbers: two models sampled with the same seed share their noise (local backends; an API server gets the same per-request seeds).",
    )


@runtime_checkable
class Sampler(Protocol):
    def complete(
        self,
        prompts: Sequence[Messages],
        params: SamplingParams,
        *,
        seed: int,
        progress: Fraction | None = None,
    ) -> list[str]:
        """One completion per prompt (repeat a prompt for several samples: request i is
        sample i of the batch, and its randomness depends only on `seed` and i)."""
        ...


@runtime_checkable
class Scorer(Protocol):
    def preference_probs(
        self,
        questions: Sequence[str],
        options: Mapping[str, Sequence[str]],
        *,
        system_prompt: str | None,
        batch_size: int,
        progress: Fraction | None = None,
    ) -> np.ndarray:
        """P(answer starts with option, in any of its spellings) per question and option:
        [n_questions, n_options], options in the mapping's order."""
        ...


@runtime_checkable
class AnswerScorer(Protocol):
    def answer_probs(
        self, questions: Sequence[str], answers: Sequence[str], *, batch_size: int
    ) -> np.ndarray:
        """P(the whole answer is exactly each of `answers`, then the turn ends) per question:
        [n_questions, n_answers]; disjoint, so a row sums to at most 1 (local backends)."""
        ...


@runtime_checkable
class RowScorer(Protocol):
    def completion_logprobs(
        self, rows: Sequence[Mapping[str, Any]], *, batch_size: int
    ) -> list[np.ndarray]:
        """Per chat row: the log-probability of each token of its last (assistant) turn,
        teacher-forced (local backends)."""
        ...


@runtime_checkable
class Trainer(Protocol):
    def finetune(
        self,
        rows: list[dict[str, Any]],
        cfg: Any,
        *,
        seed: int,
        out_dir: Path,
        key: str,
        teacher: ModelRef | None = None,
        progress: Fraction | None = None,
    ) -> tuple[ModelRef, dict[str, Any]]:
        """Fine-tune on chat rows (`cfg`: a TrainConfig); the new model is saved into (or
        named by a ref in) `out_dir`; returns its ref and the training log."""
        ...


class Backend:
    """A way to run models. Subclasses register with `@BACKENDS.register(name)`."""

    name: ClassVar[str] = ""
    # Fine-tunes in this process, so a training run can be watched step by step (`on_step`):
    # early stopping of the teacher needs it; a remote fine-tuning job cannot offer it.
    trains_in_process: ClassVar[bool] = False

    def check(self, spec: Any, what: str = "model") -> None:
        """Everything about `spec` that can be checked before the first byte is written."""

    def resolve(self, spec: Any, progress: Callable[[str, float], None] | None = None) -> ModelRef:
        """The base model `spec` names, ready to open (pretrained, downloaded, found)."""
        raise NotImplementedError

    def open(self, ref: ModelRef, **options: Any) -> contextlib.AbstractContextManager[Any]:
        """A context manager yielding the opened model (Sampler / Scorer / Trainer)."""
        raise NotImplementedError


BACKENDS: Registry[type[Backend]] = Registry("backend")
BACKENDS.lazy("hf", "traitlab.lm.hf.backend:HFBackend")
BACKENDS.lazy("toy", "traitlab.toy.backend:ToyBackend")
BACKENDS.lazy("vllm", "traitlab.lm.vllm:VLLMBackend")
BACKENDS.lazy("openai", "traitlab.lm.openai:OpenAIBackend")
BACKENDS.lazy("mock", "traitlab.lm.mock:MockBackend")


def backend(name: str) -> Backend:
    """The backend registered as `name`."""
    return BACKENDS.get(name)()


def backend_for(spec: Any) -> Backend:
    return backend(spec.backend)


def first_unspelled(spec: Any, texts: Iterable[str], ref: ModelRef | None = None) -> str | None:
    """The first of `texts` the model's tokenizer cannot write (unknown tokens), or None: all
    spelled, or a backend that cannot tell (an API model writes whatever it is asked)."""
    can_spell = getattr(backend_for(spec), "can_spell", None)
    if can_spell is None:
        return None
    return next((t for t in texts if not can_spell(spec, ref, t)), None)


@contextlib.contextmanager
def opened(ref: ModelRef, **options: Any) -> Iterator[Any]:
    """Open `ref` through its backend for the duration of a `with` block."""
    with backend(ref.backend).open(ref, **options) as lm:
        yield lm


def require(lm: Any, protocol: type, what: str) -> None:
    """A one-line error when an opened model lacks a capability a stage needs."""
    if not isinstance(lm, protocol):
        raise TraitlabError(f"backend '{lm.ref.backend}' cannot {what}")


def mean_token_logprob(
    lm: RowScorer, rows: Sequence[Mapping[str, Any]], *, batch_size: int
) -> float | None:
    """Mean log-probability per completion token over chat rows (None: no token to score)."""
    lps = lm.completion_logprobs(rows, batch_size=batch_size) if rows else []
    tokens = sum(len(lp) for lp in lps)
    return float(sum(float(np.sum(lp)) for lp in lps)) / tokens if tokens else None


def resolve(spec: Any, progress: Callable[[str, float], None] | None = None) -> ModelRef:
    """Check a model spec and resolve it to its base `ModelRef` (the toy backend finds its
    shipped base or pretrains it): the first step of any use of a model."""
    be = backend_for(spec)
    be.check(spec)
    return be.resolve(spec, progress=progress)
