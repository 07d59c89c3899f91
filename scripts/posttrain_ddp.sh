#!/usr/bin/env bash
# Post-training with N processes through accelerate launch (see pretrain_ddp.sh for the CPU note).
# outputs/ is relative to the working directory, as in LEAD.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY=${PYTHON:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python )}
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
N=${NUM_PROCESSES:-$([ "$GPUS" -gt 0 ] && echo "$GPUS" || echo 2)}
exec "$PY" -m accelerate.commands.launch --multi_gpu --num_processes "$N" --num_machines 1 \
    --main_process_port "${MAIN_PORT:-29512}" "$REPO/leadtrain/posttrain.py" logdir=outputs/local_training/posttrain "$@"
