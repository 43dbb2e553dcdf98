"""What every command shares: presets, config loading, the common options."""

from __future__ import annotations

import argparse
from typing import Any

from traitlab.config.presets import PRESETS, preset_path  # noqa: F401 - the CLI's presets

OVERWRITE_RUN = (
    "write into --out even if it is a non-empty directory that is not a traitlab run "
    "(default: refuse)"
)


def load(args: argparse.Namespace) -> Any:
    from traitlab.config import load_config

    return load_config(args.config, getattr(args, "set", None) or [])


def add_common(p: argparse.ArgumentParser, config_required: bool = True) -> None:
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


def add_model_options(p: argparse.ArgumentParser, *, system_prompt: bool = True) -> None:
    p.add_argument("--model", help="a saved model directory (default: the config's base model)")
    if system_prompt:
        p.add_argument("--system-prompt", help="system prompt used while sampling")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
