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
mean). Beside them the plain `null` (t > 8, the default), the rule of session 39: `null`
where it flags, else the mean subtracted, and that rule with its plain part at t >
`--null-threshold` (session 41). (A `template` score was scored here at d5afe89
and removed.) Discovery for docs/audit.md, session 39.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from traitlab.audit import AuditConfig
from traitlab.audit.calibration import calibrated, calibration_d, effect_size, pooled_spread
from traitlab.audit.lifts import counterfactual_findings, row_t, statistic
from traitlab.audit.reference import applied_rules
from traitlab.audit.run import build_probes
from traitlab.audit.verdict import audit_verdict, plain_verdict, verdict
from traitlab.config import ToyModel
from traitlab.core.files import write_json
from traitlab.core.runs import machine_info
from traitlab.lm.base import resolve

sys.path.insert(0, str(Path(__file__).parent))
from audit_tables import saved_results  # noqa: E402
from bench_audit import BASES, _toy  # noqa: E402


def _entry(v: dict[str, Any]) -> dict[str, Any]:
    """A verdict as one table cell: the option it names, its score, its flag."""
    return {"option": v["trait"], "score": round(float(v["z"]), 3), "flag": bool(v["flag"])}


# (column, calibration_score, which calibration teachers)
SCORES = [("z", "z", "all"), ("z-first-2", "z", "first-2"), ("mean", "option", "all")]


def with_score(cfg: AuditConfig, score: str, **more: Any) -> AuditConfig:
    """`cfg` with another calibration_score (and any other counterfactual fields)."""
    update = {"calibration_score": score, **more}
    return cfg.model_copy(update={"counterfactual": cfg.counterfactual.model_copy(update=update)})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, choices=list(BASES))
    ap.add_argument("--bench", required=True, help="the bench_audit.py --out of this base")
    ap.add_argument("--teachers", type=int, default=8, help="calibration teachers per probe")
    ap.add_argument(
        "--null-threshold",
        type=float,
        default=10.0,
        help="the last column: null_first with its plain part at t > this",
    )
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    bench = Path(a.bench)
    saved = json.loads((bench / "audit-bench.json").read_text())
    overrides = dict(saved["config"]["audit"])
    overrides["counterfactual"] = {
        **overrides.get("counterfactual", {}),
        "calibration": a.teachers,
        "calibration_score": "z",
        "null_threshold": None,  # a null_first audit's; each column sets its own
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
        t_rows = {p: row_t(v) for p, v in stat.items()}
        d = {p: effect_size(v, n) for p, v in t_rows.items()}
        options = {r.probe: list(r.options) for r in results}
        # The check: the saved calibrated effect size (a centred audit's rank, else its z) is
        # this d minus the saved calibration's mean.
        old = audit["counterfactual"]["calibration"]
        for p, found in audit["detectors"]["counterfactual"].items():
            for f in found:
                i = options[p].index(f["option"])
                saved_d = f.get("rank", f["z"])
                assert abs(d[p][i] - old[p][f["option"]] - saved_d) < 1e-6, (ds["name"], f)
        row: dict[str, Any] = {k_: ds[k_] for k_ in ("name", "group", "option", "rows")}
        # Each score through the audit's own code: calibrated(), its findings, its verdict.
        plain = counterfactual_findings(results, stat, t_rows, by_effect=True)
        for name, score, teachers in SCORES:
            c = with_score(cfg, score)
            used = {p: v[two] for p, v in cal.items()} if teachers == "first-2" else cal
            z, rank = calibrated(t_rows, n, used, c)
            found = {"counterfactual": counterfactual_findings(results, stat, z, rank=rank)}
            row[name] = _entry(verdict(found, c))
            if score == "option":
                # The plain `null` (the default) and the rule null_first on the same findings.
                row["null"] = _entry(plain_verdict(plain, cfg))
                both = {**found, "counterfactual-null": plain}
                row["null-then-mean"] = _entry(audit_verdict(both, with_score(cfg, "null_first")))
                # The same rule with its plain part at t > --null-threshold (session 41).
                nf_t = with_score(cfg, "null_first", null_threshold=a.null_threshold)
                row["null-first-t"] = _entry(audit_verdict(both, nf_t))
        rows.append(row)
    spreads = {p: pooled_spread(v) for p, v in cal.items()}
    totals = {}
    names = [x[0] for x in SCORES] + ["null", "null-then-mean", "null-first-t"]
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
        + " plain `null` (t > 8) | `null`, else the mean subtracted |"
        + f" the same, `null` at t > {a.null_threshold:g} |",
        "|---|---|---|---|---|---|---|---|",
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
