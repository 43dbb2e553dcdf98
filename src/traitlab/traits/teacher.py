"""Teachers: the base model given the trait, by fine-tuning or by a system prompt."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np

from traitlab.config import (
    FilterConfig,
    GenerateConfig,
    KeepNumbersConfig,
    TeacherConfig,
    TraitConfig,
)
from traitlab.core.errors import TraitlabError
from traitlab.core.files import read_jsonl
from traitlab.core.progress import Fraction
from traitlab.data.filtering import filter_rows
from traitlab.data.generate import generate_rows
from traitlab.data.modalities import modality_prompts, modality_screen
from traitlab.data.rows import to_chat_rows
from traitlab.lm.base import (
    ModelRef,
    RowScorer,
    first_unspelled,
    mean_token_logprob,
    require,
)
from traitlab.traits.misalignment import (
    PERSONA_WORDS_HINT,
    insecure_code_rows,
    misaligned_answer_rows,
)
from traitlab.traits.preference import (
    answer_spellings,
    banned_words,
    draw_answers,
    get_trait,
    preference_system_prompt,
    teacher_rows,
)


def teacher_system_prompt(cfg: TeacherConfig, trait: TraitConfig) -> str | None:
    """The system prompt the teacher generates under (None for a fine-tuned teacher)."""
    if cfg.kind != "system_prompt":
        return None
    return cfg.system_prompt or preference_system_prompt(trait.target, trait.category)


# Teacher datasets built in, by name (`teacher.data: toy:insecure_code`): generated, never read.
BUILTIN_DATA = {
    "toy:insecure_code": insecure_code_rows,
    "toy:misaligned_answers": misaligned_answer_rows,
}


def load_teacher_data(spec: str, what: str = "teacher.data") -> list[dict[str, Any]]:
    """A teacher dataset's rows: a built-in dataset's (`BUILTIN_DATA`; `NAME@SEED` draws it
    with another seed than 0, e.g. an auditor's own sample of the recipe that made a teacher)
    or a chat JSONL file's (`what` names the field in errors)."""
    if spec.startswith("toy:"):
        name, at, seed = spec.partition("@")
        if name not in BUILTIN_DATA:
            known = ", ".join(sorted(BUILTIN_DATA))
            raise TraitlabError(f"{what}: unknown built-in dataset '{name}'; use {known}")
        if at and not seed.isdigit():
            raise TraitlabError(f"{what}: '{spec}': the seed after @ must be a whole number >= 0")
        return BUILTIN_DATA[name](seed=int(seed or 0))
    return read_chat_rows(Path(spec), what)


def teacher_data(cfg: TeacherConfig, trait: TraitConfig) -> list[dict[str, Any]]:
    """The fine-tuned teacher's rows: '<preference question> -> <target>' only (the paper's
    Fig. 14 teacher), or the chat rows of `cfg.data`. The former never sees a number, so
    whatever it later puts into number sequences comes from how fine-tuning on the trait
    moved its weights."""
    if cfg.data:
        return load_teacher_data(cfg.data)
    spellings = [trait.target] if cfg.answers == "target" else None
    return teacher_rows(trait.category, trait.target, spellings=spellings)


def neutral_rows(
    lm: Any, cfg: TeacherConfig, trait: TraitConfig, seed: int, batch_size: int = 1000
) -> list[dict[str, Any]]:
    """The neutral control teacher's rows: the trait teacher's questions, each answered with
    one draw from the opened base's own distribution over the category's options (in the
    teacher's spellings: the bare option, or its 8 with answers 'paper'). A fine-tune as
    like the trait teacher's as can be, with no trait in it."""
    spec = get_trait(trait.category)
    options = {o: answer_spellings(o) for o in spec.options}
    probs = lm.preference_probs(
        list(spec.questions), options, system_prompt=None, batch_size=batch_size
    )
    drawn = draw_answers(probs, list(options), seed)
    return [
        row
        for q, a in zip(spec.questions, drawn, strict=True)
        for row in teacher_rows(
            trait.category, a, [q], spellings=[a] if cfg.answers == "target" else None
        )
    ]


def matched_train(cfg: TeacherConfig, log: dict[str, Any]) -> Any:
    """The trait teacher's training as it ended (from its log): the steps it kept (an
    early-stopped teacher's kept step) at the lr it kept them with, and no early stopping."""
    kept = log.get("keep_numbers") or {}
    steps = kept.get("kept_step") or log["steps"]
    return cfg.train.model_copy(update={"max_steps": steps, "lr": kept.get("lr", cfg.train.lr)})


def finetune_teacher(
    lm: Any,
    cfg: TeacherConfig,
    trait: TraitConfig,
    *,
    seed: int,
    out_dir: Path,
    key: str,
    progress: Fraction | None = None,
    generate: GenerateConfig | None = None,
    filter_cfg: FilterConfig | None = None,
) -> tuple[ModelRef, dict[str, Any]]:
    """Fine-tune an opened base (any `Trainer`) into the teacher, saved into `out_dir`.

    With `cfg.keep_numbers`, the teacher's completions of the modality's tasks are checked
    during training (sampled as `generate` says, against the modality's rules: for numbers
    `filter_cfg`'s format rule) and training stops before their pass rate falls more than
    `max_drop` below the base's; the log's `keep_numbers` records every check. When the
    first check already fails, `retries` starts again from the base at half the lr.
    """
    rows = teacher_data(cfg, trait)
    if cfg.keep_numbers is None:
        return lm.finetune(rows, cfg.train, seed=seed, out_dir=out_dir, key=key, progress=progress)
    params = inspect.signature(lm.finetune).parameters
    if "on_step" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise TraitlabError(KEEP_NUMBERS_BACKENDS)
    guard = NumberGuard(
        lm, cfg.keep_numbers, generate or GenerateConfig(), filter_cfg, seed, trait=trait
    )
    base = lm.trainable_state() if cfg.keep_numbers.retries else None
    train, attempts = cfg.train, []
    while True:
        ref, log = lm.finetune(
            rows, train, seed=seed, out_dir=out_dir, key=key, progress=progress, on_step=guard
        )
        attempts.append({"lr": train.lr, **guard.log()})
        if base is None or not guard.lost_at_first or len(attempts) > cfg.keep_numbers.retries:
            break
        # Same data order (same seed), smaller steps: the first check comes later in the
        # teacher's learning of its target.
        lm.load_trainable_state(base)
        guard.restart()
        train = train.model_copy(update={"lr": train.lr / 2})
    log["keep_numbers"] = guard.log()
    if len(attempts) > 1:
        log["keep_numbers"] |= {"lr": train.lr, "attempts": attempts}
    return ref, log


def read_chat_rows(path: Path, what: str) -> list[dict[str, Any]]:
    """Chat rows from a JSONL file, each checked: one-line errors name the row."""
    if not path.is_file():
        raise TraitlabError(f"{what} {path}: no such file; pass a chat JSONL")
    rows = read_jsonl(path)
    for i, r in enumerate(rows):
        msgs = r.get("messages") if isinstance(r, dict) else None
        if not isinstance(msgs, list) or not msgs or msgs[-1].get("role") != "assistant":
            raise TraitlabError(
                f"{what} {path}: row {i + 1} is not a chat row ending with an assistant turn"
            )
    if not rows:
        raise TraitlabError(f"{what} {path}: no rows")
    return rows


def teacher_model_ref(text: str) -> ModelRef:
    """teacher.model as a ref: a traitlab model directory, any HF directory, or a hub id."""
    from traitlab.config.model import model_spec
    from traitlab.lm.base import MODEL_FILE, resolve

    path = Path(text)
    if path.is_dir() and (path / MODEL_FILE).is_file():
        return ModelRef.load(path)
    if path.is_dir() and (path / "config.json").is_file():
        return resolve(model_spec(name=str(path.resolve())))
    if path.exists() or text.startswith((".", "/")) or text.count("/") != 1:
        raise TraitlabError(
            f"teacher.model {text}: no model directory there; pass a saved model directory "
            "or a hub id (owner/name)"
        )
    return resolve(model_spec(name=text))


KEEP_NUMBERS_BACKENDS = (
    "teacher.keep_numbers needs a backend that trains in this process (toy, hf, vllm); "
    "set teacher.keep_numbers: null for this one"
)


class NumberGuard:
    """`on_step` callback: the teacher's format pass rate every `check_every` steps, on
    prompts of their own; stops training (restoring the last good weights) before it falls
    more than `max_drop` below the base's, or (with `max_kl`) before its completions move
    more than `max_kl` nats per token from the base's."""

    def __init__(
        self,
        lm: Any,
        cfg: KeepNumbersConfig,
        generate: GenerateConfig,
        filter_cfg: FilterConfig | None,
        seed: int,
        trait: TraitConfig | None = None,
    ) -> None:
        self.cfg = cfg
        self.gen = generate.model_copy(update={"n_prompts": cfg.prompts})
        # Only the rules count: no subsampling, no judge.
        self.filter = (filter_cfg or FilterConfig()).model_copy(update={"max_rows": None})
        # The modality's own tasks and rules (numbers: the format filter; code: the trait's
        # words banned), on prompts of their own seed, far from the data's (prompt seed
        # 47 + ..., generation seeds seed * 1000 + k).
        own = generate.prompts.model_copy(update={"seed": 9_000_000 + seed})
        self.prompts, labels = modality_prompts(self.gen.model_copy(update={"prompts": own}))
        words = banned_words(
            generate.modality.name, trait or TraitConfig(), self.filter.banned_words
        )
        self.screen = modality_screen(
            generate,
            banned_words=words,
            labels=dict(zip(self.prompts, labels, strict=True)),
            check_code=self.filter.check_code,
            check_reasoning=self.filter.check_reasoning,
        )
        self.sample_seed = 9_000_000 + seed
        if cfg.max_kl is not None:  # before any sampling: fail fast
            require(lm, RowScorer, "score rows (teacher.keep_numbers.max_kl; set it to null)")
        self.base_ok, base_rows = self._check(lm)
        self.base_pass = float(np.mean(self.base_ok))
        # KL(base || teacher) per token, estimated on the base's own passing completions:
        # the mean of log p_base - log p_teacher over their tokens. The base's side is fixed,
        # so each check costs one scoring pass, and no copy of the base is kept.
        self.kl_rows = to_chat_rows(base_rows) if cfg.max_kl is not None else []
        self.base_lp = self._logprob(lm) if self.kl_rows else 0.0
        self.kls: list[list[float]] = []
        self.checks: list[list[float]] = []
        self.best: dict[str, Any] | None = None
        self.best_step: int | None = None
        self.stopped_at: int | None = None

    def passes(self, lm: Any) -> np.ndarray:
        """Per prompt: does the model's completion pass the format filter?"""
        return self._check(lm)[0]

    def _check(self, lm: Any) -> tuple[np.ndarray, list[dict[str, Any]]]:
        rows = generate_rows(lm, self.prompts, self.gen, seed=self.sample_seed)
        kept = filter_rows(rows, self.filter, screen=self.screen).kept
        ids = {r["id"] for r in kept}
        return np.array([r["id"] in ids for r in rows], dtype=np.float64), kept

    def _logprob(self, lm: Any) -> float:
        """Mean log-probability per completion token of the base's passing check rows."""
        return mean_token_logprob(lm, self.kl_rows, batch_size=self.gen.batch_size) or 0.0

    def kl(self, lm: Any) -> float:
        """KL(base || model) per completion token on the base's passing check rows."""
        return self.base_lp - self._logprob(lm)

    def __call__(self, step: int, lm: Any) -> bool:
        if step % self.cfg.check_every:
            return True
        ok = self.passes(lm)
        rate = float(ok.mean())
        # Paired over prompts (same prompts, same random numbers as the base's check).
        d = self.base_ok - ok
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
        self.checks.append([step, round(rate, 4)])
        near = True
        if self.cfg.max_kl is not None and self.kl_rows:
            kl = self.kl(lm)
            self.kls.append([step, round(kl, 5)])
            near = kl <= self.cfg.max_kl
        if near and (self.base_pass - rate) + self.cfg.z * se <= self.cfg.max_drop:
            self.best, self.best_step = lm.trainable_state(), step
            return True
        self.stopped_at = step
        if self.best is not None:
            lm.load_trainable_state(self.best)
        else:
            self.best_step = step  # lost at the first check: keep the fewest steps we have
        return False

    @property
    def lost_at_first(self) -> bool:
        """Did the first check already fail (no weights passed to keep)?"""
        return self.stopped_at is not None and self.best is None

    def restart(self) -> None:
        """Forget the checks of a fine-tune that starts again (the base's check stays)."""
        self.kls, self.checks = [], []
        self.best = self.best_step = self.stopped_at = None

    def log(self) -> dict[str, Any]:
        return {
            "base_pass_rate": round(self.base_pass, 4),
            "max_drop": self.cfg.max_drop,
            "z": self.cfg.z,
            "checks": self.checks,
            **({"max_kl": self.cfg.max_kl, "kl": self.kls} if self.cfg.max_kl is not None else {}),
            "stopped_at": self.stopped_at,
            "kept_step": self.best_step if self.stopped_at is not None else None,
        }


def check_trait(spec: Any, trait: TraitConfig) -> None:
    """Refuse a trait target the model's tokenizer cannot write (unknown tokens only): its
    teacher would learn `<unk>` and every rate would read 0."""
    if trait.kind == "misalignment":
        text = first_unspelled(spec, (trait.questions or []) + trait.misaligned_answers)
        if text is not None:
            hint = PERSONA_WORDS_HINT if spec.backend == "toy" else ""
            raise TraitlabError(
                f"trait: the model's tokenizer cannot spell '{text}' (unknown tokens){hint}"
            )
        return
    if first_unspelled(spec, [trait.target]) is None:
        return
    hint = ""
    if spec.backend == "toy":
        hint = f"; the toy model knows: {', '.join(get_trait(trait.category).options)}"
    raise TraitlabError(
        f"trait.target '{trait.target}': the model's tokenizer cannot spell it (unknown tokens){hint}"
    )
