#!/usr/bin/env bash
# LEAD's scripts/pretrain.sh: perception pre-training -> outputs/local_training/pretrain.
# Builds (or reuses) the shard set first. Extra key=value arguments override the config, e.g.
#   bash scripts/pretrain.sh epochs=31 batch_size=64 model_size=reference
# Without a GPU the tiny model preset is the default so that a CPU run finishes in minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
ROOT=${LEAD_ROOT:-data/carla_leaderboard2}
SIZE=$("$PY" -c "import torch; print('reference' if torch.cuda.is_available() else 'tiny')")
"$PY" -m leadio.shard --root "$ROOT" --collection full_pretrain --quiet
exec "$PY" leadtrain/pretrain.py root="$ROOT" logdir=outputs/local_training/pretrain model_size="$SIZE" "$@"
