#!/usr/bin/env bash
# Pre-training with N processes through accelerate launch (NUM_PROCESSES, default: GPUs, or 2 on CPU).
# Paths (LEAD_ROOT, default data/carla_leaderboard2, and outputs/) are relative to the working directory.
# On a CPU-only machine `accelerate launch --cpu --num_processes 2` silently runs ONE process (checked with
# accelerate 1.15); --multi_gpu spawns the N ranks, and without a GPU they run on CPU with gloo (MULTI_CPU).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY=${PYTHON:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python )}
ROOT=${LEAD_ROOT:-data/carla_leaderboard2}
if [ ! -d "$ROOT/data" ]; then
    echo "error: no LEAD routes in $ROOT/data (relative to $(pwd)); run from the folder holding" \
         "data/carla_leaderboard2, or set LEAD_ROOT=<dataset root>" >&2
    exit 2
fi
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
N=${NUM_PROCESSES:-$([ "$GPUS" -gt 0 ] && echo "$GPUS" || echo 2)}
SIZE=$([ "$GPUS" -gt 0 ] && echo reference || echo tiny)
"$PY" -m leadio.shard --root "$ROOT" --collection full_pretrain --quiet
exec "$PY" -m accelerate.commands.launch --multi_gpu --num_processes "$N" --num_machines 1 \
    --main_process_port "${MAIN_PORT:-29511}" "$REPO/leadtrain/pretrain.py" root="$ROOT" \
    logdir=outputs/local_training/pretrain model_size="$SIZE" "$@"
