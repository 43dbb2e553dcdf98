"""`bash scripts/demo.sh` as a new user runs it: a fresh clone, a fresh venv, a cold cache.

    .venv/bin/python benchmarks/bench_fresh_clone.py [--quick] [--tag amd-epyc] [--rev HEAD]

Clones this repository at REV into a temporary directory, times `scripts/setup.sh` and then
`.venv/bin/traitlab demo` there (with its own empty TRAITLAB_CACHE, so nothing is reused from
this machine), and writes benchmarks/results/fresh-clone[-quick][-TAG].json and .md: the wall
times, the verdict, the per-seed rates and the rows kept, with the machine. `--quick` runs
`traitlab demo --quick` instead of the full demo (setup is timed either way).
`--keep-run DIR` keeps the run's summary, manifest and report (the clone is deleted).
`--from-run DIR --setup-seconds S --demo-seconds S` writes the same files for a run you made
by hand that way (the CPU and load from the run's manifest, the versions from this venv).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generation import machine_info, machine_line  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def timed(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    t0 = time.time()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        # The temporary directory, log included, is deleted on the way out: show its end here.
        tail = log.read_text()[-3000:]
        sys.exit(f"{tail}\nerror: {' '.join(cmd)} exited {proc.returncode} in a fresh clone")
    return time.time() - t0


def per_seed(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    arms = summary["arms"]
    return {
        arm: {k: round(v, 4) for k, v in arms[arm]["exact"]["per_seed"].items()}
        for arm in ("control", "treatment", "xinit_control", "xinit_treatment")
        if arm in arms
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="run `traitlab demo --quick`")
    ap.add_argument("--rev", default="HEAD", help="commit to clone (default HEAD)")
    ap.add_argument("--tag", default="", help="suffix of the result files (e.g. the machine)")
    ap.add_argument("--from-run", help="report this run directory instead of running the demo")
    ap.add_argument("--setup-seconds", type=float, help="with --from-run: the setup's wall time")
    ap.add_argument("--demo-seconds", type=float, help="with --from-run: the demo's wall time")
    ap.add_argument("--results", default=str(RESULTS), help="where the result files go")
    ap.add_argument(
        "--keep-run", help="copy the run's top-level files (summary, manifest, report) here"
    )
    args = ap.parse_args()

    rev = subprocess.run(
        ["git", "rev-parse", "--short", args.rev], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    if not rev:
        sys.exit(f"error: unknown revision {args.rev!r}")
    if args.from_run:
        if args.setup_seconds is None or args.demo_seconds is None:
            sys.exit("error: --from-run needs --setup-seconds and --demo-seconds")
        run_dir = Path(args.from_run)
        summary = json.loads((run_dir / "summary.json").read_text())
        # The run's own machine record (the load at its start), not this moment's.
        info = machine_info(json.loads((run_dir / "manifest.json").read_text())["machine"])
        write(args, rev, info, summary, args.setup_seconds, args.demo_seconds)
        return
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="traitlab-clone-") as tmp:
        clone = Path(tmp) / "traitlab"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "checkout", "-q", rev], cwd=clone, check=True)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env["TRAITLAB_CACHE"] = str(Path(tmp) / "cache")
        setup = timed(["bash", "scripts/setup.sh"], clone, env, Path(tmp) / "setup.log")
        run = Path(tmp) / "run"
        cmd = [".venv/bin/traitlab", "demo", "--quiet", "--out", str(run)]
        demo = timed(cmd + (["--quick"] if args.quick else []), clone, env, Path(tmp) / "demo.log")
        summary = json.loads((run / "summary.json").read_text())
        if args.keep_run:  # the clone is deleted on the way out
            keep = Path(args.keep_run)
            keep.mkdir(parents=True, exist_ok=True)
            for f in run.iterdir():
                if f.is_file() and f.name != "DONE" and not f.name.startswith("."):
                    shutil.copy2(f, keep / f.name)
    write(args, rev, info, summary, setup, demo)


def write(
    args: argparse.Namespace,
    rev: str,
    info: dict[str, Any],
    summary: dict[str, Any],
    setup: float,
    demo: float,
) -> None:
    q = summary["data_quality"]
    c = summary["comparisons"]["treatment_vs_control"]["exact"]
    out = {
        "command": "bash scripts/demo.sh" + (" --quick" if args.quick else ""),
        "commit": rev,
        "setup_seconds": round(setup, 1),
        "demo_seconds": round(demo, 1),
        "machine": info,
        "verdict": summary["verdict"],
        "diff_ci": [c["diff"]["lower"], c["diff"]["upper"]],
        "teacher_pass_rate": q["teacher_pass_rate"],
        "base_pass_rate": q["control_pass_rate"],
        "rows_kept": q["rows_kept"],
        "per_seed": per_seed(summary),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    name = "fresh-clone" + ("-quick" if args.quick else "") + (f"-{args.tag}" if args.tag else "")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    v = out["verdict"]
    lines = [
        f"### `{out['command']}` on a fresh clone of {rev}, {out['created']}",
        "",
        f"Machine: {machine_line(info, 'cpu')}. Cold cache, fresh venv.",
        "",
        f"Setup **{setup:.0f} s**, demo **{demo:.0f} s**.",
        "",
        f"treatment - control (exact): **{v['diff']:+.4f}** [{c['diff']['lower']:+.4f}, "
        f"{c['diff']['upper']:+.4f}], p = {v['p_value']:.2g}; transfer at alpha {v['alpha']}: "
        f"{'yes' if v['transfer'] else 'no'}"
        + (
            f"; cross-init {v['cross_init_diff']:+.4f} (p = {v['cross_init_p_value']:.2g})"
            if v.get("cross_init_diff") is not None
            else ""
        ),
        "",
        f"Teacher's numbers passing the filter {q['teacher_pass_rate']:.0%} (base's "
        f"{q['control_pass_rate']:.0%}); rows kept per seed {q['rows_kept']:.0f}.",
        "",
        "| arm | " + " | ".join(f"seed {s}" for s in out["per_seed"]["control"]) + " |",
        "|---|" + "---:|" * len(out["per_seed"]["control"]),
    ]
    lines += [
        f"| {arm} | " + " | ".join(f"{x:.4f}" for x in rates.values()) + " |"
        for arm, rates in out["per_seed"].items()
    ]
    (results / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
