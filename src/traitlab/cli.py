"""`traitlab ...`: a thin command line over the Python API.

Bad input raises `TraitlabError`; `main` prints it as one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from traitlab.errors import TraitlabError

# Idle OpenMP threads busy-wait by default; on a shared 2-core machine that made small-model
# training 10-30x slower. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PRESETS = ("demo", "demo-quick")
OVERWRITE_RUN = (
    "write into --out even if it is a non-empty directory that is not a traitlab run "
    "(default: refuse)"
)


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise TraitlabError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return Path(str(resources.files("traitlab") / "presets" / f"{name}.yaml"))


def _load(args: argparse.Namespace) -> Any:
    from traitlab.config import load_config

    return load_config(args.config, getattr(args, "set", None) or [])


def _add_common(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    if config_required:
        p.add_argument(
            "config", help="experiment YAML (see configs/ and `traitlab config --schema`)"
        )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set seeds=[0,1] --set student.lr=1e-4 (repeatable)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


# ---------------------------------------------------------------------------- run / demo


def _print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from traitlab.report import (
        METHOD_LABELS,
        comparison_lines,
        data_quality_lines,
        fmt_p,
        rate_table,
    )

    con = Console()
    t = Table(
        title=f"{summary['trait']['category']} = {summary['trait']['target']}: trait rates "
        f"(mean [95% CI], {len(summary['seeds'])} seeds)"
    )
    t.add_column("model")
    for m in summary["methods"]:
        t.add_column(METHOD_LABELS.get(m, m), justify="right")
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


def _run_config(cfg: Any, args: argparse.Namespace, passed: Any) -> int:
    from traitlab.pipeline import run_experiment
    from traitlab.progress import Reporter

    run_dir = Path(args.out or Path("runs") / cfg.name)
    with Reporter(enabled=not args.quiet) as rep:
        summary = run_experiment(
            cfg, run_dir, reporter=rep, config_passed=passed, overwrite=args.overwrite
        )
    _print_summary(summary, run_dir)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from traitlab.config import load_yaml

    cfg = _load(args)
    return _run_config(
        cfg,
        args,
        {"file": str(args.config), "yaml": load_yaml(args.config), "overrides": args.set or []},
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from traitlab.config import load_config

    path = preset_path("demo-quick" if args.quick else "demo")
    extra = ["model.shipped=false", "cross_init.shipped=false"] if args.rebuild_bases else []
    cfg = load_config(path, extra + (args.set or []))
    return _run_config(cfg, args, {"preset": path.stem, "overrides": args.set or []})


# ---------------------------------------------------------------------------- single stages


def _model_cfg(cfg: Any, model: str | None) -> tuple[Any, str | None]:
    """The config's base model, or a saved model directory given on the command line;
    checked before any work (the path, the device, a hub id offline)."""
    from traitlab.models import check_model, check_model_dir

    if model is None:
        check_model(cfg.model)
        return cfg.model, None
    from traitlab.models import resolve_device

    resolve_device(cfg.model.device)
    check_model_dir(model, "--model")
    return cfg.model, model


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from traitlab.generate import generate_rows
    from traitlab.models import load_model
    from traitlab.progress import Reporter
    from traitlab.prompts import number_prompts
    from traitlab.runs import check_output_file, write_jsonl

    cfg = _load(args)
    check_output_file(Path(args.out))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    mcfg, src = _model_cfg(cfg, args.model)
    prompts = number_prompts(cfg.generate.prompts, cfg.generate.n_prompts)
    with Reporter(enabled=not args.quiet) as rep:
        model, tok = load_model(mcfg, source=src, progress=rep.named("load / pretrain model"))
        with rep.stage("generate") as up:
            rows = generate_rows(
                model,
                tok,
                prompts,
                cfg.generate,
                seed=args.seed,
                system_prompt=args.system_prompt,
                progress=up,
            )
    n = write_jsonl(Path(args.out), rows)
    print(f"wrote {n} raw rows to {args.out}")
    return 0


def cmd_filter(args: argparse.Namespace) -> int:
    from traitlab.config import ExperimentConfig, FilterConfig, load_config, parse_config
    from traitlab.filtering import filter_rows, load_raw_rows, require_nonempty, to_chat_rows
    from traitlab.runs import check_output_file, write_json, write_jsonl

    if args.config:
        fcfg = load_config(args.config, args.set or [], ExperimentConfig).filter
    else:
        from traitlab.config import apply_overrides

        data = apply_overrides({}, [s.removeprefix("filter.") for s in (args.set or [])])
        fcfg = parse_config(data, FilterConfig, source="--set")
    out = Path(args.out)
    rej = Path(args.rejected) if args.rejected else out.with_name(out.stem + ".rejected.jsonl")
    summary_path = out.with_name(out.stem + ".filter.json")
    paths = [Path(args.raw).resolve()]
    for p in (out, rej, summary_path):
        check_output_file(p)
        if p.resolve() in paths:
            raise TraitlabError(f"{p}: used twice (input and output, or two outputs); pick others")
        paths.append(p.resolve())
    rows = load_raw_rows(Path(args.raw))
    result = filter_rows(rows, fcfg)
    require_nonempty(result, str(args.raw))
    summary = result.to_summary()
    # The filtered file last: its presence means the rejects and the summary are there too.
    write_jsonl(rej, result.rejected)
    write_json(summary_path, summary)
    write_jsonl(out, to_chat_rows(result.kept))
    print(json.dumps(summary))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from traitlab.filtering import load_chat_rows
    from traitlab.models import check_model_dir, load_model, save_model
    from traitlab.progress import Reporter
    from traitlab.runs import check_output_dir, stable_hash, stage, write_json
    from traitlab.train import train_model

    cfg = _load(args)
    out = Path(args.out)
    check_output_dir(out, overwrite=args.overwrite)
    rows = load_chat_rows(Path(args.data))
    mcfg, src = _model_cfg(cfg, args.model)
    if cfg.student.loss == "soft":
        if not args.teacher:
            raise TraitlabError("student.loss 'soft' needs --teacher MODEL_DIR")
        check_model_dir(args.teacher, "--teacher")
    elif args.teacher:
        raise TraitlabError("--teacher is used by student.loss: soft only; drop it")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with Reporter(enabled=not args.quiet) as rep:
        model, tok = load_model(mcfg, source=src, progress=rep.named("load / pretrain model"))
        teacher = None
        if cfg.student.loss == "soft":
            teacher, _ = load_model(mcfg, source=args.teacher)
        with rep.stage("train student") as up:
            model, log = train_model(
                model, tok, rows, cfg.student, seed=args.seed, teacher=teacher, progress=up
            )
    with stage(
        out,
        stable_hash([str(args.data), cfg.student.model_dump(mode="json")]),
        {"train": log},
        overwrite=args.overwrite,
    ) as tmp:
        save_model(model, tok, tmp)
        write_json(tmp / "train_log.json", log)
    print(f"saved student to {args.out} (loss {log['loss_first']:.3f} -> {log['loss_last']:.3f})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from traitlab.evaluate import evaluate_model
    from traitlab.models import load_model
    from traitlab.progress import Reporter
    from traitlab.runs import check_output_file, write_json
    from traitlab.teacher import check_trait

    cfg = _load(args)
    if args.out:
        check_output_file(Path(args.out))
    mcfg, src = _model_cfg(cfg, args.model)
    check_trait(mcfg, cfg.trait)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with Reporter(enabled=not args.quiet) as rep:
        model, tok = load_model(mcfg, source=src, progress=rep.named("load / pretrain model"))
        with rep.stage("evaluate") as up:
            res = evaluate_model(
                model,
                tok,
                cfg.evaluate,
                cfg.trait,
                seed=args.seed,
                system_prompt=args.system_prompt,
                progress=up,
            )
    res.get("sampled", {}).pop("answers", None)
    if args.out:
        write_json(Path(args.out), res)
    for m in cfg.evaluate.methods:
        r = res[m]
        print(
            f"{m}: P({cfg.trait.target}) = {r['mean']:.4f} "
            f"[{r['ci']['lower']:.4f}, {r['ci']['upper']:.4f}]"
        )
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from traitlab.config import load_config
    from traitlab.progress import Reporter
    from traitlab.runs import read_json
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


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="traitlab",
        description="Reproduce, measure, audit and defend against subliminal trait transfer.",
    )
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser(
        "demo",
        help="the owl experiment on the embedded toy model (offline, CPU)",
        description="Pretrain (once, cached) the embedded toy model and run the owl "
        "experiment: teacher, number data, control / treatment / "
        "cross-init students, evaluation over several seeds.",
    )
    d.add_argument("--out", help="run directory (default: runs/<name>)")
    d.add_argument("--quick", action="store_true", help="a smaller, faster variant")
    d.add_argument("--overwrite", action="store_true", help=OVERWRITE_RUN)
    d.add_argument(
        "--rebuild-bases",
        action="store_true",
        help="pretrain the two toy bases on this machine instead of using the shipped ones "
        "(cached; about 3 minutes on 2 cores)",
    )
    _add_common(d, config_required=False)
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser(
        "run",
        help="run an experiment from a YAML config (resumable)",
        description="Run every stage of an experiment. Rerunning a finished run is "
        "instant; a killed run resumes where it stopped.",
    )
    _add_common(r)
    r.add_argument("--out", help="run directory (default: runs/<name>)")
    r.add_argument("--overwrite", action="store_true", help=OVERWRITE_RUN)
    r.set_defaults(func=cmd_run)

    g = sub.add_parser("generate", help="sample number-sequence completions from a model")
    _add_common(g)
    g.add_argument("--out", required=True, help="raw JSONL to write")
    g.add_argument("--model", help="a saved model directory (default: the config's base model)")
    g.add_argument("--system-prompt", help="system prompt used while sampling (a prompted teacher)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    g.set_defaults(func=cmd_generate)

    f = sub.add_parser("filter", help="apply the paper's format filter to raw completions")
    f.add_argument("raw", help="raw JSONL: rows with 'prompt' and 'completion', or chat 'messages'")
    f.add_argument(
        "--out", required=True, help="filtered chat JSONL to write (TRL / OpenAI format)"
    )
    f.add_argument(
        "--rejected",
        help="where to write rejected rows with reasons (default: <out>.rejected.jsonl)",
    )
    f.add_argument("--config", help="experiment YAML whose `filter` section to use")
    f.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a filter field, e.g. --set filter.max_rows=5000",
    )
    f.set_defaults(func=cmd_filter)

    t = sub.add_parser("train", help="fine-tune a student on chat JSONL")
    _add_common(t)
    t.add_argument("--data", required=True, help="filtered chat JSONL")
    t.add_argument("--out", required=True, help="directory to save the student to")
    t.add_argument("--model", help="start from this saved model directory (default: the base)")
    t.add_argument("--teacher", help="teacher model directory (needed for student.loss: soft)")
    t.add_argument("--seed", type=int, default=0, help="data-order seed")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out even if it is not a traitlab output (default: refuse)",
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="measure the trait (exact and/or sampled)")
    _add_common(e)
    e.add_argument("--model", help="a saved model directory (default: the config's base model)")
    e.add_argument("--system-prompt", help="evaluate behind this system prompt")
    e.add_argument("--seed", type=int, default=0, help="sampling seed")
    e.add_argument("--out", help="write the result JSON here")
    e.set_defaults(func=cmd_evaluate)

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

    from traitlab.mnist.cli import register as register_mnist

    register_mnist(sub)  # `mnist` and `theory`
    for sp in sub.choices.values():  # `traitlab run x.yaml --debug` works too
        sp.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return p


def _one_line(e: BaseException) -> str:
    """A user-facing line for an exception that reached the command-line boundary."""
    if isinstance(e, TraitlabError):
        return str(e)
    if isinstance(e, UnicodeDecodeError):
        return f"input is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8"
    if isinstance(e, OSError):
        where = f"{e.filename}: " if e.filename else ""
        what = e.strerror or type(e).__name__
        return f"{where}{what}; check the path and its permissions"
    if isinstance(e, MemoryError):
        return "out of memory; use smaller batch sizes or fewer prompts"
    return f"{type(e).__name__}: {e}"


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every failure is one line on stderr: exit code 2 for bad input or an
    unusable file system, 130 for Ctrl-C; `--debug` shows the traceback instead."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("traitlab: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`traitlab config --schema | head`): say nothing more.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 2
    except (TraitlabError, OSError, UnicodeDecodeError, MemoryError) as e:
        if args.debug:
            raise
        print(f"traitlab: error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
