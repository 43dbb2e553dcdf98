"""The experiment: teacher -> generate -> filter -> students -> evaluate -> compare.

`run_experiment` checks everything it can before writing a byte, takes the run directory's
lock, then runs the stages (`experiments.stages`): in this process, or with `workers` > 1 on
a pool of processes (bases side by side, then a task per seed's teacher and data, then a task
per student, so no core idles). Every stage is cached by content, so a killed run resumes
where it stopped, a finished run reruns instantly, and changing, say, the filter only redoes
the filter, the students and their evaluations.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from traitlab.config import ExperimentConfig, config_to_dict, parse_config
from traitlab.core import runs
from traitlab.core.errors import TraitlabError
from traitlab.core.parallel import QueueReporter, ignore_sigint, listen, start_manager, submit
from traitlab.core.progress import Reporter
from traitlab.core.store import StageStore
from traitlab.data.modalities import check_modality
from traitlab.experiments.arms import STUDENTS
from traitlab.experiments.compare import summarize
from traitlab.experiments.control import neutral_teacher
from traitlab.experiments.falsifier import (
    falsifier_data,
    overt_student,
    run_falsifier,
    summarize_falsifier,
)
from traitlab.experiments.generations import run_generations, summarize_generations
from traitlab.experiments.report import write_report
from traitlab.experiments.stages import Stages
from traitlab.lm.base import ModelRef, backend_for
from traitlab.traits.teacher import (
    KEEP_NUMBERS_BACKENDS,
    check_trait,
    load_teacher_data,
    teacher_model_ref,
)

Evals = dict[str, dict[int, dict[str, Any]]]


class Experiment(Stages):
    """Runs one `ExperimentConfig` into one run directory."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: Path,
        reporter: Reporter | Any,
        overwrite: bool = False,
        store: StageStore | None = None,
    ) -> None:
        super().__init__(cfg, run_dir, reporter, store)
        self.dir = Path(run_dir)
        self.overwrite = overwrite
        self.base_seconds = 0.0

    def check(self) -> None:
        """Everything that can be checked before the first byte is written: the models and
        their devices, the trait, the run directory."""
        cfg = self.cfg
        backend_for(cfg.model).check(cfg.model, "model")
        if cfg.cross_init is not None:
            backend_for(cfg.cross_init).check(cfg.cross_init, "cross_init")
        check_trait(cfg.model, cfg.trait)
        check_modality(cfg)
        if cfg.teacher.data:
            load_teacher_data(cfg.teacher.data)
        if cfg.teacher.model:
            teacher_model_ref(cfg.teacher.model)
        keep = cfg.teacher.kind == "finetuned" and cfg.teacher.keep_numbers is not None
        if keep and not backend_for(cfg.model).trains_in_process:
            raise TraitlabError(f"{KEEP_NUMBERS_BACKENDS} (model.backend: {cfg.model.backend})")
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
        import torch

        cfg = self.cfg
        torch.set_num_threads(self.threads())
        t0 = time.time()
        evals: Evals = {}
        filters: dict[int, dict[str, Any]] = {}
        if cfg.workers > 1:
            self._run_parallel(evals, filters)
        else:
            self.prepare_base("base")
            if cfg.cross_init is not None:
                self.prepare_base("xinit")
            self.base_seconds = time.time() - t0
            self.utility_rows()
            if cfg.falsifier is not None:
                falsifier_data(self)
            self._base_evals(evals)
            for seed in cfg.seeds:
                self._merge(evals, filters, seed, *self.run_seed(seed))
        summary = summarize(
            cfg,
            evals,
            filters,
            self.stage_timings(),
            time.time() - t0,
            self.base_seconds,
            teachers=self.teacher_logs(),
        )
        if cfg.falsifier is not None:
            summary["falsifier"] = summarize_falsifier(cfg, evals)
        if cfg.generations > 1:
            summary["generations"] = summarize_generations(cfg, evals)
        runs.write_json(self.layout.summary, summary)
        write_report(self.dir, cfg, summary)
        runs.mark_done(self.dir, runs.stable_hash(summary))
        return summary

    def teacher_logs(self) -> dict[int, dict[str, Any]]:
        """Per seed, how the fine-tuned teacher trained: steps taken, and the number checks
        of an early-stopped one."""
        out: dict[int, dict[str, Any]] = {}
        for seed in self.cfg.seeds:
            f = self.layout.teacher(seed) / "stage.json"
            if f.is_file():
                train = runs.read_json(f).get("train") or {}
                out[seed] = {"steps": train.get("steps"), **train.get("keep_numbers", {})}
        return out

    def threads(self) -> int:
        """torch threads per process: the config's, else 1 with workers, else torch's default."""
        import torch

        if self.cfg.threads:
            return self.cfg.threads
        return 1 if self.cfg.workers > 1 else torch.get_num_threads()

    def _base_evals(self, evals: Evals) -> None:
        first = self.cfg.seeds[0]
        for which, arm, label in (
            ("base", "base", "evaluate base"),
            ("xinit", "xinit_base", "evaluate xinit-base"),
        ):
            if which in self.bases:
                d = self.layout.base_eval(which)
                evals[arm] = {first: self.evaluate(d, label, self.bases[which], first)}

    @staticmethod
    def _merge(
        evals: Evals,
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
        out: dict[str, dict[str, Any]] = {}
        teacher, sys_prompt, t_key = self.teacher(seed)
        out["teacher"] = self.evaluate(
            self.layout.eval(seed, "teacher"),
            f"seed {seed}: evaluate teacher",
            teacher,
            seed,
            sys_prompt=sys_prompt,
        )
        control, c_key = self.bases["base"], self.bases["base"].key
        if self.cfg.control.teacher == "neutral":
            control, c_key = neutral_teacher(self, seed)
        gens = {
            "teacher": self.generate(seed, "teacher", teacher, sys_prompt, t_key),
            "control": self.generate(seed, "control", control, None, c_key),
        }
        data = self.filter(seed, gens, (teacher, sys_prompt))
        cfg_f = self.cfg.falsifier
        filters = {w: runs.read_json(d / "filter.json") for w, (d, _) in data.items()}
        for arm in STUDENTS:
            if arm.base not in self.bases or (arms is not None and arm.name not in arms):
                continue
            assert arm.data is not None
            student = self.student(seed, arm.name, *data[arm.data], teacher)
            out[arm.name] = self.evaluate(
                self.layout.eval(seed, arm.name),
                f"seed {seed}: evaluate {arm.name}",
                student,
                seed,
                utility=True,
            )
            if self.cfg.generations > 1 and arm.name == "treatment":
                out.update(run_generations(self, seed, student, gens["control"]))
            if cfg_f is not None and arm.name in ("treatment", "control"):
                out.update(run_falsifier(self, seed, arm.name, student))
            if cfg_f is not None and cfg_f.overt and arm.name == "treatment":
                overt = overt_student(self, seed, teacher, sys_prompt)
                out["overt"] = self.evaluate(
                    self.layout.eval(seed, "overt"), f"seed {seed}: evaluate overt", overt, seed
                )
                out.update(run_falsifier(self, seed, "overt", overt))
        return out, filters

    def _run_parallel(self, evals: Evals, filters: dict[int, dict[str, Any]]) -> None:
        """Bases prepared side by side, then a task per seed's data and one per student."""
        cfg = self.cfg
        ctx = mp.get_context("spawn")
        manager = start_manager(ctx)
        queue = manager.Queue()
        listener = listen(queue, self.rep) if isinstance(self.rep, Reporter) else None
        cfg_json = config_to_dict(cfg)
        store = str(self.store.root) if self.store is not None else None
        bases = ["base"] + (["xinit"] if cfg.cross_init is not None else [])
        t0 = time.time()
        try:
            with ProcessPoolExecutor(
                cfg.workers, mp_context=ctx, initializer=ignore_sigint
            ) as pool:
                futs = {
                    w: submit(pool, _prepare_worker, cfg_json, str(self.dir), store, w, queue)
                    for w in bases
                }
                for w, f in futs.items():
                    self.bases[w] = ModelRef.model_validate(f.result())
                self.base_seconds = time.time() - t0
                # A task per seed for its teacher and data, then a task per student: the
                # workers stay busy to the end (with seeds as tasks, 3 seeds on 2 workers left
                # one idle for a third of the run).
                self.utility_rows()  # here, once, before the tasks that need it
                if cfg.falsifier is not None:
                    falsifier_data(self)
                refs = {w: r.model_dump(mode="json") for w, r in self.bases.items()}
                args = (cfg_json, str(self.dir), store, refs, self.threads(), queue)
                data_futs = {submit(pool, _seed_worker, *args, s, ()): s for s in cfg.seeds}
                names = [a.name for a in STUDENTS if a.base in self.bases]
                student_futs = []
                for f in as_completed(data_futs):
                    s = data_futs[f]
                    self._merge(evals, filters, s, *f.result())
                    student_futs += [
                        (s, submit(pool, _seed_worker, *args, s, (name,))) for name in names
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


def _open_store(root: str | None) -> StageStore | None:
    return StageStore(Path(root)) if root is not None else None


def _prepare_worker(
    cfg_json: dict[str, Any], run_dir: str, store: str | None, which: str, queue: Any
) -> Any:
    import torch

    torch.set_num_threads(1)
    exp = Experiment(
        parse_config(cfg_json), Path(run_dir), QueueReporter(queue), store=_open_store(store)
    )
    return exp.prepare_base(which).model_dump(mode="json")


def _seed_worker(
    cfg_json: dict[str, Any],
    run_dir: str,
    store: str | None,
    bases: dict[str, Any],
    threads: int,
    queue: Any,
    seed: int,
    arms: tuple[str, ...],
) -> tuple[Any, Any]:
    """One seed's teacher and data (`arms` empty), or one of its students."""
    import torch

    torch.set_num_threads(threads)
    # A student task passes through the seed's finished stages: do not list them again.
    rep = QueueReporter(queue, hide_cached=bool(arms))
    exp = Experiment(parse_config(cfg_json), Path(run_dir), rep, store=_open_store(store))
    exp.bases = {w: ModelRef.model_validate(r) for w, r in bases.items()}
    return exp.run_seed(seed, arms)


def run_experiment(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    *,
    reporter: Reporter | None = None,
    config_passed: Any = None,
    overwrite: bool = False,
    store: StageStore | None = None,
) -> dict[str, Any]:
    """Run (or resume) `cfg` into `run_dir`; returns the summary (also in summary.json).

    `run_dir` must be new, empty or a run directory of ours (`overwrite`: any directory;
    traitlab then adds its files there). One writer at a time: a second process on the same
    directory is refused while the first holds its lock. With a `store`, stages that another
    run already made are linked in from it, and this run's stages are added to it."""
    rep = reporter or Reporter(enabled=False)
    return Experiment(cfg, Path(run_dir), rep, overwrite, store).run(config_passed)
