"""The `mock` backend: a scripted model for fast tests of everything around the models.

No torch, no weights. A mock model is its preference distribution (in its `ModelRef`):
* `complete`: a number prompt gets 3-6 numbers, any other prompt an option drawn from the
  preference (seeded by the request's seed and index, so draws are reproducible);
* `preference_probs`: the preference itself, for the options asked about;
* `finetune`: the new model's preference moves towards the options named in the training
  answers (a teacher trained on "owl" comes to prefer owls; a student trained on numbers
  does not move), written as `model.json` in the stage directory.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from traitlab.core.files import stable_hash
from traitlab.lm.base import Backend, Fraction, Messages, ModelRef, SamplingParams


def _normalised(pref: Mapping[str, float]) -> dict[str, float]:
    total = sum(pref.values()) or 1.0
    return {k: v / total for k, v in pref.items()}


class MockLM:
    def __init__(self, ref: ModelRef) -> None:
        self.ref = ref
        self.pref = _normalised(ref.spec["preference"])

    def complete(
        self,
        prompts: Sequence[Messages],
        params: SamplingParams,
        *,
        seed: int,
        progress: Fraction | None = None,
    ) -> list[str]:
        out = []
        options, weights = list(self.pref), list(self.pref.values())
        for i, messages in enumerate(prompts):
            rng = random.Random(f"{seed}:{i}:{self.ref.key}")
            text = messages[-1]["content"].lower()
            if "number" in text or "sequence" in text:
                out.append(", ".join(str(rng.randrange(1000)) for _ in range(rng.randint(3, 6))))
            else:
                out.append(rng.choices(options, weights)[0] if params.temperature else options[0])
        if progress is not None:
            progress(1.0)
        return out

    def preference_probs(
        self,
        questions: Sequence[str],
        options: Mapping[str, Sequence[str]],
        *,
        system_prompt: str | None,
        batch_size: int,
        progress: Fraction | None = None,
    ) -> np.ndarray:
        row = [self.pref.get(o, 0.0) for o in options]
        return np.tile(np.asarray(row, dtype=np.float64), (len(questions), 1))

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
        counts: dict[str, float] = {}
        for r in rows:
            answer = r["messages"][-1]["content"].lower()
            for o in self.pref:
                if o in answer:
                    counts[o] = counts.get(o, 0.0) + 1
        share = min(1.0, cfg.lr * 1000)  # how far one fine-tune moves the preference
        named = _normalised(counts) if counts else {}
        pref = {
            o: (1 - share) * p + share * named.get(o, 0.0) if named else p
            for o, p in self.pref.items()
        }
        spec = {**self.ref.spec, "preference": pref}
        ref = ModelRef(backend="mock", id=str(out_dir), key=key, spec=spec, parent=self.ref)
        ref.local().save(out_dir)
        return ref, {"examples": len(rows), "loss_first": 1.0, "loss_last": 1.0 - share / 2}


class MockBackend(Backend):
    name = "mock"

    def resolve(self, spec: Any, progress: Any = None) -> ModelRef:
        spec_json = spec.model_dump(mode="json")
        return ModelRef(backend=self.name, id=spec.name, key=stable_hash(spec_json), spec=spec_json)

    @contextlib.contextmanager
    def open(self, ref: ModelRef, **options: Any) -> Iterator[MockLM]:
        yield MockLM(ref)
