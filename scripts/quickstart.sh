#!/usr/bin/env bash
# Quick start: set up, then pretrain SimCLR on MNIST (GPU if present, else CPU) and evaluate it.
# Extra arguments go to `contrastkit train`, e.g. `bash scripts/quickstart.sh --epochs 1`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/contrastkit train --out runs/quickstart "$@"
