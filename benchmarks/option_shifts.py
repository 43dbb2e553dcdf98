"""Is a student's rise about its target? Every option's shift in finished runs, side by side.

    .venv/bin/python benchmarks/option_shifts.py [LABEL=]RUN_DIR [...] [--tag TAG]

For each run directory (a `traitlab run` / demo / robustness run) it reads `summary.json`, takes
every probed option's exact rate in the treatment and control students (and in the cross-init
pair), and reports where the target's shift ranks among all the options' shifts (1: it rose
most), its z against the other options' shifts, the other option that rose most, and the
correlation over options of the same-init and cross-init shifts: near 1 when the data moved
every student alike (a shift of content, not of the shared initialisation). It also gives the
teacher's profile from the seed-averaged rates (`teacher_profile` in summary.json has it per
seed, with tests): over the options besides the target, the r and the slope of each pair's
log shifts on the teacher's own log shift from the base. Runs made
before summaries carried `option_shifts` work too: the seed-averaged option rates give the same
mean shifts. Writes benchmarks/results/option-shifts[-TAG].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PAIRS = (("same", "treatment", "control"), ("xinit", "xinit_treatment", "xinit_control"))


def run_row(run_dir: Path, label: str = "") -> dict[str, Any]:
    from traitlab.experiments.compare import describe_shifts

    summary = json.loads((run_dir / "summary.json").read_text())
    cfg = json.loads((run_dir / "manifest.json").read_text())["config_resolved"]
    toy = cfg["model"].get("toy") or {}
    target = summary["trait"]["target"].lower()
    row: dict[str, Any] = {
        "run": str(run_dir),
        "label": label or run_dir.name,
        "base_seed": toy.get("seed"),
        "target": target,
    }
    arms = summary["arms"]
    moved: dict[str, dict[str, float]] = {}
    for key, a, b in PAIRS:
        if a in arms and b in arms and "exact_options" in arms[a]:
            oa, ob = arms[a]["exact_options"], arms[b]["exact_options"]
            moved[key] = {k: oa[k] - ob[k] for k in oa}
            d = describe_shifts(moved[key], target)
            row[key] = {
                k: d[k]
                for k in ("target_shift", "rank", "z", "others_sd", "top_others", "n_options")
            }
    row["same_xinit_corr"] = shared_shift(moved.get("same"), moved.get("xinit"))
    row["profile"] = profile(arms, target)
    return row


def profile(arms: dict[str, Any], target: str) -> dict[str, dict[str, float]]:
    """Per pair, r and slope over the options besides the target of the students' log shift
    (a / b) on the teacher's (teacher / base), from the seed-averaged option rates."""
    from traitlab.experiments.compare import profile_fit

    if not all("exact_options" in arms.get(k, {}) for k in ("teacher", "base")):
        return {}
    base, teacher = arms["base"]["exact_options"], arms["teacher"]["exact_options"]
    out = {}
    for key, a, b in PAIRS:
        if "exact_options" in arms.get(a, {}) and "exact_options" in arms.get(b, {}):
            oa, ob = arms[a]["exact_options"], arms[b]["exact_options"]
            fit = profile_fit(base, teacher, oa, ob, target)
            if fit is not None:
                out[key] = {"r": fit[0], "slope": fit[1]}
    return out


def shared_shift(same: dict[str, float] | None, xinit: dict[str, float] | None) -> float | None:
    """Pearson correlation over options of the same-init and cross-init shifts (None without
    both, or when either is flat)."""
    if not same or not xinit:
        return None
    keys = sorted(same.keys() & xinit.keys())
    a, b = np.array([same[k] for k in keys]), np.array([xinit[k] for k in keys])
    if len(keys) < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _cell(d: dict[str, Any] | None) -> str:
    if not d:
        return "- | - | - | -"
    top = d["top_others"][0]
    z = "-" if d["z"] is None else f"{d['z']:.1f}"
    return (
        f"{d['target_shift']:+.3f} | {d['rank']} ({z}) | {d['others_sd']:.3f} "
        f"| {top[0]} {top[1]:+.3f}"
    )


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| runs | base seed | target shift | rank (z) | others' sd | top other "
        "| cross-init shift | rank (z) | others' sd | top other | same vs cross-init, r "
        "| teacher's profile: r, slope | cross-init |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        c = r.get("same_xinit_corr")
        pr = r.get("profile") or {}
        cells = [
            f"{pr[k]['r']:+.2f}, {pr[k]['slope']:+.4f}" if k in pr else "-"
            for k in ("same", "xinit")
        ]
        lines.append(
            f"| {r['label']} | {r['base_seed']} | {_cell(r.get('same'))} | {_cell(r.get('xinit'))} "
            f"| {'-' if c is None else f'{c:+.2f}'} | {cells[0]} | {cells[1]} |"
        )
    lines += [
        "",
        "Same vs cross-init, r: the correlation over options of the two pairs' shifts (near 1: "
        "the data moved every student alike, whatever its initialisation). The teacher's "
        "profile: over the options besides the target, the r and the slope of the students' "
        "log shift on the teacher's log shift from the base (seed-averaged rates).",
    ]
    lines.append("")
    for group in dict.fromkeys(r["label"] for r in rows):
        for key, arm in (("same", "same-init"), ("xinit", "cross-init")):
            got = [r[key] for r in rows if r["label"] == group and r.get(key)]
            if got:
                ranks = [g["rank"] for g in got]
                zs = [g["z"] for g in got if g["z"] is not None]
                lines.append(
                    f"- {group}, {arm}: the target rose most in {sum(k == 1 for k in ranks)} of "
                    f"{len(got)} runs, in the top 3 in {sum(k <= 3 for k in ranks)}; median "
                    f"rank {float(np.median(ranks)):.1f}, mean z {float(np.mean(zs)):+.2f}."
                )
        prs = [
            r["profile"] for r in rows if r["label"] == group and len(r.get("profile") or {}) == 2
        ]
        if prs:
            same = np.array([[p["same"]["r"], p["same"]["slope"]] for p in prs])
            cross = np.array([[p["xinit"]["r"], p["xinit"]["slope"]] for p in prs])
            lines.append(
                f"- {group}, the teacher's profile: same-init r > 0 in {(same[:, 0] > 0).sum()} of "
                f"{len(prs)} runs (mean r {same[:, 0].mean():+.2f}, slope "
                f"{same[:, 1].mean():+.4f}); cross-init mean r {cross[:, 0].mean():+.2f}, slope "
                f"{cross[:, 1].mean():+.4f}; same-init slope above cross-init in "
                f"{(same[:, 1] > cross[:, 1]).sum()} of {len(prs)}."
            )
    return lines


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run directories (with summary.json), LABEL=DIR")
    ap.add_argument("--tag", default="", help="results/option-shifts-TAG.{json,md}")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    runs = [(r.rpartition("=")[0], Path(r.rpartition("=")[2])) for r in args.runs]
    missing = [str(p) for _, p in runs if not (p / "summary.json").is_file()]
    if missing:
        print(f"error: no summary.json in {missing[0]}: pass finished run directories")
        sys.exit(2)
    rows = [run_row(p, label) for label, p in runs]
    lines = table(rows)
    print("\n".join(lines))
    if not args.no_write:
        name = "option-shifts" + (f"-{args.tag}" if args.tag else "")
        (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
        (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    return rows


if __name__ == "__main__":
    main()
