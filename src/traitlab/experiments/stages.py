"""The experiment's stages: teacher, generate, filter, student, evaluate.

Every stage has a content key (a hash of the config fields it depends on and of the keys of
its inputs) and writes into its own directory of the run atomically; a stage whose directory
holds the same key is skipped. Stages pass `ModelRef`s, and open a model through its backend
only for the stage's own work.
"""

from __future__ import annotations

import contextlib
import functools
import time
from pathlib import Path
from typing import Any

from traitlab.config import ExperimentConfig, config_to_dict
from traitlab.core import runs
from traitlab.core.device import cache_dir
from traitlab.core.errors import TraitlabError
from traitlab.core.store import StageStore, shared
from traitlab.data.defences import DefenceContext, apply_defences
from traitlab.data.filtering import filter_paired, filter_rows, require_nonempty
from traitlab.data.generate import generate_rows
from traitlab.data.importance import reweighted_rows, shuffled_weights
from traitlab.data.modalities import modality_prompts, open_screen
from traitlab.data.rows import to_chat_rows
from traitlab.evaluate.judged import eval_judges
from traitlab.evaluate.suite import evaluate_model
from traitlab.evaluate.utility import heldout_prompts, measure_utility, reference_rows
from traitlab.experiments.arms import BY_NAME
from traitlab.experiments.caching import (
    cached_stage,
    eval_key,
    filter_key,
    generate_key,
    teacher_key,
    trait_key,
)
from traitlab.experiments.layout import RunLayout
from traitlab.lm.base import ModelRef, backend_for
from traitlab.lm.base import opened as _opened
from traitlab.traits.preference import banned_words
from traitlab.traits.teacher import finetune_teacher, teacher_model_ref, teacher_system_prompt


class Stages:
    """The stage bodies of one experiment over one run directory."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: Path,
        reporter: Any,
        store: StageStore | None = None,
    ) -> None:
        self.cfg = cfg
        self.layout = RunLayout(Path(run_dir))
        self.rep = reporter
        self.store = store
        self.bases: dict[str, ModelRef] = {}

    def opened(self, ref: ModelRef) -> Any:
        """Open a model for a stage; API backends keep their request cache in the run."""
        return _opened(ref, cache=self.layout.requests)

    def cached(self, label: str, stage_dir: Path, key: str) -> Any:
        """`cached_stage` with this run's reporter and stage store."""
        return cached_stage(self.rep, label, stage_dir, key, self.store)

    def spec(self, which: str) -> Any:
        if which == "xinit":
            assert self.cfg.cross_init is not None
            return self.cfg.cross_init
        return self.cfg.model

    def prepare_base(self, which: str) -> ModelRef:
        """Resolve a base (the toy backend pretrains it, or finds it shipped or cached)."""
        spec = self.spec(which)
        label = "prepare base" if which == "base" else "prepare cross-init base"
        self.bases[which] = backend_for(spec).resolve(spec, progress=self.rep.named(label))
        return self.bases[which]

    @functools.cached_property
    def prompts(self) -> list[str]:
        """The modality's prompts, the same for every seed: built only when a generate stage
        runs (~0.75 s for 8,000 number prompts), not by tasks that find their data cached."""
        return modality_prompts(self.cfg.generate)[0]

    # ------------------------------------------------------------------ stages

    def teacher(self, seed: int) -> tuple[ModelRef, str | None, str]:
        """(the teacher's ref, its generation system prompt, its key). A system-prompted
        teacher is the base itself behind the prompt."""
        cfg = self.cfg
        sys_prompt = teacher_system_prompt(cfg.teacher, cfg.trait)
        key = runs.stable_hash(
            {
                "base": self.bases["base"].key,
                "teacher": teacher_key(cfg.teacher),
                "trait": trait_key(cfg.trait),
                "seed": seed,
                # The number checks of an early-stopped teacher sample and filter like this.
                **(
                    {"gen": generate_key(cfg.generate), "filter": filter_key(cfg.filter)}
                    if cfg.teacher.keep_numbers is not None
                    else {}
                ),
            }
        )
        if cfg.teacher.kind == "system_prompt":
            return self.bases["base"], sys_prompt, key
        if cfg.teacher.kind == "model":
            assert cfg.teacher.model is not None
            ref = teacher_model_ref(cfg.teacher.model)
            return ref, None, ref.key
        d = self.layout.teacher(seed)
        with self.cached(f"seed {seed}: teacher fine-tune", d, key) as (done, up, st):
            if not done:
                info: dict[str, Any] = {}
                with self.opened(self.bases["base"]) as lm, st(info) as tmp:
                    _, info["train"] = finetune_teacher(
                        lm,
                        cfg.teacher,
                        cfg.trait,
                        seed=seed,
                        out_dir=tmp,
                        key=key,
                        progress=up,
                        generate=cfg.generate,
                        filter_cfg=cfg.filter,
                    )
        return ModelRef.load(d), None, key

    def generate(
        self, seed: int, which: str, ref: ModelRef, sys_prompt: str | None, upstream: str
    ) -> tuple[Path, str]:
        key = runs.stable_hash(
            {
                "up": upstream,
                "gen": generate_key(self.cfg.generate),
                "sys": sys_prompt,
                "seed": seed,
                "which": which,
            }
        )
        d = self.layout.gen(seed, which)
        with self.cached(f"seed {seed}: generate ({which})", d, key) as (done, up, st):
            if not done:
                # One stream per seed, shared by teacher and control with common_noise (common
                # random numbers); else distinct streams.
                other = which != "teacher" and not self.cfg.generate.common_noise
                gen_seed = seed * 1000 + (2 if other else 1)
                with self.opened(ref) as lm:
                    rows = generate_rows(
                        lm,
                        self.prompts,
                        self.cfg.generate,
                        seed=gen_seed,
                        system_prompt=sys_prompt,
                        source=which,
                        progress=up,
                    )
                with st({"rows": len(rows)}) as tmp:
                    runs.write_jsonl(tmp / "raw.jsonl", rows)
        return d, key

    def _defence_models(
        self, stack: contextlib.ExitStack, teacher: tuple[ModelRef, str | None] | None
    ) -> Any:
        """For defences that score tokens: a function opening (teacher, base, the teacher's
        system prompt) once, on first use."""
        if teacher is None:
            return None
        ref, system = teacher

        @functools.cache
        def open_() -> tuple[Any, Any, str | None]:
            base = stack.enter_context(self.opened(self.bases["base"]))
            same = ref.key == self.bases["base"].key
            return (base if same else stack.enter_context(self.opened(ref)), base, system)

        return open_

    def _rewriter(self, stack: contextlib.ExitStack) -> Any:
        """For `rewrite_other`: a function opening the cross-init base once, on first use."""
        if "xinit" not in self.bases:
            return None
        xinit = self.bases["xinit"]
        return functools.cache(lambda: stack.enter_context(self.opened(xinit)))

    def filter(
        self,
        seed: int,
        gens: dict[str, tuple[Path, str]],
        teacher: tuple[ModelRef, str | None] | None = None,
    ) -> dict[str, tuple[Path, str]]:
        """The format filter on each generated dataset (`gens`: which -> (dir, key)); with
        filter.paired, the teacher's and control's datasets keep the same prompts."""
        fcfg = self.cfg.filter
        paired = fcfg.paired
        reweighted = self.cfg.control.teacher == "reweighted"
        up: Any = {w: k for w, (_, k) in gens.items()}
        extra: dict[str, Any] = {"defences": [config_to_dict(d) for d in self.cfg.defences]}
        if any(d.name == "rewrite_other" for d in self.cfg.defences):
            extra["rewriter"] = self.bases["xinit"].key
        keys = {
            w: runs.stable_hash(
                {
                    "up": up if paired else k,
                    # Paired arms share their inputs: the arm makes each key name one
                    # dataset (a shared stage store keys by it).
                    "which": w,
                    "filter": filter_key(fcfg),
                    # Only when set: runs without defences keep their cached data.
                    **(extra if self.cfg.defences else {}),
                    # The treatment's data is the same with either control.
                    **(
                        {"control": config_to_dict(self.cfg.control)}
                        if reweighted and w == "control"
                        else {}
                    ),
                }
            )
            for w, (_, k) in gens.items()
        }
        dirs = {w: self.layout.data(seed, w) for w in gens}
        with contextlib.ExitStack() as stack:
            done = all(runs.stage_done(dirs[w], keys[w]) for w in gens)
            if not done:
                both = runs.stable_hash(keys)
                done = stack.enter_context(shared(self.store, both, list(dirs.values())))
            self._filter(seed, gens, keys, dirs, done, teacher)
        return {w: (dirs[w], keys[w]) for w in gens}

    def _filter(
        self,
        seed: int,
        gens: dict[str, tuple[Path, str]],
        keys: dict[str, str],
        dirs: dict[str, Path],
        done: bool,
        teacher: tuple[ModelRef, str | None] | None,
    ) -> None:
        fcfg = self.cfg.filter
        paired = fcfg.paired
        started = time.time()
        with self.rep.stage(f"seed {seed}: filter", cached=done):
            if not done:
                raw = {w: runs.read_jsonl(d / "raw.jsonl") for w, (d, _) in gens.items()}
                words = banned_words(
                    self.cfg.generate.modality.name, self.cfg.trait, fcfg.banned_words
                )
                n = len(next(iter(raw.values())))
                with open_screen(self.cfg, n, cache_dir() / "judges", words) as screen:
                    if paired:
                        pair = filter_paired(raw["teacher"], raw["control"], fcfg, screen)
                        results = dict(zip(("teacher", "control"), pair, strict=True))
                    else:
                        results = {w: filter_rows(r, fcfg, screen=screen) for w, r in raw.items()}
                for w, result in results.items():
                    require_nonempty(result, f"seed {seed}, {w} data")
                kept = {w: to_chat_rows(r.kept) for w, r in results.items()}
                if self.cfg.defences:
                    with contextlib.ExitStack() as models:
                        ctx = DefenceContext(
                            self._defence_models(models, teacher), self._rewriter(models)
                        )
                        kept = apply_defences(kept, self.cfg.defences, seed, ctx)
                summaries = {w: r.to_summary() for w, r in results.items()}
                if self.cfg.control.teacher == "reweighted":
                    with contextlib.ExitStack() as models:
                        opened = self._defence_models(models, teacher)
                        if opened is None:
                            raise TraitlabError("control.teacher reweighted needs the teacher")
                        kept["control"], info = reweighted_rows(
                            kept["teacher"], opened(), self.cfg.evaluate.batch_size
                        )
                    if self.cfg.control.placebo:
                        kept["control"] = shuffled_weights(kept["control"], seed)
                        info["placebo"] = 1.0
                    summaries["control"]["weights"] = info
                for w, result in results.items():
                    with runs.stage(dirs[w], keys[w], started=started) as tmp:
                        runs.write_jsonl(tmp / "filtered.jsonl", kept[w])
                        runs.write_jsonl(tmp / "rejected.jsonl", result.rejected)
                        runs.write_json(tmp / "filter.json", summaries[w])

    def student(
        self, seed: int, arm: str, data_dir: Path, data_key: str, teacher: ModelRef
    ) -> ModelRef:
        spec = BY_NAME[arm]
        soft = self.cfg.student.loss == "soft"
        base = self.bases[spec.base]
        key = runs.stable_hash(
            {
                "base": base.key,
                "data": data_key,
                "seed": seed,
                "train": config_to_dict(self.cfg.student),
                # Whose logits a soft student distils: the teacher's (its key is in data_key,
                # the data being its generations) or the shared base's.
                "soft_labels": ("teacher" if spec.role == "treatment" else "base")
                if soft
                else None,
            }
        )
        d = self.layout.student(seed, arm)
        with self.cached(f"seed {seed}: student {arm}", d, key) as (done, up, st):
            if not done:
                labels = None
                if soft:
                    if self.cfg.teacher.kind != "finetuned":
                        raise TraitlabError("student.loss 'soft' needs teacher.kind 'finetuned'")
                    # The control's soft labels come from the base itself (self-distillation).
                    labels = teacher if spec.role == "treatment" else self.bases["base"]
                rows = runs.read_jsonl(data_dir / "filtered.jsonl")
                info: dict[str, Any] = {}
                with self.opened(base) as lm, st(info) as tmp:
                    _, info["train"] = lm.finetune(
                        rows,
                        self.cfg.student,
                        seed=seed,
                        out_dir=tmp,
                        key=key,
                        teacher=labels,
                        progress=up,
                    )
        return ModelRef.load(d)

    def utility_rows(self) -> tuple[Path, str] | None:
        """The utility check's data (evaluate.utility_prompts > 0): the shared base's filtered
        completions of held-out prompts, made once per run."""
        cfg = self.cfg
        n = cfg.evaluate.utility_prompts
        if n == 0:
            return None
        key = runs.stable_hash(
            {
                "base": self.bases["base"].key,
                "n": n,
                "gen": generate_key(cfg.generate),
                "filter": filter_key(cfg.filter),
            }
        )
        d = self.layout.utility
        with self.cached("utility data", d, key) as (done, _up, st):
            if not done:
                prompts = heldout_prompts(cfg.generate.prompts, n)
                with self.opened(self.bases["base"]) as lm:
                    rows = reference_rows(lm, prompts, cfg.generate, cfg.filter, seed=-1)
                with st({"rows": len(rows)}) as tmp:
                    runs.write_jsonl(tmp / "heldout.jsonl", rows)
        return d, key

    def evaluate(
        self,
        d: Path,
        label: str,
        ref: ModelRef,
        seed: int,
        sys_prompt: str | None = None,
        utility: bool = False,
    ) -> dict[str, Any]:
        cfg = self.cfg
        util = self.utility_rows() if utility else None
        key = runs.stable_hash(
            {
                "model": ref.key,
                "eval": eval_key(cfg.evaluate),
                "trait": trait_key(cfg.trait),
                "seed": seed,
                "sys": sys_prompt,
                **({"utility": util[1]} if util is not None else {}),
            }
        )
        with self.cached(label, d, key) as (done, up, st):
            if not done:
                with contextlib.ExitStack() as stack:
                    lm = stack.enter_context(self.opened(ref))
                    judges = stack.enter_context(eval_judges(cfg.evaluate))
                    res = evaluate_model(
                        lm,
                        cfg.evaluate,
                        cfg.trait,
                        seed=seed,
                        system_prompt=sys_prompt,
                        progress=up,
                        judges=judges,
                        judge_cache=cache_dir() / "judges",
                    )
                    out = res.to_json()
                    if util is not None:
                        out["utility"] = measure_utility(
                            lm,
                            runs.read_jsonl(util[0] / "heldout.jsonl"),
                            heldout_prompts(cfg.generate.prompts, cfg.evaluate.utility_prompts),
                            cfg.generate,
                            cfg.filter,
                            seed=seed * 1000 + 7,
                        )
                with st() as tmp:
                    runs.write_json(tmp / "eval.json", out)
                    if res.answers is not None:
                        runs.write_jsonl(
                            tmp / "answers.jsonl",
                            [{"question": i, "answers": a} for i, a in enumerate(res.answers)],
                        )
                    if res.judgements is not None:
                        runs.write_jsonl(tmp / "judged.jsonl", res.judgements)
        return runs.read_json(d / "eval.json")
