#!/usr/bin/env bash
# Post-training with N processes through accelerate launch (see pretrain_ddp.sh for the CPU note and the port).
# outputs/ is relative to the working directory, as in LEAD.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY=${PYTHON:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python )}
for a in "$@"; do
    if [ "$a" = "--help" ] || [ "$a" = "-h" ]; then exec "$PY" "$REPO/leadtrain/posttrain.py" --help; fi
done
ARGS=(logdir=outputs/local_training/posttrain "$@")
"$PY" "$REPO/leadtrain/posttrain.py" --check "${ARGS[@]}" || exit $?  # one line per mistake, before the launch
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
N=${NUM_PROCESSES:-$([ "$GPUS" -gt 0 ] && echo "$GPUS" || echo 2)}
PORT=${MAIN_PORT:-$("$PY" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')}
exec "$PY" -m accelerate.commands.launch --multi_gpu --num_processes "$N" --num_machines 1 \
    --main_process_port "$PORT" "$REPO/leadtrain/posttrain.py" "${ARGS[@]}"
