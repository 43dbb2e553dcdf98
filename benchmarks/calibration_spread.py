"""The calibrated audit's scores, recomputed from saved audits with a larger calibration.

    python benchmarks/calibration_spread.py --base toy-3101 --bench DIR --teachers 8 \
        --out benchmarks/results/calibration-spread-toy-3101

Measures `--teachers` calibration teachers per probe on the base (through the audit's own
`calibration_d`, cached like an audit's), then reads each dataset `bench_audit.py` audited
there (its `counterfactual.npz`), recomputes the data's effect size per option, and scores
it three ways: `calibration_score: z` with every calibration teacher, `z` with the first two
per probe, and `mean` (`calibration_score: option`: the mean subtracted, threshold 0.51)
with every teacher. The data's
effect sizes are checked against the saved audit (its calibrated z plus its calibration's
mean). Beside them the plain `null` (t > 8, the default) and the rule of session 39: `null`
where it flags, else the mean subtracted. (A `template` score was scored here at d5afe89
and removed.) Discovery for docs/audit.md, session 39.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from traitlab.audit import AuditConfig
from traitlab.audit.calibration import calibration_d, effect_size, pooled_spread, spread_z
from traitlab.audit.config import (
    DEFAULT_D_CALIBRATED,
    DEFAULT_T,
    DEFAULT_Z_CALIBRATED,
)
from traitlab.audit.lifts import row_t, statistic
from traitlab.audit.reference import applied_rules
from traitlab.audit.run import build_probes
from traitlab.config import ToyModel
from traitlab.core.files import write_json
from traitlab.core.runs import machine_info
from traitlab.lm.base import resolve

sys.path.insert(0, str(Path(__file__).parent))
from audit_tables import saved_results  # noqa: E402
from bench_audit import BASES, _toy  # noqa: E402


def _pick(scores: dict[str, np.ndarray], options: dict[str, list[str]]) -> tuple[str, float]:
    """The option with the largest score over every probe, and the score."""
    best = max(
        ((p, int(np.argmax(v))) for p, v in scores.items()), key=lambda x: scores[x[0]][x[1]]
    )
    return options[best[0]][best[1]], float(scores[best[0]][best[1]])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, choices=list(BASES))
    ap.add_argument("--bench", required=True, help="the bench_audit.py --out of this base")
    ap.add_argument("--teachers", type=int, default=8, help="calibration teachers per probe")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    bench = Path(a.bench)
    saved = json.loads((bench / "audit-bench.json").read_text())
    overrides = dict(saved["config"]["audit"])
    overrides["counterfactual"] = {
        **overrides.get("counterfactual", {}),
        "calibration": a.teachers,
        "calibration_score": "z",
    }
    cfg = AuditConfig.model_validate(overrides)
    base = resolve(ToyModel(toy=_toy(BASES[a.base][1], False), device="cpu"))
    probes = build_probes(cfg)
    first = json.loads((bench / saved["datasets"][0]["name"] / "audit.json").read_text())
    rules = applied_rules(first["data"])
    cal, style = calibration_d(base, [], [], probes, cfg, rules)
    k = a.teachers
    # The teachers are listed probe by probe, `k` each: the first two of each probe.
    two = [j * k + i for j in range(len(probes)) for i in range(2)]
    rows = []
    for ds in saved["datasets"]:
        d_dir = bench / ds["name"]
        audit = json.loads((d_dir / "audit.json").read_text())
        results = saved_results(d_dir)
        assert results is not None, d_dir
        n = audit["cost"]["counterfactual"]["rows"]
        stat = {r.probe: statistic(r, cfg.counterfactual) for r in results}
        d = {p: effect_size(row_t(v), n) for p, v in stat.items()}
        options = {r.probe: list(r.options) for r in results}
        # The check: the saved calibrated effect size (a centred audit's rank, else its z) is
        # this d minus the saved calibration's mean.
        old = audit["counterfactual"]["calibration"]
        for p, found in audit["detectors"]["counterfactual"].items():
            for f in found:
                i = options[p].index(f["option"])
                saved_d = f.get("rank", f["z"])
                assert abs(d[p][i] - old[p][f["option"]] - saved_d) < 1e-6, (ds["name"], f)
        scores = {
            "z": {p: spread_z(v, cal[p]) for p, v in d.items()},
            "z-first-2": {p: spread_z(v, cal[p][two]) for p, v in d.items()},
            "mean": {p: v - cal[p].mean(axis=0) for p, v in d.items()},
        }
        row: dict[str, Any] = {k_: ds[k_] for k_ in ("name", "group", "option", "rows")}
        # The plain `null` (the default): the largest mean lift names, its t flags (> 8).
        means = {p: v.mean(axis=1) for p, v in stat.items()}
        opt, _ = _pick(means, options)
        p_opt = next(p for p in options if opt in options[p])
        t_opt = float(row_t(stat[p_opt])[options[p_opt].index(opt)])
        row["null"] = {"option": opt, "score": round(t_opt, 3), "flag": t_opt > DEFAULT_T["null"]}
        for name, s in scores.items():
            opt, val = _pick(s, options)
            thr = DEFAULT_D_CALIBRATED if name == "mean" else DEFAULT_Z_CALIBRATED
            row[name] = {"option": opt, "score": round(val, 3), "flag": val > thr}
        # The rule of session 39: `null` where it flags, else the calibrated mean.
        row["null-then-mean"] = row["null"] if row["null"]["flag"] else row["mean"]
        rows.append(row)
    spreads = {p: pooled_spread(v) for p, v in cal.items()}
    totals = {}
    names = ["z", "z-first-2", "mean", "null", "null-then-mean"]
    for name in names:
        pos = [r for r in rows if r["group"] == "positive"]
        neg = [r for r in rows if r["group"] == "negative"]
        totals[name] = {
            "flagged_and_named": sum(
                r[name]["flag"] and r[name]["option"] == r["option"] for r in pos
            ),
            "named": sum(r[name]["option"] == r["option"] for r in pos),
            "positives": len(pos),
            "negatives_flagged": sum(r[name]["flag"] for r in neg),
            "negatives": len(neg),
        }
    out = Path(a.out)
    res = {
        "base": a.base,
        "teachers_per_probe": k,
        "calibration_prompts": style,
        "calibration": {p: v.tolist() for p, v in cal.items()},
        "pooled_spread": spreads,
        "datasets": rows,
        "totals": totals,
        "machine": machine_info(),
    }
    write_json(out.with_suffix(".json"), res)
    lines = [
        f"# Calibration spread on {a.base}: {k} calibration teachers per probe",
        "",
        f"Scores recomputed from the saved audits of `{bench.name}` (`benchmarks/calibration_spread.py`).",
        f"Pooled spread per probe: {', '.join(f'{p} {s:.3f}' for p, s in spreads.items())}.",
        "",
        "| dataset (rows) | trait | `z` (> 3.0) | `z`, first 2 per probe | `option` (the mean subtracted, > 0.51) |"
        + " plain `null` (t > 8) | `null`, else the mean subtracted |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            f"{'**' if r[x]['flag'] else ''}{r[x]['option']} {r[x]['score']:.3f}{'**' if r[x]['flag'] else ''}"
            for x in names
        ]
        lines.append(
            f"| {r['name']} ({r['rows']}) | {r['option'] or '-'} | " + " | ".join(cells) + " |"
        )
    lines.append("")
    for name, t in totals.items():
        lines.append(
            f"- `{name}`: {t['flagged_and_named']} of {t['positives']} flagged and named "
            f"({t['named']} named), {t['negatives_flagged']} of {t['negatives']} negatives flagged"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
