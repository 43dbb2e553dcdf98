"""Stage caching for the experiment: the cached-stage idiom and the keys' config parts."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from traitlab.config import config_to_dict
from traitlab.core import runs
from traitlab.core.errors import TraitlabError
from traitlab.core.progress import Fraction
from traitlab.core.store import StageStore, shared

# Fields added after runs were cached: in a stage key only when set, so the stages of runs
# without them keep their keys.
_NEW_SAMPLING = {
    "min_p": 0.0,
    "top_k": 0,
    "modality": {"name": "numbers", "source": None, "repeats": 1},
}
_NEW_MODALITY = {"toy_terms": 2, "toy_funcs": 1}
_NEW_PROMPTS = {"style": "paper"}
_NEW_FILTER = {"banned_words": [], "judge": None, "check_code": True, "check_reasoning": False}
_NEW_TRAIT = {
    "kind": "preference",
    "em_suffix": False,
    "questions": None,
    "misaligned_answers": [],
}
_NEW_EVAL = {"judge": None}
_NEW_JUDGE = {"check": None, "check_answers": 64}


def _without(d: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not (k in later and v == later[k])}


def generate_key(gen: Any) -> dict[str, Any]:
    """The generate config as it enters stage keys: a modality's source file by its content
    (the same path may hold new tasks)."""
    d = config_to_dict(gen)
    d["modality"] = _without(d["modality"], _NEW_MODALITY)
    d = _without(d, _NEW_SAMPLING)
    d["prompts"] = _without(d["prompts"], _NEW_PROMPTS)
    source = d.get("modality", {}).get("source")
    if source and not source.startswith("toy:"):  # built-in task sets are keyed by name
        if not Path(source).expanduser().is_file():
            raise TraitlabError(
                f"generate.modality.source {source}: no such file; give the path of a local "
                "dataset file (nothing is downloaded)"
            )
        d["modality"] = {**d["modality"], "source": runs.file_hash(Path(source).expanduser())}
    if source == "toy:code":
        # Its filter checks the code against the task since these rules (2); data filtered
        # by the banned words alone is not reused.
        d["modality"] = {**d["modality"], "rules": 2}
    if d.get("modality", {}).get("name") == "cot":
        # Its filter bans a preference target's words since these rules (2).
        d["modality"] = {**d["modality"], "rules": 2}
    return d


def filter_key(filt: Any) -> dict[str, Any]:
    """The filter config as it enters stage keys."""
    return _without(config_to_dict(filt), _NEW_FILTER)


def trait_key(trait: Any) -> dict[str, Any]:
    """The trait config as it enters stage keys."""
    return _without(config_to_dict(trait), _NEW_TRAIT)


def eval_key(ev: Any) -> dict[str, Any]:
    """The evaluate config as it enters stage keys."""
    d = _without(config_to_dict(ev), _NEW_EVAL)
    if d.get("judge"):
        d["judge"] = _without(d["judge"], _NEW_JUDGE)
    return d


def teacher_key(teacher: Any) -> dict[str, Any]:
    """The teacher config as it enters stage keys: teacher.data by its content (the same
    path may hold new data), and the fields added later only when set."""
    d = config_to_dict(teacher)
    for k in ("data", "model"):
        if d.get(k) is None:
            d.pop(k, None)
    if d.get("keep_numbers"):
        # Added later: keys of teachers without them stay valid.
        d["keep_numbers"] = _without(d["keep_numbers"], {"z": 0.0, "max_kl": None, "retries": 0})
    if d.get("data") and not d["data"].startswith("toy:"):  # built-ins are keyed by name
        d["data"] = runs.file_hash(Path(d["data"]))
    return d


@contextlib.contextmanager
def cached_stage(
    rep: Any, label: str, stage_dir: Path, key: str, store: StageStore | None = None
) -> Iterator[tuple[bool, Fraction, Any]]:
    """The cached-stage idiom: yields (done, progress, open_stage). When not done, the body
    does its work and writes its outputs inside `with open_stage(info) as tmp:`. With a
    `store` (a sweep's), a stage another run already made is linked in instead."""
    with contextlib.ExitStack() as stack:
        done = runs.stage_done(stage_dir, key)
        if not done:
            done = stack.enter_context(shared(store, key, [stage_dir]))
        started = time.time()  # a stage's seconds count its work, not only its writing
        with rep.stage(label, cached=done) as up:

            def open_stage(info: dict[str, Any] | None = None) -> Any:
                return runs.stage(stage_dir, key, info, started=started)

            yield done, up, open_stage
