"""`traitlab ...`: a thin command line over the Python API.

Every failure reaches `main` and becomes one line on stderr: exit code 2 for bad input or an
unusable file system, 130 for Ctrl-C. `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from traitlab.cli.common import preset_path  # noqa: F401 - the CLI's preset lookup
from traitlab.core.errors import TraitlabError

# Idle OpenMP threads busy-wait by default; on a shared 2-core machine that made small-model
# training 10-30x slower. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def build_parser() -> argparse.ArgumentParser:
    from traitlab.cli import audit, run, serve, stages, sweep
    from traitlab.mnist.cli import register as register_mnist

    p = argparse.ArgumentParser(
        prog="traitlab",
        description="Reproduce, measure, audit and defend against subliminal trait transfer.",
    )
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run.register(sub)  # demo, run, pretrain, config
    stages.register(sub)  # generate, filter, train, evaluate
    serve.register(sub)  # serve
    audit.register(sub)  # audit
    sweep.register(sub)  # sweep
    register_mnist(sub)  # mnist, theory
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
