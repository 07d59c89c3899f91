#!/usr/bin/env bash
# LEAD's scripts/posttrain.sh: planning post-training from the newest pre-training checkpoint
# -> outputs/local_training/posttrain. Extra key=value arguments override the inherited pretrain config.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
exec "$PY" leadtrain/posttrain.py logdir=outputs/local_training/posttrain "$@"
