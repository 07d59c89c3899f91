#!/usr/bin/env bash
# LEAD's scripts/posttrain.sh: planning post-training from the newest pre-training checkpoint
# (outputs/local_training/pretrain, relative to the working directory) -> outputs/local_training/posttrain.
# Extra key=value arguments override the inherited pretrain config; --help lists every key.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY=${PYTHON:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python )}
exec "$PY" "$REPO/leadtrain/posttrain.py" logdir=outputs/local_training/posttrain "$@"
