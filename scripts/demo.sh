#!/usr/bin/env bash
# Set everything up, then run the owl demo on the embedded toy model (offline, CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/traitlab demo "$@"
