#!/usr/bin/env bash
# Pre-training with N processes through accelerate launch (NUM_PROCESSES, default: GPUs, or 2 on CPU).
# Paths (LEAD_ROOT, default data/carla_leaderboard2, and outputs/) are relative to the working directory.
# On a CPU-only machine `accelerate launch --cpu --num_processes 2` silently runs ONE process (checked with
# accelerate 1.15); --multi_gpu spawns the N ranks, and without a GPU they run on CPU with gloo (MULTI_CPU).
# The rendezvous port is a free one (MAIN_PORT to choose it), so two runs on one machine do not collide.
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
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
N=${NUM_PROCESSES:-$([ "$GPUS" -gt 0 ] && echo "$GPUS" || echo 2)}
SIZE=$([ "$GPUS" -gt 0 ] && echo reference || echo tiny)
ARGS=(root="$ROOT" logdir=outputs/local_training/pretrain model_size="$SIZE" "$@")
"$PY" "$REPO/leadtrain/pretrain.py" --check "${ARGS[@]}" || exit $?  # one line per mistake, before the build
"$PY" -m leadio.shard --root "$ROOT" --collection full_pretrain --quiet
PORT=${MAIN_PORT:-$("$PY" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')}
exec "$PY" -m accelerate.commands.launch --multi_gpu --num_processes "$N" --num_machines 1 \
    --main_process_port "$PORT" "$REPO/leadtrain/pretrain.py" "${ARGS[@]}"
