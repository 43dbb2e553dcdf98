"""Candidate statistics for the counterfactual teachers, scored from saved audits.

    python benchmarks/audit_candidates.py BENCH_DIR --discovery discovery confirmation \
        --confirmation holdout-2 holdout-3 holdout-4 --out benchmarks/results/audit-candidates

Reads each `bench_audit.py` dataset's `counterfactual.npz` (it needs the null teachers'
reference lifts, `<probe>.null_ref_lift`, saved since 2026-12-06) and scores every candidate
of docs/audit.md's plan (session 34). Per row i of the data: l_o the option teacher's lift
on the data row, r_o on its paired reference row, s_o = l_o - r_o; n_k, m_k a null teacher's
lifts on the two rows. Each candidate gives per option a value per row; the option it names
and its score are the largest over both probes (the t over rows, or the mean for `*-mean`
candidates, in hundredths). Thresholds come from the discovery split by the plan's rule (the
highest negative + 1, rounded up to 0.5); the confirmation splits are scored with them.
With `--seeds DIR2 ...` (the same datasets audited with other teacher seeds, `bench_audit.py
--cf-seed`), every candidate reads each teacher's lifts averaged over the seeds. With
`--calibrate SPLIT ...`, `ncal` is scored too: `null`'s t per option minus its mean over the
no-trait teachers' datasets of those splits (the `neutral` ones, or the `calnull` ones that
the audit's own null recipe made; session 36, docs/audit.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from traitlab.audit.calibration import effect_size
from traitlab.audit.lifts import regress_out, spread
from traitlab.audit.lifts import row_t as _t

sys.path.insert(0, str(Path(__file__).parent))
from audit_tables import auroc  # noqa: E402

Arrays = dict[str, Any]


def _best(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows[int(np.argmax(rows.mean(axis=1)))])


def _null(a: Arrays) -> np.ndarray:
    cands = np.vstack([np.zeros((1, a["l"].shape[1])), a["N"]])
    return np.asarray(a["l"] - _best(cands)[None])


def _shared(a: Arrays) -> np.ndarray:
    return regress_out(a["s"], a["s"].mean(axis=0))


def _paired(a: Arrays) -> np.ndarray:
    cands = np.vstack([np.zeros((1, a["s"].shape[1])), a["N"] - a["M"]])
    return np.asarray(a["s"] - _best(cands)[None])


def _cnull(a: Arrays) -> np.ndarray:
    return regress_out(a["s"], (a["N"] - a["M"]).mean(axis=0))


def _scaled(a: Arrays) -> tuple[np.ndarray, np.ndarray]:
    """Each teacher's paired lift over the spread of its lift on the base's own (reference)
    rows: options, nulls."""
    return a["s"] / spread(a["r"]), (a["N"] - a["M"]) / spread(a["M"])


def _pcos(a: Arrays) -> np.ndarray:
    zo, zn = _scaled(a)
    return np.asarray(zo - _best(zn)[None])


def _ccos(a: Arrays) -> np.ndarray:
    zo, zn = _scaled(a)
    return regress_out(zo, zn.mean(axis=0))


# name -> (values per option and row, how the option is named and scored)
CANDIDATES: dict[str, tuple[Callable[[Arrays], np.ndarray], str]] = {
    "null": (_null, "mean-then-t"),
    "shared": (_shared, "t"),
    "paired": (_paired, "mean-then-t"),
    "cnull": (_cnull, "mean-then-t"),
    "paired-mean": (_paired, "mean"),
    "cnull-mean": (_cnull, "mean"),
    "pcos": (_pcos, "mean-then-t"),
    "pcos-mean": (_pcos, "mean"),
    "ccos": (_ccos, "mean-then-t"),
}


def load(audit_dir: Path) -> dict[str, Arrays]:
    z = np.load(audit_dir / "counterfactual.npz", allow_pickle=False)
    out = {}
    for p in sorted({k.split(".")[0] for k in z.files}):
        s, lift = z[f"{p}.scores"], z[f"{p}.lift"]
        out[p] = {
            "options": [str(o) for o in z[f"{p}.options"]],
            "s": s,
            "l": lift,
            "r": lift - s,
            "N": z[f"{p}.null_lift"][: len(z[f"{p}.null_ref_lift"])],
            "M": z[f"{p}.null_ref_lift"],
        }
    return out


def load_mean(audit_dirs: list[Path]) -> dict[str, Arrays]:
    """The same dataset audited with several teacher seeds (`counterfactual.seed`): each
    teacher's lifts averaged over the seeds, row by row (options, reference rows and nulls
    alike), so every candidate reads an ensemble of teachers per option."""
    runs = [load(d) for d in audit_dirs]
    out = {}
    for p, a in runs[0].items():
        assert all(r[p]["options"] == a["options"] for r in runs), "options differ by seed"
        mean = {k: np.mean([r[p][k] for r in runs], axis=0) for k in ("s", "l", "r")}
        n = min(len(r[p]["N"]) for r in runs)
        nulls = {k: np.mean([r[p][k][:n] for r in runs], axis=0) for k in ("N", "M")}
        out[p] = {"options": a["options"], **mean, **nulls}
    return out


def top(
    arrays: dict[str, Arrays],
    name: str,
    calibration: dict[str, dict[str, np.ndarray]] | None = None,
) -> tuple[float, str, str]:
    """(score, option, probe) a candidate's verdict would name: as `audit.verdict` does,
    the option with the largest mean (its t the score) or, for `shared`, the largest t,
    within each probe and across the probes."""
    if name == HYBRID:
        return _hybrid(arrays)
    if name in (NCAL, NCALD):
        assert calibration is not None, f"{name} needs --calibrate"
        return _ncal(arrays, calibration[name], STATS[name])
    fn, how = CANDIDATES[name]
    best: tuple[float, float, str, str] | None = None
    for probe, a in arrays.items():
        v = fn(a)
        mean, t = v.mean(axis=1), _t(v)
        rank = t if how == "t" else mean
        k = int(np.argmax(rank))
        score = float(mean[k] * 100 if how == "mean" else t[k])
        if best is None or rank[k] > best[0]:
            best = (float(rank[k]), score, a["options"][k], probe)
    assert best is not None
    return best[1:]


# Tried after the candidates above were read (docs/audit.md, holdout 6): the option of
# `ccos` within a probe, the probe whose largest `pcos` mean is largest, `ccos`'s t.
HYBRID = "hybrid"
NAMES = [*CANDIDATES, HYBRID]


def _hybrid(arrays: dict[str, Arrays]) -> tuple[float, str, str]:
    best: tuple[float, float, str, str] | None = None
    for probe, a in arrays.items():
        c = _ccos(a)
        k = int(np.argmax(c.mean(axis=1)))
        pick = float(_pcos(a).mean(axis=1).max())
        if best is None or pick > best[0]:
            best = (pick, float(_t(c)[k]), a["options"][k], probe)
    assert best is not None
    return best[1:]


# Tried in session 36 (docs/audit.md, holdout 8): `null`'s t of each option minus that
# option's mean `null` t over no-trait teachers' datasets of the same base (the benchmark's
# neutral datasets, `--calibrate`): what a fine-tune's numbers without a trait do to each
# option, measured, instead of assumed to be the same for every option.
NCAL = "ncal"
# Session 37: the same in effect sizes (t / sqrt(rows)), which do not grow with the rows, so
# that calibration datasets of other sizes than the data's (and the audit's subsets of the
# data's prompts) calibrate it alike; what `counterfactual.calibration` computes.
NCALD = "ncald"


def null_t(arrays: dict[str, Arrays]) -> dict[str, np.ndarray]:
    """Per probe, `null`'s t of every option."""
    return {p: _t(_null(a)) for p, a in arrays.items()}


def null_d(arrays: dict[str, Arrays]) -> dict[str, np.ndarray]:
    """Per probe, `null`'s effect size (t / sqrt(rows)) of every option."""
    return {p: effect_size(t, arrays[p]["l"].shape[1]) for p, t in null_t(arrays).items()}


# The calibrated candidates and the statistic each subtracts its calibration from.
STATS: dict[str, Callable[[dict[str, Arrays]], dict[str, np.ndarray]]] = {
    NCAL: null_t,
    NCALD: null_d,
}


def _ncal(
    arrays: dict[str, Arrays], calibration: dict[str, np.ndarray], stat: Callable[..., Any]
) -> tuple[float, str, str]:
    best: tuple[float, str, str] | None = None
    for probe, t in stat(arrays).items():
        v = t - calibration[probe]
        k = int(np.argmax(v))
        if best is None or v[k] > best[0]:
            best = (float(v[k]), arrays[probe]["options"][k], probe)
    assert best is not None
    return best


def metrics(per: list[dict[str, Any]], name: str, threshold: float) -> dict[str, Any]:
    pos = [r for r in per if r["group"] == "positive"]
    neg = [r for r in per if r["group"] == "negative"]
    return {
        "auroc": auroc([r[name][0] for r in pos], [r[name][0] for r in neg]),
        "positives": len(pos),
        "negatives": len(neg),
        "top1": sum(r[name][1] == r["option"] for r in pos),
        "flagged_named": sum(r[name][1] == r["option"] and r[name][0] > threshold for r in pos),
        "false_positives": sum(r[name][0] > threshold for r in neg),
    }


def main() -> None:
    from bench_audit import DATASETS

    ap = argparse.ArgumentParser()
    ap.add_argument("bench_dir")
    ap.add_argument("--discovery", nargs="+", required=True, help="splits thresholds come from")
    ap.add_argument("--confirmation", nargs="*", default=[], help="splits scored with them")
    ap.add_argument("--out", help="write OUT.json and OUT.md")
    ap.add_argument(
        "--seeds",
        nargs="+",
        default=[],
        help="more BENCH_DIRs of the same datasets audited with other teacher seeds "
        "(bench_audit.py --cf-seed): score the teachers' lifts averaged over all of them",
    )
    ap.add_argument(
        "--calibrate",
        nargs="*",
        default=[],
        help="splits whose no-trait teachers' (neutral) datasets calibrate `ncal`: each "
        "option's mean `null` t over them (a dataset among them leaves itself out)",
    )
    a = ap.parse_args()
    root = Path(a.bench_dir)
    roots = [root, *map(Path, a.seeds)]
    splits = {"discovery": a.discovery, "confirmation": a.confirmation}
    have = [s for s in DATASETS if all((r / s[0] / "counterfactual.npz").is_file() for r in roots)]
    # Each calibration dataset's `null` t and effect size per probe, computed once.
    calib = {
        s[0]: {name: stat(load_mean([r / s[0] for r in roots])) for name, stat in STATS.items()}
        for s in have
        if s[2] in a.calibrate and s[3] in ("neutral", "calnull")
    }
    names = [*NAMES, NCAL, NCALD] if calib else NAMES
    per = []
    for spec in have:
        part = next((k for k, v in splits.items() if spec[2] in v), None)
        if part is None:
            continue
        arrays = load_mean([r / spec[0] for r in roots])
        others = [c for n, c in calib.items() if n != spec[0]]
        mu = (
            {
                name: {p: np.mean([c[name][p] for c in others], axis=0) for p in arrays}
                for name in STATS
            }
            if calib
            else None
        )
        row = {"name": spec[0], "group": spec[1], "split": spec[2], "option": spec[4]}
        per.append(row | {"part": part} | {c: top(arrays, c, mu) for c in names})
    disc = [r for r in per if r["part"] == "discovery"]
    out: dict[str, Any] = {"datasets": per, "candidates": {}}
    for c in names:
        neg = [r[c][0] for r in disc if r["group"] == "negative"]
        # The rule: the highest negative + 1, rounded up to 0.5 (effect sizes: + 0.01, to 0.005).
        step, plus = (0.005, 0.01) if c == NCALD else (0.5, 1.0)
        thr = float(np.ceil((max(neg) + plus) / step) * step)
        out["candidates"][c] = {"threshold": thr} | {
            part: metrics([r for r in per if r["part"] == part], c, thr) for part in splits
        }
        for split in a.confirmation:  # each confirmation split alone too
            rows = [r for r in per if r["split"] == split]
            if rows:
                out["candidates"][c][split] = metrics(rows, c, thr)
    text = render(out)
    print(text)
    if a.out:
        Path(a.out + ".json").write_text(json.dumps(out, indent=1) + "\n")
        Path(a.out + ".md").write_text(text)


def render(out: dict[str, Any]) -> str:
    lines = [
        "| candidate | threshold | part | AUROC | top-1 | flagged and named | false positives |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for c, d in out["candidates"].items():
        for part in [k for k in d if k != "threshold"]:
            if not d[part]["positives"]:
                continue
            m = d[part]
            lines.append(
                f"| {c} | {d['threshold']:g} | {part} | {m['auroc']:.2f} | {m['top1']} / "
                f"{m['positives']} | {m['flagged_named']} / {m['positives']} | "
                f"{m['false_positives']} / {m['negatives']} |"
            )
    lines += ["", "| dataset | split | option | " + " | ".join(out["candidates"]) + " |"]
    lines.append("|---|---|---|" + "---|" * len(out["candidates"]))
    for r in out["datasets"]:
        cells = [f"{r[c][1]} {r[c][0]:.{3 if c == NCALD else 1}f}" for c in out["candidates"]]
        lines.append(
            f"| {r['name']} | {r['split']} | {r['option'] or '-'} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
