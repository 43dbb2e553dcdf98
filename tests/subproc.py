"""The environment for tests that start `python -m traitlab` in a subprocess."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# src first, the caller's PYTHONPATH kept: where packages come from it (wheels carried to a
# machine on PYTHONPATH), replacing it hid them from the subprocesses.
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
}
