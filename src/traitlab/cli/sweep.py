"""`traitlab sweep SWEEP.yaml`: an experiment over a grid or list of cells.

traitlab sweep configs/sweeps/defences.yaml --out runs/defences --workers 2
traitlab sweep SWEEP.yaml --executor ray --address auto     # on a running Ray cluster
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from traitlab.core.errors import TraitlabError


def cmd_sweep(args: argparse.Namespace) -> int:
    from rich.console import Console

    from traitlab.config.base import load_config, load_yaml
    from traitlab.sweep import SweepConfig, run_sweep

    if args.schema:
        print(json.dumps(SweepConfig.model_json_schema(), indent=1))
        return 0
    if not args.sweep:
        raise TraitlabError("traitlab sweep: pass a sweep YAML (see configs/sweeps/)")
    sets = list(args.set or [])
    if args.workers is not None:
        sets.append(f"workers={args.workers}")
    if args.executor is not None:
        sets.append(f"executor={args.executor}")
    if args.address is not None:
        sets.append(f"ray.address={args.address}")
    sweep = load_config(args.sweep, SweepConfig, sets)
    out = Path(args.out or Path("runs") / sweep.name)
    con = Console(stderr=True, quiet=args.quiet)
    summary = run_sweep(
        sweep,
        out,
        sweep_dir=Path(args.sweep).resolve().parent,
        log=lambda m: con.print(m, soft_wrap=True),
        config_passed={"file": str(args.sweep), "yaml": load_yaml(args.sweep), "overrides": sets},
        overwrite=args.overwrite,
    )
    _print(summary, out)
    return 0


def _print(summary: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from traitlab.core.html import fmt

    rows = summary["cells"]
    t = Table(title=f"sweep {summary['name']}: treatment - control per cell (95 % CI)")
    cols = ["diff", "diff_lo", "diff_hi", "p", "xinit_diff", "removal", "removal_lo"]
    cols = [c for c in cols if any(c in r for r in rows)]
    for c in ["cell", *cols]:
        t.add_column(c, justify="left" if c == "cell" else "right")
    for r in rows:
        t.add_row(r["cell"], *(fmt(r.get(c)) for c in cols))
    con = Console()
    con.print(t)
    tm = summary["timing"]
    con.print(
        f"wall {tm['wall_seconds']:.0f} s; stage work {tm['stage_seconds']:.0f} s, "
        f"{tm['saved_seconds']:.0f} s of it shared between cells"
    )
    con.print(f"sweep directory: {out} (table.csv, report.html, cells/)")


def register(sub: Any) -> None:
    s = sub.add_parser(
        "sweep",
        help="run an experiment over a grid or list of cells (shared stages, resumable)",
        description="Run every cell of a sweep file. Cells share their cached stages (a "
        "teacher two cells need is made once); a killed sweep resumes. Writes table.csv "
        "(and table.parquet with pyarrow), report.html and summary.json.",
    )
    s.add_argument("sweep", nargs="?", help="sweep YAML (see configs/sweeps/)")
    s.add_argument("--out", help="sweep directory (default: runs/<name>)")
    s.add_argument("--workers", type=int, help="cells run at once (local executor)")
    s.add_argument("--executor", choices=("local", "ray"), help="where the cells run")
    s.add_argument("--address", help="Ray cluster address (with --executor ray)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a sweep field")
    s.add_argument("--overwrite", action="store_true", help="write into a non-run directory")
    s.add_argument("--schema", action="store_true", help="print the sweep file's JSON schema")
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    s.set_defaults(func=cmd_sweep)
