"""The experiment: teacher -> generate -> filter -> students -> evaluate -> compare.

Every box is a stage with a content key (a hash of the config fields it depends on and of the
keys of its inputs). Stages write into the run directory atomically and are skipped when their
key matches, so a killed run resumes where it stopped, a finished run reruns instantly, and
changing, say, the filter only redoes the filter, the students and their evaluations.
"""

from __future__ import annotations

import functools
import gc
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

from traitlab import runs
from traitlab.compare import summarize
from traitlab.config import ExperimentConfig, ModelConfig, config_to_dict, parse_config
from traitlab.errors import TraitlabError
from traitlab.evaluate import evaluate_model
from traitlab.filtering import filter_paired, filter_rows, require_nonempty, to_chat_rows
from traitlab.generate import generate_rows
from traitlab.models import check_model, load_model, model_identity, model_source, save_model
from traitlab.parallel import QueueReporter, ignore_sigint, listen, start_manager, submit
from traitlab.progress import Reporter
from traitlab.prompts import number_prompts
from traitlab.report import write_report
from traitlab.teacher import check_trait, finetune_teacher, teacher_system_prompt
from traitlab.train import train_model

# Students: (arm name, which base it starts from, which data it is trained on).
STUDENTS = (
    ("treatment", "base", "teacher"),
    ("control", "base", "control"),
    ("xinit_treatment", "xinit", "teacher"),
    ("xinit_control", "xinit", "control"),
)


class Experiment:
    """Runs one `ExperimentConfig` into one run directory."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: Path,
        reporter: Reporter | Any,
        overwrite: bool = False,
    ) -> None:
        self.cfg = cfg
        self.overwrite = overwrite
        self.dir = Path(run_dir)
        self.rep = reporter
        self.sources: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        self.base_seconds = 0.0

    # ------------------------------------------------------------------ helpers

    def _base_cfg(self, which: str) -> ModelConfig:
        if which == "xinit":
            assert self.cfg.cross_init is not None
            return self.cfg.cross_init
        return self.cfg.model

    def _prepare_base(self, which: str) -> None:
        mcfg = self._base_cfg(which)
        label = "pretrain toy base" if which == "base" else "pretrain cross-init base"
        cb = self.rep.named(label) if mcfg.name == "toy" else None
        self.sources[which] = model_source(mcfg, progress=cb)
        source = model_identity(mcfg, self.sources[which])
        self.keys[which] = runs.stable_hash({"model": config_to_dict(mcfg), "source": source})

    def _load(self, which: str, path: Path | None = None) -> tuple[Any, Any]:
        mcfg = self._base_cfg(which)
        if path is not None:
            return load_model(mcfg, source=str(path))
        return (
            load_model(mcfg, source=self.sources[which]) if mcfg.name == "toy" else load_model(mcfg)
        )

    @staticmethod
    def _free(*objs: Any) -> None:
        del objs
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ stages

    @functools.cached_property
    def prompts(self) -> list[str]:
        """The number prompts, the same for every seed: built only when a generate stage
        runs (~0.75 s for 8,000), not by tasks that find their data already cached."""
        return number_prompts(self.cfg.generate.prompts, self.cfg.generate.n_prompts)

    def teacher(self, seed: int) -> tuple[Path | None, str | None, str]:
        """Returns (teacher model dir or None, generation system prompt, teacher key)."""
        cfg = self.cfg
        sys_prompt = teacher_system_prompt(cfg.teacher, cfg.trait)
        key = runs.stable_hash(
            {
                "base": self.keys["base"],
                "teacher": config_to_dict(cfg.teacher),
                "trait": config_to_dict(cfg.trait),
                "seed": seed,
            }
        )
        if cfg.teacher.kind == "system_prompt":
            return None, sys_prompt, key
        d = self.dir / f"seed-{seed}" / "teacher"
        done = runs.stage_done(d, key)
        with self.rep.stage(f"seed {seed}: teacher fine-tune", cached=done) as up:
            if not done:
                started = time.time()
                model, tok = self._load("base")
                model, log = finetune_teacher(
                    model, tok, cfg.teacher, cfg.trait, seed=seed, progress=up
                )
                with runs.stage(d, key, {"train": log}, started=started) as tmp:
                    save_model(model, tok, tmp)
                self._free(model)
        return d, None, key

    def generate(
        self,
        seed: int,
        which: str,
        teacher_dir: Path | None,
        sys_prompt: str | None,
        upstream: str,
    ) -> tuple[Path, str]:
        key = runs.stable_hash(
            {
                "up": upstream,
                "gen": config_to_dict(self.cfg.generate),
                "sys": sys_prompt,
                "seed": seed,
                "which": which,
            }
        )
        d = self.dir / f"seed-{seed}" / f"gen-{which}"
        done = runs.stage_done(d, key)
        with self.rep.stage(f"seed {seed}: generate ({which})", cached=done) as up:
            if not done:
                started = time.time()
                model, tok = self._load("base", teacher_dir)
                # One stream per seed, shared by teacher and control with common_noise (common
                # random numbers); else distinct streams.
                other = which != "teacher" and not self.cfg.generate.common_noise
                gen_seed = seed * 1000 + (2 if other else 1)
                rows = generate_rows(
                    model,
                    tok,
                    self.prompts,
                    self.cfg.generate,
                    seed=gen_seed,
                    system_prompt=sys_prompt,
                    source=which,
                    progress=up,
                )
                with runs.stage(d, key, {"rows": len(rows)}, started=started) as tmp:
                    runs.write_jsonl(tmp / "raw.jsonl", rows)
                self._free(model)
        return d, key

    def filter(self, seed: int, gens: dict[str, tuple[Path, str]]) -> dict[str, tuple[Path, str]]:
        """The format filter on each generated dataset (`gens`: which -> (dir, key)); with
        filter.paired, the teacher's and control's datasets keep the same prompts."""
        fcfg = self.cfg.filter
        paired = fcfg.paired
        up: Any = {w: k for w, (_, k) in gens.items()}
        keys = {
            w: runs.stable_hash({"up": up if paired else k, "filter": config_to_dict(fcfg)})
            for w, (_, k) in gens.items()
        }
        dirs = {w: self.dir / f"seed-{seed}" / f"data-{w}" for w in gens}
        done = all(runs.stage_done(dirs[w], keys[w]) for w in gens)
        with self.rep.stage(f"seed {seed}: filter", cached=done):
            if not done:
                started = time.time()
                raw = {w: runs.read_jsonl(d / "raw.jsonl") for w, (d, _) in gens.items()}
                if paired:
                    pair = filter_paired(raw["teacher"], raw["control"], fcfg)
                    results = dict(zip(("teacher", "control"), pair, strict=True))
                else:
                    results = {w: filter_rows(rows, fcfg) for w, rows in raw.items()}
                for w, result in results.items():
                    require_nonempty(result, f"seed {seed}, {w} data")
                for w, result in results.items():
                    with runs.stage(dirs[w], keys[w], started=started) as tmp:
                        runs.write_jsonl(tmp / "filtered.jsonl", to_chat_rows(result.kept))
                        runs.write_jsonl(tmp / "rejected.jsonl", result.rejected)
                        runs.write_json(tmp / "filter.json", result.to_summary())
        return {w: (dirs[w], keys[w]) for w in gens}

    def student(
        self,
        seed: int,
        arm: str,
        which_base: str,
        data_dir: Path,
        data_key: str,
        teacher_dir: Path | None,
    ) -> tuple[Path, str]:
        soft = self.cfg.student.loss == "soft"
        key = runs.stable_hash(
            {
                "base": self.keys[which_base],
                "data": data_key,
                "seed": seed,
                "train": config_to_dict(self.cfg.student),
                # Whose logits a soft student distils: the teacher's (its key is in data_key,
                # the data being its generations) or the shared base's. No paths: a moved
                # run directory must not redo the students.
                "soft_labels": ("teacher" if arm.endswith("treatment") else "base")
                if soft
                else None,
            }
        )
        d = self.dir / f"seed-{seed}" / f"student-{arm}"
        done = runs.stage_done(d, key)
        with self.rep.stage(f"seed {seed}: student {arm}", cached=done) as up:
            if not done:
                started = time.time()
                model, tok = self._load(which_base)
                teacher = None
                if soft:
                    if self.cfg.teacher.kind != "finetuned":
                        raise TraitlabError("student.loss 'soft' needs teacher.kind 'finetuned'")
                    # The control's soft labels come from the base itself (self-distillation).
                    src = teacher_dir if arm.endswith("treatment") else None
                    teacher, _ = self._load("base", src)
                rows = runs.read_jsonl(data_dir / "filtered.jsonl")
                model, log = train_model(
                    model, tok, rows, self.cfg.student, seed=seed, teacher=teacher, progress=up
                )
                with runs.stage(d, key, {"train": log}, started=started) as tmp:
                    save_model(model, tok, tmp)
                self._free(model, teacher)
        return d, key

    def evaluate(
        self,
        name: str,
        which_base: str,
        model_dir: Path | None,
        model_key: str,
        seed: int,
        sys_prompt: str | None = None,
    ) -> dict[str, Any]:
        cfg = self.cfg
        key = runs.stable_hash(
            {
                "model": model_key,
                "eval": config_to_dict(cfg.evaluate),
                "trait": config_to_dict(cfg.trait),
                "seed": seed,
                "sys": sys_prompt,
            }
        )
        d = self.dir / name
        done = runs.stage_done(d, key)
        label = (
            name.replace("/eval-", ": evaluate ")
            .replace("eval-", "evaluate ")
            .replace("seed-", "seed ")
        )
        with self.rep.stage(label, cached=done) as up:
            if not done:
                started = time.time()
                model, tok = self._load(which_base, model_dir)
                res = evaluate_model(
                    model,
                    tok,
                    cfg.evaluate,
                    cfg.trait,
                    seed=seed,
                    system_prompt=sys_prompt,
                    progress=up,
                )
                answers = res.get("sampled", {}).pop("answers", None)
                with runs.stage(d, key, started=started) as tmp:
                    runs.write_json(tmp / "eval.json", res)
                    if answers is not None:
                        runs.write_jsonl(
                            tmp / "answers.jsonl",
                            [{"question": i, "answers": a} for i, a in enumerate(answers)],
                        )
                self._free(model)
        return runs.read_json(d / "eval.json")

    # ------------------------------------------------------------------ the run

    def check(self) -> None:
        """Everything that can be checked before the first byte is written: the models and
        their devices, the trait, the run directory."""
        cfg = self.cfg
        check_model(cfg.model, "model")
        if cfg.cross_init is not None:
            check_model(cfg.cross_init, "cross_init")
        check_trait(cfg.model, cfg.trait)
        runs.check_output_dir(self.dir, run=True, overwrite=self.overwrite)

    def run(self, config_passed: Any = None) -> dict[str, Any]:
        cfg = self.cfg
        resolved = config_to_dict(cfg)
        chash = runs.stable_hash(resolved)
        self.check()
        with runs.locked(self.dir):
            if runs.finished(self.dir, chash, "summary.json"):
                self.rep.log(f"[green]already finished:[/] {self.dir} (config {chash})")
                return runs.read_json(self.dir / "summary.json")
            runs.begin(
                self.dir,
                kind="experiment",
                config_passed=config_passed,
                config_resolved=resolved,
                seeds=list(cfg.seeds),
            )
            return self._run()

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        torch.set_num_threads(self.threads())
        t0 = time.time()
        evals: dict[str, dict[int, dict[str, Any]]] = {}
        filters: dict[int, dict[str, Any]] = {}
        if cfg.workers > 1:
            self._run_parallel(evals, filters)
        else:
            self._prepare_base("base")
            if cfg.cross_init is not None:
                self._prepare_base("xinit")
            self.base_seconds = time.time() - t0
            self._base_evals(evals)
            for seed in cfg.seeds:
                self._merge(evals, filters, seed, *self.run_seed(seed))
        summary = summarize(
            cfg, evals, filters, self.stage_timings(), time.time() - t0, self.base_seconds
        )
        runs.write_json(self.dir / "summary.json", summary)
        write_report(self.dir, cfg, summary)
        runs.mark_done(self.dir, runs.stable_hash(summary))
        return summary

    def threads(self) -> int:
        """torch threads per process: the config's, else 1 with workers, else torch's default."""
        if self.cfg.threads:
            return self.cfg.threads
        return 1 if self.cfg.workers > 1 else torch.get_num_threads()

    def _base_evals(self, evals: dict[str, dict[int, dict[str, Any]]]) -> None:
        first = self.cfg.seeds[0]
        evals["base"] = {first: self.evaluate("eval-base", "base", None, self.keys["base"], first)}
        if self.cfg.cross_init is not None:
            evals["xinit_base"] = {
                first: self.evaluate("eval-xinit-base", "xinit", None, self.keys["xinit"], first)
            }

    @staticmethod
    def _merge(
        evals: dict[str, dict[int, dict[str, Any]]],
        filters: dict[int, dict[str, Any]],
        seed: int,
        seed_evals: dict[str, dict[str, Any]],
        seed_filters: dict[str, Any],
    ) -> None:
        for arm, res in seed_evals.items():
            evals.setdefault(arm, {})[seed] = res
        filters[seed] = seed_filters

    def run_seed(
        self, seed: int, arms: tuple[str, ...] | None = None
    ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """Teacher, data, students and their evaluations for one seed (only the students in
        `arms` if given; the stages before them are cache hits once they have run)."""
        cfg = self.cfg
        out: dict[str, dict[str, Any]] = {}
        t_dir, sys_prompt, t_key = self.teacher(seed)
        out["teacher"] = self.evaluate(
            f"seed-{seed}/eval-teacher", "base", t_dir, t_key, seed, sys_prompt=sys_prompt
        )
        gens = {
            which: self.generate(seed, which, src_dir, sp, up_key)
            for which, (src_dir, sp, up_key) in {
                "teacher": (t_dir, sys_prompt, t_key),
                "control": (None, None, self.keys["base"]),
            }.items()
        }
        data = self.filter(seed, gens)
        filters = {w: runs.read_json(d / "filter.json") for w, (d, _) in data.items()}
        for arm, which_base, which_data in STUDENTS:
            if which_base == "xinit" and cfg.cross_init is None:
                continue
            if arms is not None and arm not in arms:
                continue
            s_dir, s_key = self.student(seed, arm, which_base, *data[which_data], t_dir)
            out[arm] = self.evaluate(f"seed-{seed}/eval-{arm}", which_base, s_dir, s_key, seed)
        return out, filters

    def _run_parallel(
        self, evals: dict[str, dict[int, dict[str, Any]]], filters: dict[int, dict[str, Any]]
    ) -> None:
        """Bases pretrained side by side, then one seed per worker process."""
        cfg = self.cfg
        ctx = mp.get_context("spawn")
        manager = start_manager(ctx)
        queue = manager.Queue()
        listener = listen(queue, self.rep) if isinstance(self.rep, Reporter) else None
        cfg_json = config_to_dict(cfg)
        bases = ["base"] + (["xinit"] if cfg.cross_init is not None else [])
        t0 = time.time()
        try:
            with ProcessPoolExecutor(
                cfg.workers, mp_context=ctx, initializer=ignore_sigint
            ) as pool:
                futs = {
                    w: submit(pool, _prepare_worker, cfg_json, str(self.dir), w, queue)
                    for w in bases
                }
                for w, f in futs.items():
                    self.sources[w], self.keys[w] = f.result()
                self.base_seconds = time.time() - t0
                # A task per seed for its teacher and data, then a task per student: the
                # workers stay busy to the end (with seeds as tasks, 3 seeds on 2 workers left
                # one idle for a third of the run).
                args = (cfg_json, str(self.dir), self.sources, self.keys, self.threads(), queue)
                data_futs = {submit(pool, _seed_worker, *args, s, ()): s for s in cfg.seeds}
                arms = [a for a, b, _ in STUDENTS if b == "base" or cfg.cross_init is not None]
                student_futs = []
                for f in as_completed(data_futs):
                    s = data_futs[f]
                    self._merge(evals, filters, s, *f.result())
                    student_futs += [
                        (s, submit(pool, _seed_worker, *args, s, (arm,))) for arm in arms
                    ]
                self._base_evals(evals)
                for s, f in student_futs:
                    self._merge(evals, filters, s, *f.result())
        finally:
            queue.put(None)
            if listener is not None:
                listener.join(timeout=5)
            manager.shutdown()

    def stage_timings(self) -> dict[str, float]:
        out = {}
        for marker in sorted(self.dir.rglob(runs.STAGE_MARKER)):
            secs = runs.stage_seconds(marker.parent)
            if secs is not None:
                out[str(marker.parent.relative_to(self.dir))] = secs
        return out


def _prepare_worker(
    cfg_json: dict[str, Any], run_dir: str, which: str, queue: Any
) -> tuple[str, str]:
    torch.set_num_threads(1)
    exp = Experiment(parse_config(cfg_json), Path(run_dir), QueueReporter(queue))
    exp._prepare_base(which)
    return exp.sources[which], exp.keys[which]


def _seed_worker(
    cfg_json: dict[str, Any],
    run_dir: str,
    sources: dict[str, str],
    keys: dict[str, str],
    threads: int,
    queue: Any,
    seed: int,
    arms: tuple[str, ...],
) -> tuple[Any, Any]:
    """One seed's teacher and data (`arms` empty), or one of its students."""
    torch.set_num_threads(threads)
    # A student task passes through the seed's finished stages: do not list them again.
    rep = QueueReporter(queue, hide_cached=bool(arms))
    exp = Experiment(parse_config(cfg_json), Path(run_dir), rep)
    exp.sources, exp.keys = dict(sources), dict(keys)
    return exp.run_seed(seed, arms)


def run_experiment(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    *,
    reporter: Reporter | None = None,
    config_passed: Any = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run (or resume) `cfg` into `run_dir`; returns the summary (also in summary.json).

    `run_dir` must be new, empty or a run directory of ours (`overwrite`: any directory;
    traitlab then adds its files there). One writer at a time: a second process on the same
    directory is refused while the first holds its lock."""
    rep = reporter or Reporter(enabled=False)
    return Experiment(cfg, Path(run_dir), rep, overwrite).run(config_passed)
