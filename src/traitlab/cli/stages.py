"""`traitlab generate`, `filter`, `train` and `evaluate`: one stage at a time.

Every input and output is checked before any work; the model (the config's, or a saved
directory given with --model) is opened through its backend.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from traitlab.cli.common import add_common, add_model_options, load
from traitlab.core.errors import TraitlabError


def model_ref(cfg: Any, model: str | None, rep: Any = None) -> Any:
    """The model a stage command runs: a saved directory (--model), else the config's base
    resolved by its backend. Checked before any work (the path, the device, a hub id)."""
    from traitlab.core.device import resolve_device
    from traitlab.core.files import stable_hash
    from traitlab.lm.base import ModelRef, backend_for

    spec = cfg.model
    if model is None:
        backend_for(spec).check(spec)
        progress = rep.named("prepare model") if rep is not None else None
        return backend_for(spec).resolve(spec, progress=progress)
    from traitlab.lm.hf.loading import check_model_dir

    resolve_device(getattr(spec, "device", "auto"))
    path = check_model_dir(model, "--model").resolve()
    return ModelRef(
        backend=spec.backend,
        id=str(path),
        key=stable_hash({"dir": str(path)}),
        spec=spec.model_dump(mode="json"),
    )


def check_model(cfg: Any, model: str | None) -> None:
    """Check the model a command will run before anything is pretrained or written."""
    from traitlab.lm.base import backend_for

    if model is None:
        backend_for(cfg.model).check(cfg.model)
    else:
        model_ref(cfg, model)


def _threads(cfg: Any) -> None:
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)


def cmd_generate(args: argparse.Namespace) -> int:
    from traitlab.core.progress import Reporter
    from traitlab.core.runs import check_output_file, write_jsonl
    from traitlab.data.generate import generate_rows
    from traitlab.data.modalities import modality_prompts
    from traitlab.lm.base import opened

    cfg = load(args)
    check_output_file(Path(args.out))
    check_model(cfg, args.model)
    _threads(cfg)
    prompts = modality_prompts(cfg.generate)[0]
    with Reporter(enabled=not args.quiet) as rep:
        ref = model_ref(cfg, args.model, rep)
        with opened(ref) as lm, rep.stage("generate") as up:
            rows = generate_rows(
                lm,
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
    from traitlab.config import (
        ExperimentConfig,
        FilterConfig,
        apply_overrides,
        load_config,
        parse_config,
    )
    from traitlab.core.device import cache_dir
    from traitlab.core.runs import check_output_file, write_json, write_jsonl
    from traitlab.data.filtering import filter_rows, require_nonempty
    from traitlab.data.modalities import open_screen
    from traitlab.data.rows import load_raw_rows, to_chat_rows
    from traitlab.traits.preference import banned_words

    cfg = None
    if args.config:  # the experiment's modality (its rules and judge) and filter
        cfg = load_config(args.config, args.set or [], ExperimentConfig)
        fcfg = cfg.filter
    else:
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
    if cfg is None:
        result = filter_rows(rows, fcfg)
    else:
        words = banned_words(cfg.generate.modality.name, cfg.trait, fcfg.banned_words)
        with open_screen(cfg, len(rows), cache_dir() / "judges", words) as screen:
            result = filter_rows(rows, fcfg, screen=screen)
    require_nonempty(result, str(args.raw))
    summary = result.to_summary()
    # The filtered file last: its presence means the rejects and the summary are there too.
    write_jsonl(rej, result.rejected)
    write_json(summary_path, summary)
    write_jsonl(out, to_chat_rows(result.kept))
    print(json.dumps(summary))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from traitlab.core.progress import Reporter
    from traitlab.core.runs import check_output_dir, stable_hash, stage, write_json
    from traitlab.data.rows import load_chat_rows
    from traitlab.lm.base import ModelRef, opened
    from traitlab.lm.hf.loading import check_model_dir

    cfg = load(args)
    out = Path(args.out)
    check_output_dir(out, overwrite=args.overwrite)
    rows = load_chat_rows(Path(args.data))
    teacher = None
    if cfg.student.loss == "soft":
        if not args.teacher:
            raise TraitlabError("student.loss 'soft' needs --teacher MODEL_DIR")
        path = check_model_dir(args.teacher, "--teacher").resolve()
        teacher = ModelRef(
            backend=cfg.model.backend,
            id=str(path),
            key=stable_hash({"dir": str(path)}),
            spec=cfg.model.model_dump(mode="json"),
        )
    elif args.teacher:
        raise TraitlabError("--teacher is used by student.loss: soft only; drop it")
    check_model(cfg, args.model)
    _threads(cfg)
    key = stable_hash([str(args.data), cfg.student.model_dump(mode="json")])
    with Reporter(enabled=not args.quiet) as rep:
        ref = model_ref(cfg, args.model, rep)
        info: dict[str, Any] = {}
        with (
            opened(ref) as lm,
            rep.stage("train student") as up,
            stage(out, key, info, overwrite=args.overwrite) as tmp,
        ):
            _, log = lm.finetune(
                rows,
                cfg.student,
                seed=args.seed,
                out_dir=tmp,
                key=key,
                teacher=teacher,
                progress=up,
            )
            info["train"] = log
            write_json(tmp / "train_log.json", log)
    print(f"saved student to {args.out} (loss {log['loss_first']:.3f} -> {log['loss_last']:.3f})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from traitlab.core.device import cache_dir
    from traitlab.core.progress import Reporter
    from traitlab.core.runs import check_output_file, write_json
    from traitlab.evaluate.judged import eval_judges
    from traitlab.evaluate.suite import evaluate_model
    from traitlab.lm.base import opened
    from traitlab.traits.teacher import check_trait

    cfg = load(args)
    if args.out:
        check_output_file(Path(args.out))
    check_model(cfg, args.model)
    check_trait(cfg.model, cfg.trait)
    _threads(cfg)
    with Reporter(enabled=not args.quiet) as rep, contextlib.ExitStack() as stack:
        ref = model_ref(cfg, args.model, rep)
        # As the pipeline's evaluate stage: judges opened once, their verdicts cached.
        judges = stack.enter_context(eval_judges(cfg.evaluate))
        with opened(ref) as lm, rep.stage("evaluate") as up:
            res = evaluate_model(
                lm,
                cfg.evaluate,
                cfg.trait,
                seed=args.seed,
                system_prompt=args.system_prompt,
                progress=up,
                judges=judges,
                judge_cache=cache_dir() / "judges",
            )
    if args.out:
        write_json(Path(args.out), res.to_json())
    for m in cfg.evaluate.methods:
        r = getattr(res, m)
        print(f"{m}: P({res.target}) = {r.mean:.4f} [{r.ci['lower']:.4f}, {r.ci['upper']:.4f}]")
    return 0


def register(sub: Any) -> None:
    g = sub.add_parser("generate", help="sample number-sequence completions from a model")
    add_common(g)
    g.add_argument("--out", required=True, help="raw JSONL to write")
    add_model_options(g)
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
    add_common(t)
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
    add_common(e)
    add_model_options(e)
    e.add_argument("--out", help="write the result JSON here")
    e.set_defaults(func=cmd_evaluate)
