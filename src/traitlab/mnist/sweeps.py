"""Sweeps over m (auxiliary logits), hidden width, noise kind and student epochs.

Each sweep point is the main experiment with one field changed, run with
`sweep.n_models` models and `sweep.controls`, as its own cached stage
(run_dir/sweeps/<name>/<value>). With a constant learning rate, the epochs sweep trains once
to the largest value and evaluates the students after every epoch: training for e epochs is
a prefix of training for more, so this equals separate runs and costs one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from traitlab.core import runs
from traitlab.core.errors import TraitlabError
from traitlab.core.progress import stage_bar
from traitlab.mnist.config import MnistConfig
from traitlab.mnist.data import Digits
from traitlab.mnist.experiment import run_experiment, stage_key, summarize

SWEEPS: dict[str, str] = {
    "m": "model.n_aux",
    "width": "model.hidden (every layer)",
    "noise": "student.noise",
    "epochs": "student.epochs",
}
SWEEP_TITLES = {
    "m": "auxiliary logits m",
    "width": "hidden width",
    "noise": "noise kind",
    "epochs": "student epochs",
}


def point_config(cfg: MnistConfig, name: str, value: Any) -> MnistConfig:
    """The config of one sweep point."""
    if name not in SWEEPS:
        raise TraitlabError(f"unknown sweep '{name}'; choose one of {', '.join(SWEEPS)}")
    d = cfg.model_dump(mode="json")
    d["n_models"] = cfg.sweep.n_models
    d["controls"] = list(cfg.sweep.controls)
    if name == "m":
        d["model"]["n_aux"] = int(value)
    elif name == "width":
        d["model"]["hidden"] = [int(value)] * len(cfg.model.hidden)
    elif name == "noise":
        d["student"]["noise"] = value
    elif name == "epochs":
        d["student"]["epochs"] = int(value)
    return MnistConfig.model_validate(d)


def _run_point(
    pcfg: MnistConfig,
    data: Digits,
    sdir: Path,
    what: str,
    reporter: Any,
    label: str,
    each_epoch: bool = False,
) -> dict[str, Any]:
    key = stage_key(pcfg, data.fingerprint(), what, {"each_epoch": each_epoch})
    cached = runs.stage_done(sdir, key)
    with stage_bar(reporter, label, cached) as upd:
        if not cached:
            with runs.stage(sdir, key) as tmp:
                res = run_experiment(pcfg, data, progress=upd, eval_each_epoch=each_epoch)
                runs.write_json(tmp / "results.json", res)
    return runs.read_json(sdir / "results.json")


def sweep_stage(
    cfg: MnistConfig, data: Digits, name: str, run_dir: str | Path, reporter: Any = None
) -> dict[str, Any]:
    """Run one sweep (cached per point); return its per-point summaries."""
    if name not in SWEEPS:
        raise TraitlabError(f"unknown sweep '{name}'; choose one of {', '.join(SWEEPS)}")
    values = list(getattr(cfg.sweep, name))
    base = Path(run_dir) / "sweeps" / name
    points: list[dict[str, Any]] = []
    seconds = 0.0
    if name == "epochs" and cfg.student.schedule == "constant":
        pcfg = point_config(cfg, "epochs", max(values))
        res = _run_point(
            pcfg,
            data,
            base / "trajectory",
            "sweep-epochs",
            reporter,
            f"sweep epochs 1..{max(values)}",
            each_epoch=True,
        )
        seconds = res["seconds"]["total"]
        for v in values:
            accs = {k: res["accuracies"][k] for k in ("init", "teacher")}
            accs.update(res["epoch_accuracies"][str(int(v))])
            points.append({"value": v, **summarize({"accuracies": accs}, cfg.confidence)})
    else:
        for v in values:
            pcfg = point_config(cfg, name, v)
            res = _run_point(
                pcfg, data, base / str(v), f"sweep-{name}", reporter, f"sweep {name}={v}"
            )
            seconds += res["seconds"]["total"]
            points.append(
                {"value": v, **summarize(res, cfg.confidence), "seconds": res["seconds"]["total"]}
            )
    return {
        "name": name,
        "field": SWEEPS[name],
        "values": values,
        "n_models": cfg.sweep.n_models,
        "controls": list(cfg.sweep.controls),
        "points": points,
        "seconds": round(seconds, 3),
    }
