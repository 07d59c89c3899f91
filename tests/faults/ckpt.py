"""``python ckpt.py LOGDIR``: write epoch 0's checkpoint files and a resume state from fixed tensors (what
leadtrain's loop writes at an epoch end), for the kill points of checkpoint and resume-state saves."""

from __future__ import annotations

import sys
from pathlib import Path

import torch


def states() -> dict:
    g = torch.Generator().manual_seed(0)
    model = {f"layer{i}.weight": torch.randn(64, 64, generator=g) for i in range(8)}
    return {"model": model, "optimizer": {"state": {0: {"exp_avg": torch.randn(64, generator=g)}}, "param_groups": []},
            "scheduler": {"last_epoch": 3}, "scaler": {}}


def write(logdir: Path) -> None:
    from leadtrain.checkpoint import save_epoch_checkpoint, save_resume_state

    s = states()
    logdir.mkdir(parents=True, exist_ok=True)
    save_epoch_checkpoint(logdir, 0, s, 0)
    save_resume_state(logdir, {**s, "epoch": 1, "step_in_epoch": 0, "skipped": 0})


if __name__ == "__main__":
    write(Path(sys.argv[1]))
