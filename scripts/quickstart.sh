#!/usr/bin/env bash
# Quick start: set up, then pretrain SimCLR on MNIST (GPU if present, else CPU) and evaluate it.
# Extra arguments go to `contrastkit train`, e.g. `bash scripts/quickstart.sh --epochs 1`.
# Every run gets a folder of its own, so the command can be run again: runs/quickstart, then
# runs/quickstart-2, runs/quickstart-3, ...
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=runs/quickstart
number=1
while [ -e "$out" ]; do
    number=$((number + 1))
    out=runs/quickstart-$number
done
exec .venv/bin/contrastkit train --out "$out" "$@"
