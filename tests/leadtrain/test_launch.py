"""The trainer's entry point as a user types it: ``accelerate launch`` from the venv, and a venv that never holds a
half-working timm/torchvision pair (accelerate's CLI imports timm whenever it is installed)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_timm_imports_or_neither_timm_nor_torchvision_is_installed():
    proc = subprocess.run([sys.executable, "-m", "leadtrain.models.tfv6"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # 1: timm installed but broken
    if proc.stdout.startswith("TFv6 encoders: timm "):
        return
    assert proc.stdout.startswith("TFv6 encoders: built-in ResNets (timm is not installed)")
    assert importlib.util.find_spec("timm") is None and importlib.util.find_spec("torchvision") is None


@pytest.mark.slow  # ~20 s: accelerate's start-up, one epoch of 3 steps
def test_accelerate_launch_pretrain_as_a_user_types_it(make_built_root, tmp_path):
    accelerate = BIN / "accelerate"
    assert accelerate.is_file(), f"no accelerate script beside {sys.executable}: install '.[train]'"
    root = tmp_path / "data" / "carla_leaderboard2"
    make_built_root(root, 8)
    # the README's command (its demo root has 540 frames; this one's 72 take batches of 8), from the data's folder
    cmd = [str(accelerate), "launch", "--num_processes", "1", "--cpu", str(REPO / "leadtrain" / "pretrain.py"),
           "root=data/carla_leaderboard2", "model_size=tiny", "epochs=1", "max_steps_per_epoch=3", "batch_size=8"]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home")}  # no accelerate config of this machine's user
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    logdir = tmp_path / "outputs" / "local_training" / "pretrain"
    state = torch.load(logdir / "model_0000.pth", map_location="cpu", weights_only=True)
    assert state and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert (logdir / "config.json").is_file() and (logdir / "optimizer_0000.pth").is_file()
