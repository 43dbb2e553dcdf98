#!/usr/bin/env bash
# Create .venv and install traitlab with its test tools. Idempotent.
# torch is pinned to the CPU build in constraints/cpu.txt: a fast, reproducible CPU setup.
# For a GPU, `pip install -e .` into your own environment instead (the package pins nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install -q -c constraints/cpu.txt torch
.venv/bin/python -m pip install -q -c constraints/cpu.txt -e ".[dev]"
