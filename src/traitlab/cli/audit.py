"""`traitlab audit`: find a hidden trait in a dataset (or a trained model) before training.

    traitlab audit DATA.jsonl --base toy --out audit/            # a dataset
    traitlab audit --model STUDENT_DIR --base toy --out audit/   # a model

`--base`, `--model` and `--teacher` take `toy` (the shipped toy Llama, seed 1), `toy:SEED`, a saved
model directory (traitlab's, or any Hugging Face one), a model-spec YAML (any backend, e.g.
a served model) or a hub id.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from traitlab.core.errors import TraitlabError


def model_arg(text: str, what: str) -> Any:
    """A ModelRef for a --base / --model / --teacher argument, checked before any work."""
    from traitlab.config.base import load_yaml
    from traitlab.config.model import ToyModel, model_spec
    from traitlab.lm.base import MODEL_FILE, ModelRef, resolve

    if text == "toy" or text.startswith("toy:"):
        seed = text.partition(":")[2]
        if seed and not seed.lstrip("-").isdigit():
            raise TraitlabError(f"{what} {text}: expected toy or toy:SEED (an integer)")
        return resolve(ToyModel(toy={"seed": int(seed)} if seed else {}))
    path = Path(text)
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return ModelRef.load(path)
        if not (path / "config.json").is_file():
            raise TraitlabError(
                f"{what} {text}: not a model directory (no model.json or config.json)"
            )
        return resolve(model_spec(name=str(path.resolve())))
    if path.suffix in (".yaml", ".yml"):
        data = load_yaml(path)
        try:
            spec = model_spec(data if isinstance(data, dict) else {})
        except Exception as e:  # pydantic's message, shortened to its first line
            raise TraitlabError(
                f"{what} {text}: not a model spec ({str(e).splitlines()[0]})"
            ) from None
        return resolve(spec)
    if path.exists() or text.startswith((".", "/")) or text.count("/") != 1:
        raise TraitlabError(
            f"{what} {text}: no such model directory; pass toy, toy:SEED, a model directory, "
            "a model-spec YAML or a hub id (owner/name)"
        )
    return resolve(model_spec(name=text))


def _config(args: argparse.Namespace) -> Any:
    from traitlab.audit.config import AuditConfig
    from traitlab.config.base import apply_overrides, load_config, parse_config

    if args.config:
        return load_config(args.config, AuditConfig, args.set or [])
    return parse_config(apply_overrides({}, args.set or []), AuditConfig, source="--set")


def _check_out(out: Path, overwrite: bool) -> None:
    from traitlab.core.outputs import check_output_dir

    if (out / "audit.json").is_file():  # an earlier audit: ours to replace
        overwrite = True
    check_output_dir(out, overwrite=overwrite)


def cmd_audit(args: argparse.Namespace) -> int:
    from traitlab.audit.run import audit_dataset, audit_model
    from traitlab.core.progress import Reporter
    from traitlab.data.rows import load_chat_rows

    if args.schema:
        import json

        from traitlab.audit.config import AuditConfig

        print(json.dumps(AuditConfig.model_json_schema(), indent=1))
        return 0
    if not args.base or not args.out:
        raise TraitlabError("traitlab audit needs --base MODEL and --out DIR")
    cfg = _config(args)
    out = Path(args.out)
    _check_out(out, args.overwrite)
    if (args.data is None) == (args.model is None):
        raise TraitlabError("give a dataset (DATA.jsonl) or --model STUDENT, not both or neither")
    if args.model is not None and (args.reference or args.teacher):
        raise TraitlabError("--reference and --teacher audit a dataset; drop them with --model")
    rows = load_chat_rows(Path(args.data)) if args.data else None
    reference = load_chat_rows(Path(args.reference)) if args.reference else None
    base = model_arg(args.base, "--base")
    teacher = model_arg(args.teacher, "--teacher") if args.teacher else None
    student = model_arg(args.model, "--model") if args.model else None
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with Reporter(enabled=not args.quiet) as rep:
            if rows is not None:
                audit = audit_dataset(
                    rows, base, cfg, out, reference=reference, teacher=teacher, progress=rep
                )
            else:
                audit = audit_model(student, base, cfg, out, progress=rep)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()  # nothing half-written: a failed first audit leaves no directory
        raise
    v = audit["verdict"]
    if v.get("flag"):
        print(
            f"FLAG: the data moves the base towards '{v['trait']}' ({v['probe']}; "
            f"{v['detector']} z = {v['z']:.2f} > {v['threshold']}); report: {out / 'report.html'}"
        )
    else:
        top = f"top option '{v['trait']}', z = {v['z']:.2f}" if v.get("trait") else v.get("reason")
        print(f"no flag ({top}; threshold {v.get('threshold')}); report: {out / 'report.html'}")
    return 0


def register(sub: Any) -> None:
    a = sub.add_parser("audit", help="audit a dataset (or a model) for a hidden trait")
    a.add_argument("data", nargs="?", help="chat JSONL to audit (the format traitlab writes)")
    a.add_argument("--base", help="the model you mean to fine-tune (required)")
    a.add_argument("--model", help="audit this trained model against --base instead of data")
    a.add_argument("--reference", help="the base's own completions of the same prompts")
    a.add_argument("--teacher", help="the model that wrote the data, if you have it")
    a.add_argument("--out", help="directory for audit.json and report.html (required)")
    a.add_argument("--config", help="audit YAML (fields: `traitlab audit --schema`)")
    a.add_argument(
        "--schema", action="store_true", help="print the audit config's JSON schema and exit"
    )
    a.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field")
    a.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    a.add_argument("--quiet", action="store_true", help="no progress bars")
    a.set_defaults(func=cmd_audit)
