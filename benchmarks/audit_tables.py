"""The audit benchmark's tables, rebuilt from the saved audits (`bench_audit.py` writes them):
per dataset each detector's score and named option, per detector and split AUROC (bootstrap
CI), top-1, the rates at the threshold and the seconds per audit. The counterfactual teachers
are scored from each audit's saved per-row scores (`counterfactual.npz`), under the statistic
the audit used and under the first one ('counterfactual-shared'); a `kind: both` audit also as
`kind: finetuned` would have scored it ('counterfactual-finetuned': its fine-tuned teachers and
nulls alone). `python benchmarks/audit_tables.py A.json B.json --out DIR` merges benchmark
summaries (a later file's rerun replaces a dataset of the same name) into one table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

# "holdouts": every holdout, every dataset made after the 'null' statistic was chosen.
# "probe": datasets that test one question apart (a paraphrased teacher prompt); not in "all".
SPLITS = (
    "discovery",
    "confirmation",
    "holdout",
    "holdout-2",
    "holdout-3",
    "holdout-4",
    "holdout-5",
    "holdout-6",
    "holdout-7",
    "holdout-8",
    "holdout-9",
    "holdout-10",
    "holdouts",
    "all",
    "probe",
)
# The counterfactual teachers' first statistic, recomputed from an audit's saved scores.
SHARED = "counterfactual-shared"
# The scale-free statistic of session 34, from audits that saved the nulls' reference lifts.
CCOS = "counterfactual-ccos"
# A `kind: both` audit's fine-tuned teachers and fine-tuned nulls alone: `kind: finetuned`
# recomputed from the same saved scores.
FT_ONLY = "counterfactual-finetuned"


def saved_results(audit_dir: Path, drop_prompted: int | None = None) -> list[Any] | None:
    """The counterfactual teachers' per-row scores an audit saved, as results (the null
    teachers of every probe pooled, as the audit pools them). `drop_prompted`: a `kind: both`
    audit's count of prompted nulls (saved after the fine-tuned ones), dropped with the
    prompted teachers: what `kind: finetuned` would have scored."""
    from traitlab.audit.lifts import CounterfactualResult

    f = audit_dir / "counterfactual.npz"
    if not f.is_file():
        return None
    z = np.load(f, allow_pickle=False)
    probes = sorted({k.split(".")[0] for k in z.files})
    nulls = [z[f"{p}.null_lift"] for p in probes]
    # Audits made before the pooling saved each probe's own null teachers.
    same = all(n.shape == nulls[0].shape and np.array_equal(n, nulls[0]) for n in nulls)
    null = nulls[0] if same else np.concatenate(nulls)
    if drop_prompted is not None:
        null = null[: len(null) - drop_prompted]
    return [
        CounterfactualResult(
            p,
            [str(o) for o in z[f"{p}.options"]],
            z[f"{p}.scores"],
            z[f"{p}.lift"],
            null,
            z[f"{p}.prompt_lift"]
            if f"{p}.prompt_lift" in z.files and drop_prompted is None
            else None,
            null_ref=z[f"{p}.null_ref_lift"] if f"{p}.null_ref_lift" in z.files else None,
        )
        for p in probes
    ]


def saved_score(
    audit_dir: Path, statistic: str, drop_prompted: int | None = None
) -> tuple[float, str, str] | None:
    """A counterfactual statistic's top option, recomputed from the saved per-row scores
    with this code: both statistics come from one set of teachers and rows."""
    from traitlab.audit.config import NULL_STATISTICS, CounterfactualConfig
    from traitlab.audit.lifts import row_t
    from traitlab.audit.lifts import statistic as stat_of
    from traitlab.audit.verdict import findings, verdict

    res = saved_results(audit_dir, drop_prompted)
    if res is None:
        return None
    cfg = CounterfactualConfig(statistic=statistic)  # type: ignore[arg-type]
    probes = {}
    for r in res:
        x = stat_of(r, cfg)
        probes[r.probe] = findings(
            r.options, x.T, z=row_t(x), by_effect=statistic in NULL_STATISTICS
        )
    v = verdict({"counterfactual": probes}, threshold=0.0)
    return float(v["z"]), v["trait"], v["probe"]


def score(audit: dict[str, Any], det: str) -> tuple[float, str, str] | None:
    """The detector's detection score (the top option's z over all probes) and its option."""
    if det == SHARED:
        return saved_score(Path(audit["dir"]), "shared")
    cf = audit["config"]["counterfactual"]
    if det == CCOS:
        if cf.get("kind", "finetuned") != "finetuned":
            return None
        try:
            return saved_score(Path(audit["dir"]), "ccos")
        except ValueError:  # saved before the nulls' reference lifts were
            return None
    if det == FT_ONLY:
        if cf.get("kind") != "both" or cf.get("statistic") != "null":
            return None
        return saved_score(Path(audit["dir"]), "null", drop_prompted=cf["prompted_nulls"])
    if det == "counterfactual" and cf.get("statistic") == "null" and not cf.get("calibration"):
        # Rebuilt from the saved rows, so that audits made while the statistic was chosen are
        # scored as the audit scores them now (a calibrated audit's scores need its
        # calibration, which the rows do not hold: its own findings are read below).
        return saved_score(Path(audit["dir"]), "null")
    from traitlab.audit.verdict import verdict

    probes = audit["detectors"].get(det)
    if not probes or not any(probes.values()):
        return None
    v = verdict({det: probes}, threshold=0.0)  # the option the verdict would name
    return float(v["z"]), v["trait"], v["probe"]


def auroc(pos: list[float], neg: list[float]) -> float:
    if not pos or not neg:
        return float("nan")
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def _in_split(split: str, name: str) -> bool:
    if split == "probe":
        return name == "probe"
    return name in ("all", split) or (name == "holdouts" and split.startswith("holdout"))


def summarize(
    out: Path, datasets: list[tuple[Any, ...]], detectors: tuple[str, ...], cfg: Any
) -> dict[str, Any]:
    """Per dataset the scores of every detector, per detector and split the table's figures."""
    from traitlab.audit.config import DEFAULT_T
    from traitlab.audit.verdict import threshold_for

    per: list[dict[str, Any]] = []
    for spec in datasets:
        f = out / spec[0] / "audit.json"
        if not f.is_file():
            continue
        a = json.loads(f.read_text()) | {"dir": str(f.parent)}
        row = {
            "name": spec[0],
            "group": spec[1],
            "split": spec[2],
            "option": spec[4],
            "rows": a["data"]["paired_rows"],
        }
        for det in (*detectors, SHARED, CCOS, FT_ONLY):
            s = score(a, det)
            if s is not None:
                row[det] = {
                    "z": round(s[0], 3),
                    "option": s[1],
                    "probe": s[2],
                    # FT_ONLY's teachers ran inside a `kind: both` audit: no cost of their own.
                    "seconds": None
                    if det == FT_ONLY
                    else a["cost"].get(det.split("-")[0], {}).get("seconds"),
                }
        per.append(row)
    fixed = {SHARED: DEFAULT_T["shared"], CCOS: DEFAULT_T["ccos"], FT_ONLY: DEFAULT_T["null"]}
    thresholds = {
        det: fixed[det] if det in fixed else threshold_for(det, cfg)
        for det in (*detectors, SHARED, CCOS, FT_ONLY)
        if any(det in r for r in per)
    }
    return {"datasets": per, "detectors": tables(per, thresholds)}


def tables(per: list[dict[str, Any]], thresholds: dict[str, float]) -> dict[str, Any]:
    """Per detector and split, from the per-dataset scores: AUROC with a bootstrap CI, top-1,
    the rates at the detector's threshold, seconds per audit."""
    rng = np.random.default_rng(0)
    table: dict[str, Any] = {}
    for det, threshold in thresholds.items():
        out_d: dict[str, Any] = {"threshold": threshold}
        for split in SPLITS:
            rows = [r for r in per if det in r and _in_split(r["split"], split)]
            if not rows:
                continue
            pos = [r[det]["z"] for r in rows if r["group"] == "positive"]
            neg = [r[det]["z"] for r in rows if r["group"] == "negative"]
            boots = []
            for _ in range(1000):
                bp = list(rng.choice(pos, len(pos))) if pos else []
                bn = list(rng.choice(neg, len(neg))) if neg else []
                boots.append(auroc(bp, bn))
            top1 = [r[det]["option"] == r["option"] for r in rows if r["group"] == "positive"]
            xs = [r for r in rows if r["group"] == "cross-init"]
            out_d[split] = {
                "positives": len(pos),
                "negatives": len(neg),
                "auroc": auroc(pos, neg),
                "auroc_ci": [
                    float(np.nanpercentile(boots, 2.5)),
                    float(np.nanpercentile(boots, 97.5)),
                ]
                if pos and neg
                else None,
                "top1": float(np.mean(top1)) if top1 else None,
                "tpr": float(np.mean([z > threshold for z in pos])) if pos else None,
                "fpr": float(np.mean([z > threshold for z in neg])) if neg else None,
                "cross_init_flagged": int(sum(r[det]["z"] > threshold for r in xs)),
                "seconds": float(np.mean(secs))
                if (secs := [r[det]["seconds"] for r in rows if r[det]["seconds"]])
                else None,
            }
        table[det] = out_d
    return table


def merge(files: list[Path]) -> dict[str, Any]:
    """Several benchmark summaries (`audit-bench.json`) as one: a later file's dataset
    replaces an earlier one's of the same name (a rerun), and its thresholds win."""
    rows: dict[str, dict[str, Any]] = {}
    thresholds: dict[str, float] = {}
    for f in files:
        res = json.loads(f.read_text())
        rows |= {r["name"]: r for r in res["datasets"]}
        thresholds |= {d: v["threshold"] for d, v in res["detectors"].items()}
    per = list(rows.values())
    present = {d: t for d, t in thresholds.items() if any(d in r for r in per)}
    return {
        "datasets": per,
        "detectors": tables(per, present),
        "merged_from": [str(f) for f in files],
    }


def write_md(out: Path, res: dict[str, Any], machine: dict[str, Any], wall: float | None) -> None:
    dets = list(res["detectors"])
    lines = [
        f"### Audit benchmark ({len(res['datasets'])} datasets)",
        "",
        f"Machine: {machine.get('cpu')}, {machine.get('cpu_count')} cores; "
        + (f"wall {wall:.0f} s" if wall is not None else "tables rebuilt from the saved audits")
        + ". Flag thresholds (counterfactual: t over rows; canary with `canary.null`: z in units "
        "of its two references' gap; the others: robust z over options): "
        + ", ".join(f"{d} {v['threshold']}" for d, v in res["detectors"].items())
        + f". Settings: {json.dumps(res.get('config'))}"
        + " (the rest: `AuditConfig` defaults).",
        "",
        "| detector | split | AUROC [95% CI] | top-1 | TPR | FPR | cross-init flagged | s / audit |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for det, splits in res["detectors"].items():
        for split, s in splits.items():
            if split == "threshold":
                continue
            ci = s["auroc_ci"]
            ci_s = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
            f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            lines.append(
                f"| {det} | {split} | {s['auroc']:.2f}{ci_s} | {f(s['top1'])} | {f(s['tpr'])} | {f(s['fpr'])} | {s['cross_init_flagged']} | {f(s['seconds'])} |"
            )
    lines += [
        "",
        "| dataset | group | split | option | " + " | ".join(dets) + " |",
        "|---|---|---|---|" + "---|" * len(dets),
    ]
    # Effect sizes (a calibrated audit's, threshold < 2) need more digits than t's.
    digits = {d: 3 if res["detectors"][d]["threshold"] < 2 else 1 for d in dets}
    for r in res["datasets"]:
        cells = [f"{r[d]['option']} {r[d]['z']:.{digits[d]}f}" if d in r else "-" for d in dets]
        lines.append(
            f"| {r['name']} | {r['group']} | {r['split']} | {r['option'] or '-'} | "
            + " | ".join(cells)
            + " |"
        )
    (out / "audit-bench.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Merge audit benchmark summaries into one table.")
    ap.add_argument("files", nargs="+", type=Path, help="audit-bench.json files, oldest first")
    ap.add_argument("--out", type=Path, required=True, help="writes audit-bench.{json,md} here")
    a = ap.parse_args()
    res = merge(a.files)
    last = json.loads(a.files[-1].read_text())
    res |= {"machine": last.get("machine", {}), "config": last.get("config")}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "audit-bench.json").write_text(json.dumps(res, indent=1) + "\n")
    write_md(a.out, res, res["machine"], None)


if __name__ == "__main__":
    main()
