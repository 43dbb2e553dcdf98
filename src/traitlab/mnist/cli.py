"""`traitlab mnist` and `traitlab theory`: registered into the main parser by `register`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from traitlab.core.errors import TraitlabError

SWEEP_CHOICES = ("m", "width", "noise", "epochs")


def _add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="YAML",
        help="config file (see configs/mnist/; default: the built-in defaults for "
        "the embedded digits)",
    )
    p.add_argument(
        "--preset",
        choices=("default", "paper"),
        help="built-in settings instead of --config: 'default' (embedded digits) or "
        "'paper' (the paper's optimiser; meant for real MNIST via --data)",
    )
    p.add_argument(
        "--data",
        metavar="PATH",
        help="real MNIST: a directory with the four IDX files (.gz or not), one of "
        "them, or an .npz with x_train/y_train/x_test/y_test (default: the "
        "embedded scikit-learn digits)",
    )
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<name>)")
    p.add_argument("--seed", type=int, help="master seed (overrides the config's seed)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        default=[],
        help="override a config field, e.g. --set student.lr=1e-3 "
        "--set model.hidden=[128,128] (repeatable)",
    )
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def load_cli_config(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Any:
    """The config from --config/--preset, --set overrides, then the explicit options."""
    from traitlab.config import parse_config
    from traitlab.mnist.config import MnistConfig, _merge, load_mnist_config

    if args.config and args.preset:
        raise TraitlabError("give --config or --preset, not both")
    cfg = load_mnist_config(args.config, args.set, preset=args.preset)
    upd: dict[str, Any] = dict(extra or {})
    if args.data is not None:
        upd["data"] = {"path": args.data}
    if args.seed is not None:
        upd["seed"] = args.seed
    if args.threads is not None:
        upd["threads"] = args.threads
    if upd:
        cfg = parse_config(
            _merge(cfg.model_dump(mode="json"), upd), MnistConfig, source="command line"
        )
    return cfg


def _passed(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k != "func" and v not in (None, [], False)}


def _print_main(summary: dict[str, Any], run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from traitlab.mnist.experiment import CONDITION_LABELS, CONDITION_ORDER

    con = Console(soft_wrap=True)
    main = summary["main"]
    t = Table(
        title=f"digit test accuracy over {summary['n_models']} models "
        f"(mean, std, 95% CI) - {Path(summary['data']['source']).name}"
    )
    for col, just in (
        ("condition", "left"),
        ("mean", "right"),
        ("std", "right"),
        ("95% CI", "right"),
    ):
        t.add_column(col, justify=just)
    for c in CONDITION_ORDER:
        s = main["conditions"].get(c)
        if s is None:
            continue
        t.add_row(
            CONDITION_LABELS[c],
            f"{100 * s['mean']:.1f}%",
            f"{100 * s['std']:.1f}",
            f"[{100 * s['ci']['lower']:.1f}, {100 * s['ci']['upper']:.1f}]",
        )
    con.print(t)
    if "same_minus_cross" in main:
        p = main["same_minus_cross"]
        con.print(
            f"same-init minus cross-init: {100 * p['mean']:+.1f} points "
            f"[{100 * p['ci']['lower']:+.1f}, {100 * p['ci']['upper']:+.1f}], "
            f"{p['n_positive']}/{p['n']} models, p = {p['p_value']:.2g}"
        )
    for name, sw in summary.get("sweeps", {}).items():
        parts = []
        for pt in sw["points"]:
            c = pt["conditions"]
            cross = f"/{100 * c['cross_init']['mean']:.0f}" if "cross_init" in c else ""
            parts.append(f"{pt['value']}: {100 * c['student']['mean']:.0f}{cross}")
        con.print(f"sweep {name} (same/cross %): " + ", ".join(parts))
    if "chain" in summary:
        ch = summary["chain"]
        accs = ", ".join(
            f"g{r['generation']} {100 * r['student']['mean']:.0f}%" for r in ch["per_generation"]
        )
        con.print(f"chain: {accs}")
        hl = ch.get("half_life")
        if hl:
            con.print(f"half-life of the excess over chance: {hl['generations']:.2f} generations")
    con.print(f"report: {run_dir / 'report.md'}  ({summary['timing']['total_seconds']:.0f} s)")


def cmd_mnist(args: argparse.Namespace) -> int:
    from traitlab.core.progress import Reporter
    from traitlab.mnist.run import run_mnist

    extra: dict[str, Any] = {}
    if args.models is not None:
        extra["n_models"] = args.models
    cfg = load_cli_config(args, extra)
    if args.chain is not None and args.chain < 1:
        raise TraitlabError(f"--chain {args.chain}: need at least 1 generation")
    sweeps = list(dict.fromkeys(args.sweep or []))
    run_dir = Path(args.out or Path("runs") / cfg.name)
    with Reporter(enabled=not args.quiet) as rep:
        summary = run_mnist(
            cfg, run_dir, sweeps=sweeps, chain=args.chain, reporter=rep, config_passed=_passed(args)
        )
    _print_main(summary, run_dir)
    return 0


def cmd_theory(args: argparse.Namespace) -> int:
    from rich.console import Console

    from traitlab.core.progress import Reporter
    from traitlab.mnist.report import theory_table
    from traitlab.mnist.theory_check import theory_run

    th: dict[str, Any] = {}
    if args.draws is not None:
        th["draws"] = args.draws
    if args.steps is not None:
        try:
            th["step_sizes"] = [float(s) for s in args.steps.split(",") if s.strip()]
        except ValueError:
            raise TraitlabError(
                f"--steps {args.steps!r}: expected numbers like 1e-3,0.1,10"
            ) from None
    if args.no_full_run:
        th["full_run"] = False
    cfg = load_cli_config(args, {"theory": th} if th else None)
    run_dir = Path(args.out or Path("runs") / f"{cfg.name}-theory")
    with Reporter(enabled=not args.quiet) as rep:
        summary = theory_run(cfg, run_dir, reporter=rep, config_passed=_passed(args))
    print("\n".join(theory_table(summary)))
    Console().print(
        f"report: {run_dir / 'report.md'}  ({summary['timing']['total_seconds']:.0f} s)"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add the `mnist` and `theory` commands to the main parser's subparsers."""
    m = subparsers.add_parser(
        "mnist",
        help="the MNIST auxiliary-logit experiment (many MLPs at once, CPU-friendly)",
        description="Teachers trained on digit classes; students from the same (or another) "
        "initialisation distilled on noise images through the auxiliary logits "
        "only; controls; mean, std and CI over models. Default data: the embedded "
        "scikit-learn digits. Stages are cached: reruns are instant.",
    )
    _add_config_options(m)
    m.add_argument(
        "--models",
        type=int,
        metavar="N",
        help="models trained together (overrides n_models; the paper: 100)",
    )
    m.add_argument(
        "--sweep",
        action="append",
        choices=SWEEP_CHOICES,
        metavar="NAME",
        help="also run a sweep over m, width, noise or epochs (repeatable; values "
        "and model count in the config's sweep section)",
    )
    m.add_argument(
        "--chain",
        type=int,
        metavar="GENERATIONS",
        help="also run a teacher -> student -> student-of-student chain of this "
        "many student generations, with the half-life",
    )
    m.set_defaults(func=cmd_mnist)

    t = subparsers.add_parser(
        "theory",
        help="measure Theorem 1: alignment of the student's first step with the teacher's update",
        description="For many draws, the inner product and cosine between the teacher's update "
        "(one SGD step of size eps, or a full training run) and the student's first "
        "distillation step on noise, from the shared init and from another init. "
        "Prints a table and writes a plot.",
    )
    _add_config_options(t)
    t.add_argument("--draws", type=int, metavar="N", help="independent draws (theory.draws)")
    t.add_argument(
        "--steps",
        metavar="EPS,...",
        help="comma-separated teacher step sizes, e.g. 1e-3,0.1,10 (theory.step_sizes)",
    )
    t.add_argument(
        "--no-full-run", action="store_true", help="skip the fully trained teacher (faster)"
    )
    t.set_defaults(func=cmd_theory)
