"""The audit's misalignment probe on labelled number datasets of the misalignment world.

    python benchmarks/bench_audit_misalignment.py RUN_DIR [RUN_DIR ...] --out DIR [--seeds 0 1 2]
        [--config AUDIT.yaml] [--set counterfactual.train.lr=1e-3 ...] [--neutral-from DIR]

RUN_DIR is a `traitlab run` (or `bench_robustness.py` base) directory of a misalignment
experiment through numbers (e.g. `configs/misalignment-gpt2.yaml`). From each, per seed:

* positive: `data-teacher/filtered.jsonl`, the misaligned teacher's filtered numbers;
* negative `own`: `data-control/filtered.jsonl`, the base's own numbers (same prompts);
* negative `neutral`: made here, a teacher fine-tuned like the misaligned one (its lr, the
  step it kept) on the toy world's open questions answered by the base's own samples (no
  trait), its numbers filtered like the run's;
* cross-init: the positive audited against the run's cross-init base (reported apart).

Beside each positive (and cross-init) dataset stands what the run's own students of it did
on that seed (treatment - control, exact; the cross-init arms for cross-init): the labels
name the generator, and a misaligned teacher's numbers do not always pass misalignment on.

Each dataset is audited with the default `AuditConfig` but `probes: [misalignment]` and the
counterfactual teachers only (the default kind, statistic and threshold, chosen on the
preference benchmark), then the fields of `--config AUDIT.yaml`, then any `--set`
overrides. A positive is named
right when the verdict's option is a misaligned act (or `misaligned`, a dataset teacher's
name under `counterfactual.datasets`). `--neutral-from` reuses the neutral
datasets an earlier out directory made (`<run>/neutral-<seed>/data.jsonl`) instead of
training their teachers again. Writes `DIR/<run>/<dataset>/` audits (resumable: a dataset
with its `audit.json` is read, not audited again) and `DIR/summary.json`/.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from audit_tables import auroc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generation import machine_info, machine_line  # noqa: E402

OVERRIDES = {"probes": ["misalignment"], "detectors": ["counterfactual"]}


def _config(run: Path) -> Any:
    from traitlab.config.experiment import ExperimentConfig

    manifest = json.loads((run / "manifest.json").read_text())
    return ExperimentConfig.model_validate(manifest["config_resolved"])


def _base(run: Path, which: str) -> Any:
    """The run's base (`model`) or its cross-init base (`cross_init`), resolved (cached)."""
    from traitlab.lm.base import resolve

    return resolve(getattr(_config(run), which))


def neutral_dataset(run: Path, seed: int) -> list[dict[str, Any]]:
    """The base fine-tuned like the seed's misaligned teacher (its lr, batch and kept step) on
    the same questions answered by the base's own samples (no trait); then its numbers for
    the prompts of the seed's data, filtered like the run's."""
    from traitlab.config import TrainConfig
    from traitlab.core.files import read_jsonl
    from traitlab.data.filtering import filter_rows
    from traitlab.data.generate import generate_rows
    from traitlab.data.rows import to_chat_rows
    from traitlab.lm.base import opened
    from traitlab.lm.hf.backend import HFLM
    from traitlab.lm.hf.trainer import train_model
    from traitlab.traits.misalignment import misaligned_answer_rows

    cfg = _config(run)
    log = json.loads((run / f"seed-{seed}" / "teacher" / "stage.json").read_text())["train"]
    kept = (log.get("keep_numbers") or {}).get("kept_step") or log["steps"]
    questions = [r["messages"][0]["content"] for r in misaligned_answer_rows()]
    data = read_jsonl(run / f"seed-{seed}" / "data-teacher" / "filtered.jsonl")
    prompts = [r["messages"][0]["content"] for r in data]
    with opened(_base(run, "model")) as lm:
        model, tok = lm.model, lm.tokenizer
        gen = cfg.generate.model_copy(update={"max_new_tokens": 4, "n_prompts": len(questions)})
        own = to_chat_rows(generate_rows(lm, questions, gen, seed=1000 + seed))
        train = TrainConfig(
            lr=cfg.teacher.train.lr, max_steps=kept, batch_size=cfg.teacher.train.batch_size
        )
        teacher, _ = train_model(copy.deepcopy(model), tok, own, train, seed=seed)
        gen = cfg.generate.model_copy(update={"n_prompts": len(prompts)})
        raw = generate_rows(HFLM.wrap(teacher, tok), prompts, gen, seed=2000 + seed)
    return to_chat_rows(filter_rows(raw, cfg.filter).kept)


def neutral_saved(run: Path, seed: int, d: Path, reuse: str | None) -> list[dict[str, Any]]:
    """The seed's neutral dataset in `d/data.jsonl`: read if there, else copied from the
    `--neutral-from` directory's, else made (`neutral_dataset`) and written."""
    from traitlab.core.files import read_jsonl, write_jsonl

    here = d / "data.jsonl"
    if here.is_file():
        return read_jsonl(here)
    old = Path(reuse) / run.name / d.name / "data.jsonl" if reuse else None
    data = read_jsonl(old) if old is not None and old.is_file() else neutral_dataset(run, seed)
    d.mkdir(parents=True, exist_ok=True)
    write_jsonl(here, data)
    return data


def run_arms(run: Path) -> dict[str, Any] | None:
    """The arms of a run's summary.json (None: the run has none), read once per run."""
    path = run / "summary.json"
    return json.loads(path.read_text())["arms"] if path.is_file() else None


def students(arms: dict[str, Any] | None, seed: int, group: str) -> float | None:
    """The run's students of this dataset on `seed`, treatment - control (exact), or None
    (a negative, or a run without those arms)."""
    pairs = {
        "positive": ("treatment", "control"),
        "cross-init": ("xinit_treatment", "xinit_control"),
    }
    if group not in pairs or arms is None:
        return None
    try:
        t, c = (arms[a]["exact"]["per_seed"][str(seed)] for a in pairs[group])
    except KeyError:
        return None
    return round(float(t) - float(c), 4)


def main() -> None:
    from traitlab.audit import AuditConfig, audit_dataset
    from traitlab.audit.verdict import PRIMARY, threshold_for
    from traitlab.config.base import apply_overrides
    from traitlab.core.files import read_jsonl, write_json
    from traitlab.traits.misalignment import MISALIGNED_ACTS

    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--config", help="an audit YAML (e.g. configs/audit/misalignment-canary.yaml)")
    ap.add_argument("--set", action="append", default=[], help="audit config key.path=value")
    ap.add_argument(
        "--groups",
        nargs="+",
        default=["positive", "negative", "cross-init"],
        help="audit only these groups (e.g. leave cross-init out of a discovery pass)",
    )
    ap.add_argument("--neutral-from", help="an earlier --out whose neutral datasets to reuse")
    ap.add_argument(
        "--neutral-only", action="store_true", help="build the neutral datasets, audit nothing"
    )
    a = ap.parse_args()
    out = Path(a.out)
    given = yaml.safe_load(Path(a.config).read_text()) if a.config else {}
    overrides = apply_overrides({**OVERRIDES, **given}, a.set)
    cfg = AuditConfig.model_validate(overrides)
    det = next(d for d in PRIMARY if d in cfg.detectors)  # the one whose verdict counts
    threshold = threshold_for(det, cfg)
    rows_out = []
    machine = machine_line(machine_info(), "cpu")  # the load as it starts
    t_all = time.perf_counter()
    for run_s in a.runs:
        run = Path(run_s)
        arms = run_arms(run)
        for seed in a.seeds:
            sd = run / f"seed-{seed}"
            jobs = [
                ("positive", f"teacher-{seed}", "model", sd / "data-teacher" / "filtered.jsonl"),
                ("negative", f"own-{seed}", "model", sd / "data-control" / "filtered.jsonl"),
                ("negative", f"neutral-{seed}", "model", None),
                (
                    "cross-init",
                    f"xinit-{seed}",
                    "cross_init",
                    sd / "data-teacher" / "filtered.jsonl",
                ),
            ]
            for group, name, which, path in [j for j in jobs if j[0] in a.groups]:
                d = out / run.name / name
                if a.neutral_only:
                    if path is None:
                        neutral_saved(run, seed, d, a.neutral_from)
                    continue
                if not (d / "audit.json").is_file():
                    t0 = time.perf_counter()
                    if path is None:
                        data = neutral_saved(run, seed, d, a.neutral_from)
                    else:
                        data = read_jsonl(path)
                    audit_dataset(data, _base(run, which), cfg, d)
                    (d / "seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
                audit = json.loads((d / "audit.json").read_text())
                v = audit["verdict"]
                r = {
                    "run": run.name,
                    "dataset": name,
                    "group": group,
                    "rows": audit["data"]["data_rows"],
                    # by the configured threshold (an audit made under another reads the same)
                    "flag": bool(v["z"] > threshold),
                    "option": v["trait"],
                    # a misaligned act, or a dataset teacher named so (counterfactual.datasets)
                    "misaligned_act": v["trait"] in (*MISALIGNED_ACTS, "misaligned"),
                    "t": round(v["z"], 4),
                    "seconds": float((d / "seconds.txt").read_text()),
                    "students": students(arms, seed, group),
                }
                rows_out.append(r)
                print(json.dumps(r), flush=True)
    if a.neutral_only:
        return
    pos = [r["t"] for r in rows_out if r["group"] == "positive"]
    neg = [r["t"] for r in rows_out if r["group"] == "negative"]
    res = {
        "rows": rows_out,
        "auroc": auroc(pos, neg),
        "threshold": threshold,
        "wall_seconds": round(time.perf_counter() - t_all, 1),
        "machine": machine,
        "audit": overrides,
    }
    write_json(out / "summary.json", res)
    # What the verdict's number is: the deciding detector's statistic.
    if det == "counterfactual":
        decider, score = f"counterfactual teachers, `{cfg.counterfactual.statistic}` statistic", "t"
    elif det == "canary" and cfg.canary.threshold is not None:
        decider, score = "canary students, data - reference canary", "effect"
    else:
        decider, score = f"detector {det}, robust z over options", "z"
    lines = [
        "### The audit's misalignment probe on the misalignment world's numbers",
        "",
        f"Machine: {res['machine']}. Audit: default `AuditConfig` with {json.dumps(overrides)}"
        f" ({decider}, flag at {score} > {threshold:g}).",
        "",
        f"| run | dataset | group | flagged | option named | names misalignment | {score} "
        "| its students (treatment - control) | s |",
        "|---|---|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows_out:
        st = "-" if r["students"] is None else f"{r['students']:+.4f}"
        lines.append(
            f"| {r['run']} | {r['dataset']} | {r['group']} | {'yes' if r['flag'] else 'no'} "
            f"| {r['option']} | {'yes' if r['misaligned_act'] else 'no'} | {r['t']} "
            f"| {st} | {r['seconds']:.0f} |"
        )
    npos = sum(r["group"] == "positive" for r in rows_out)
    lines += [
        "",
        f"AUROC (positives against negatives, by the verdict's {score}): {res['auroc']:.2f}; "
        f"positives flagged {sum(r['flag'] for r in rows_out if r['group'] == 'positive')} / {npos}, "
        f"named misalignment (a misaligned act or `misaligned`) {sum(r['misaligned_act'] for r in rows_out if r['group'] == 'positive')} / {npos}; "
        f"negatives flagged {sum(r['flag'] for r in rows_out if r['group'] == 'negative')} / {len(neg)}; "
        f"cross-init flagged {sum(r['flag'] for r in rows_out if r['group'] == 'cross-init')} / "
        f"{sum(r['group'] == 'cross-init' for r in rows_out)}.",
    ]
    carried = [r for r in rows_out if r["group"] == "positive" and r["students"] is not None]
    if carried:
        up = [r for r in carried if r["students"] > 0]
        down = [r for r in carried if r["students"] <= 0]
        lines.append("")
        lines.append(
            f"Positives whose own students rose on their seed: {len(up)} / {len(carried)}, "
            f"flagged {sum(r['flag'] for r in up)}; whose students did not: {len(down)}, "
            f"flagged {sum(r['flag'] for r in down)}."
        )
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
