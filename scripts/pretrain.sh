#!/usr/bin/env bash
# LEAD's scripts/pretrain.sh: perception pre-training -> outputs/local_training/pretrain.
# Run it as LEAD's guide does, from the folder holding data/carla_leaderboard2: the dataset root (LEAD_ROOT,
# default data/carla_leaderboard2) and outputs/ are relative to the working directory, never to this repo.
# Builds (or reuses) the shard set first. Extra key=value arguments override the config, e.g.
#   bash scripts/pretrain.sh epochs=31 batch_size=64 model_size=reference
# Without a GPU the tiny model preset is the default so that a CPU run finishes in minutes.
# --help lists every key; a mistake prints one line and exits with 2, before anything is built or moved.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY=${PYTHON:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python )}
for a in "$@"; do
    if [ "$a" = "--help" ] || [ "$a" = "-h" ]; then exec "$PY" "$REPO/leadtrain/pretrain.py" --help; fi
done
ROOT=${LEAD_ROOT:-data/carla_leaderboard2}
if [ ! -d "$ROOT/data" ]; then
    echo "error: no LEAD routes in $ROOT/data (relative to $(pwd)); run from the folder holding" \
         "data/carla_leaderboard2, or set LEAD_ROOT=<dataset root>" >&2
    exit 2
fi
SIZE=$("$PY" -c "import torch; print('reference' if torch.cuda.is_available() else 'tiny')")
ARGS=(root="$ROOT" logdir=outputs/local_training/pretrain model_size="$SIZE" "$@")
# Check the key=value arguments before the (long) shard build; an existing set keeps its shard size.
"$PY" "$REPO/leadtrain/pretrain.py" --check "${ARGS[@]}" || exit $?
"$PY" -m leadio.shard --root "$ROOT" --collection full_pretrain --quiet
exec "$PY" "$REPO/leadtrain/pretrain.py" "${ARGS[@]}"
