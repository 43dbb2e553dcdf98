"""`traitlab serve`: an OpenAI-compatible HTTP server over a local model (see traitlab.serve)."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_serve(args: argparse.Namespace) -> int:
    from traitlab.serve.app import serve_from_args

    return serve_from_args(args)


def register(sub: Any) -> None:
    s = sub.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API (chat, logprobs, fine-tuning)",
        description="An OpenAI-compatible server (/v1/models, /v1/chat/completions with "
        "logprobs, /v1/files, /v1/fine_tuning/jobs with events) over the toy model, a config's "
        "model or any HF model directory; fine-tuning jobs run traitlab's own trainer. Point "
        "traitlab's openai backend, inspect_ai or any OpenAI client at it.",
    )
    s.add_argument(
        "model",
        nargs="?",
        default="toy",
        help="'toy' (the shipped toy Llama, seed 1), an experiment YAML (its model), or a model "
        "directory",
    )
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field")
    s.add_argument("--name", help="the model id clients ask for (default: toy, or the dir name)")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    s.add_argument("--port", type=int, default=8000, help="port (0: a free one, printed)")
    s.add_argument("--state", help="directory for uploaded files and fine-tuned models")
    s.add_argument("--lr-unit", type=float, default=1e-4, help="lr of multiplier 1")
    s.add_argument(
        "--fail-rate", type=float, default=0.0, help="fault injection: share of 5xx answers"
    )
    s.add_argument(
        "--latency", type=float, default=0.0, help="fault injection: seconds added per request"
    )
    s.add_argument(
        "--drop-connection",
        type=float,
        default=0.0,
        help="fault injection: share of requests whose connection is dropped without an answer",
    )
    s.add_argument("--fault-seed", type=int, default=0, help="seed of the injected faults")
    s.add_argument("--quiet", action="store_true", help="no request log")
    s.set_defaults(func=cmd_serve)
