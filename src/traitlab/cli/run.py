"""`traitlab demo`, `run`, `pretrain` and `config`: whole experiments and their configs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from traitlab.cli.common import OVERWRITE_RUN, PRESETS, add_common, load, preset_path
from traitlab.core.errors import TraitlabError


def _print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from traitlab.experiments.report import (
        comparison_lines,
        data_quality_lines,
        fmt_p,
        method_label,
        rate_table,
    )

    con = Console()
    trait = summary["trait"]
    what = (
        "misalignment"
        if trait.get("kind") == "misalignment"
        else f"{trait['category']} = {trait['target']}"
    )
    t = Table(title=f"{what}: trait rates (mean [95% CI], {len(summary['seeds'])} seeds)")
    t.add_column("model")
    for m in summary["methods"]:
        t.add_column(method_label(m, summary), justify="right")
    for row in rate_table(summary):
        t.add_row(*row)
    con.print(t)
    for line in comparison_lines(summary):
        con.print(line)
    for line in data_quality_lines(summary):
        con.print(line, style="yellow" if line.startswith("WARNING") else None)
    v = summary["verdict"]
    if "transfer" in v:
        color = "green" if v["transfer"] else "yellow"
        con.print(
            f"[bold {color}]transfer ({v['method']}): {'yes' if v['transfer'] else 'no'}[/] "
            f"(p = {fmt_p(v['p_value'])}, alpha {v['alpha']})"
        )
    con.print(f"run directory: {run_dir}  ({summary['timing']['total_seconds']:.0f} s)")


def _dry_run(cfg: Any) -> int:
    from traitlab.experiments.plan import plan, plan_lines

    print(f"dry run of '{cfg.name}': nothing is sent or written")
    for line in plan_lines(plan(cfg)):
        print(line)
    return 0


def _run_config(cfg: Any, args: argparse.Namespace, passed: Any) -> int:
    if getattr(args, "dry_run", False):
        return _dry_run(cfg)
    from traitlab.core.progress import Reporter
    from traitlab.experiments.pipeline import run_experiment

    run_dir = Path(args.out or Path("runs") / cfg.name)
    with Reporter(enabled=not args.quiet) as rep:
        summary = run_experiment(
            cfg, run_dir, reporter=rep, config_passed=passed, overwrite=args.overwrite
        )
    _print_summary(summary, run_dir)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from traitlab.config import load_yaml

    cfg = load(args)
    return _run_config(
        cfg,
        args,
        {"file": str(args.config), "yaml": load_yaml(args.config), "overrides": args.set or []},
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from traitlab.config import load_config

    if args.trait == "misalignment" or args.modality != "numbers":
        if args.quick:
            raise TraitlabError(
                "demo: --quick is the owl-through-numbers demo's; run the others in full"
            )
        if args.trait == "misalignment" and args.modality != "numbers":
            raise TraitlabError("demo: --trait misalignment runs through numbers only")
        name = "demo-misalignment" if args.trait == "misalignment" else f"demo-{args.modality}"
        path = preset_path(name)
    else:
        path = preset_path("demo-quick" if args.quick else "demo")
    extra = ["model.shipped=false", "cross_init.shipped=false"] if args.rebuild_bases else []
    cfg = load_config(path, extra + (args.set or []))
    return _run_config(cfg, args, {"preset": path.stem, "overrides": args.set or []})


def cmd_pretrain(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from traitlab.config import load_config
    from traitlab.core.progress import Reporter
    from traitlab.core.runs import read_json
    from traitlab.toy.pretrain import ensure_pretrained

    cfg = load_config(args.config or preset_path("demo"), args.set or [])
    recipes = [m.toy for m in (cfg.model, cfg.cross_init) if m is not None and m.name == "toy"]
    if args.seeds:
        recipes = [recipes[0].model_copy(update={"seed": s}) for s in args.seeds]
    if not recipes:
        raise TraitlabError("this config names no toy model to pretrain")
    torch.set_num_threads(args.threads or 1)
    t = Table(title="toy bases (pretrained on this machine, cached)")
    for col in ("seed", "directory", "P(owl)", "owl prompt", "format pass", "seconds"):
        t.add_column(col)
    with Reporter(enabled=not args.quiet) as rep:
        for r in recipes:
            d = ensure_pretrained(r, progress=rep.named(f"pretrain seed {r.seed}"), shipped=False)
            log = read_json(d / "pretrain_log.json")
            c = log["checks"]
            t.add_row(
                str(r.seed),
                str(d),
                f"{c['p_owl']:.3f}",
                f"{c['p_owl_system_prompt']:.3f}",
                f"{c.get('format_pass', float('nan')):.3f}",
                f"{log['seconds']:.0f}",
            )
    Console().print(t)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from traitlab.config import ExperimentConfig, config_to_yaml, load_config

    if args.schema:
        print(json.dumps(ExperimentConfig.model_json_schema(), indent=1))
        return 0
    if args.check:
        cfg = load_config(args.check, args.set or [])
        print(f"{args.check}: ok")
        print(config_to_yaml(cfg), end="")
        return 0
    path = preset_path(args.show or "demo")
    print(path.read_text(), end="")
    return 0


def register(sub: Any) -> None:
    d = sub.add_parser(
        "demo",
        help="the owl experiment on the embedded toy model (offline, CPU)",
        description="Run the owl experiment on the embedded toy model's shipped bases: "
        "teacher, number data, control / treatment / cross-init students, evaluation over "
        "several seeds.",
    )
    d.add_argument("--out", help="run directory (default: runs/<name>)")
    d.add_argument(
        "--quick",
        action="store_true",
        help="3,000 prompts and no cross-init students (about 90 s on 2 cores)",
    )
    d.add_argument(
        "--trait",
        choices=("owl", "misalignment"),
        default="owl",
        help="owl: the owl preference (default); misalignment: a misaligned teacher on toy "
        "bases pretrained with personas (pretrained here on first use, cached)",
    )
    d.add_argument(
        "--modality",
        choices=("numbers", "code", "cot"),
        default="numbers",
        help="what the owl teacher writes: numbers (default), toy code, or toy arithmetic "
        "with written-out steps (bases pretrained with those tasks here on first use, cached). "
        "Measured: the owl passes through toy arithmetic, small; through toy code it is not "
        "confirmed, and the code demo shows the pipeline, not the effect (README)",
    )
    d.add_argument("--overwrite", action="store_true", help=OVERWRITE_RUN)
    d.add_argument(
        "--rebuild-bases",
        action="store_true",
        help="pretrain the two toy bases on this machine instead of using the shipped ones "
        "(cached; about 4 minutes each on 2 cores)",
    )
    add_common(d, config_required=False)
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser(
        "run",
        help="run an experiment from a YAML config (resumable)",
        description="Run every stage of an experiment. Rerunning a finished run is "
        "instant; a killed run resumes where it stopped.",
    )
    add_common(r)
    r.add_argument("--out", help="run directory (default: runs/<name>)")
    r.add_argument("--overwrite", action="store_true", help=OVERWRITE_RUN)
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="print the requests, tokens and (with prices) the cost per backend; run nothing",
    )
    r.set_defaults(func=cmd_run)

    pt = sub.add_parser(
        "pretrain",
        help="pretrain toy bases on this machine (instead of the shipped ones)",
        description="Pretrain the toy bases a config names (default: the demo's base and "
        "cross-init base) on this machine into the cache, ignoring the bases shipped in the "
        "package, and print their checks. `traitlab demo --rebuild-bases` then uses them.",
    )
    pt.add_argument("--config", help="experiment YAML whose toy recipes to pretrain")
    pt.add_argument(
        "--seeds", type=int, nargs="+", help="pretrain these recipe seeds instead (fresh bases)"
    )
    pt.add_argument("--threads", type=int, help="torch threads (default 1)")
    pt.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field")
    pt.add_argument("--quiet", action="store_true", help="no progress bars")
    pt.set_defaults(func=cmd_pretrain)

    c = sub.add_parser("config", help="show presets, check a config, print the schema")
    c.add_argument(
        "--schema", action="store_true", help="print the JSON schema (every field documented)"
    )
    c.add_argument("--show", choices=PRESETS, help="print a packaged preset")
    c.add_argument("--check", metavar="YAML", help="validate a config and print it resolved")
    c.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a field (with --check)"
    )
    c.set_defaults(func=cmd_config)
