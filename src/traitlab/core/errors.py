"""User-facing errors.

A `TraitlabError` is a problem with what the user gave us (a config, a file, a model path),
not a bug. The CLI prints its message as one line and exits with code 2, no traceback.
Messages should name the problem *and* what to do about it.
"""

from __future__ import annotations


class TraitlabError(Exception):
    """Bad input: printed as one line by the CLI, exit code 2."""
