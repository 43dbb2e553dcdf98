#!/usr/bin/env bash
# Set everything up, lint, then run the test suite (fast + tiny-model tiers; no GPU, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy
set +e
# Two pytest workers (pytest-xdist): most tests keep one core busy at a time (a server and its
# client, a spawned CLI waiting on its workers), so two share a 2-core CI machine well.
# TRAITLAB_TEST_WORKERS=0 runs them in one process.
.venv/bin/python -m pytest -q -n "${TRAITLAB_TEST_WORKERS:-2}" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
