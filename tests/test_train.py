"""leadtrain end to end on CPU: LEAD's checkpoint layout, config round trip, post-training, exact resume
after kill -9, 2-rank DDP, TensorBoard scalars."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from leadio.shard import build_shard_set
from leadtrain.config import ConfigError, TrainingConfig, parse_overrides

REPO = Path(__file__).resolve().parents[1]
FAST = ["model_size=tiny", "batch_size=4", "num_workers=0", "max_steps_per_epoch=4", "log_scalars_frequency=1",
        "log_images_frequency=1000", "backend=cpu"]


@pytest.fixture(scope="module")
def train_root(tmp_path_factory, synth_root_template) -> Path:
    root = tmp_path_factory.mktemp("train") / "data" / "carla_leaderboard2"
    shutil.copytree(synth_root_template, root)
    build_shard_set(root, "full_pretrain", workers=1, samples_per_shard=8, progress=False)
    return root


def _train(script: str, root: Path, logdir: Path, *args: str, wait: bool = True):
    cmd = [sys.executable, str(REPO / "leadtrain" / script), f"root={root}", f"logdir={logdir}",
           f"viz_dir={logdir.parent / 'viz'}", *FAST, *args]
    proc = subprocess.Popen(cmd, cwd=logdir.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_config_overrides_and_errors(tmp_path):
    cfg = TrainingConfig.from_cli(["epochs=3", "log_wandb=true", "epoch_checkpoints_keep=[7,15]", "load_file=null"])
    assert cfg.epochs == 3 and cfg.log_wandb is True and cfg.epoch_checkpoints_keep == [7, 15] and cfg.lr == 3e-4
    with pytest.raises(ConfigError, match=r"unknown key 'epoch'; valid keys: \[.*'epochs'"):
        parse_overrides(["epoch=3"])
    with pytest.raises(ConfigError, match=r"epochs='three': expected int"):
        parse_overrides(["epochs=three"])
    with pytest.raises(ConfigError, match="is not key=value"):
        parse_overrides(["--epochs"])
    with pytest.raises(ConfigError, match="mixed_precision must be auto|bf16|fp16|no"):
        TrainingConfig(mixed_precision="fp8")
    path = cfg.save(tmp_path)
    assert json.loads(path.read_text())["posttrain"] is False  # derived properties are written too
    assert TrainingConfig.load(path) == cfg


def test_pretrain_layout_tensorboard_then_posttrain(train_root, tmp_path):
    pre = tmp_path / "pretrain"
    _train("pretrain.py", train_root, pre, "epochs=3", "epoch_checkpoints_keep=[2]")
    names = sorted(p.name for p in pre.iterdir() if not p.name.startswith("events.out.tfevents"))
    # LEAD: epoch 2 files; epoch 1's model kept because 2 is in epoch_checkpoints_keep (LEAD checks e, not e-1)
    assert names == ["config.json", "gradient_steps_skipped_0002.txt", "model_0001.pth", "model_0002.pth",
                     "optimizer_0002.pth", "resume", "run_summary_rank0.json", "scaler_0002.pth",
                     "scheduler_0002.pth"]
    assert (pre / "gradient_steps_skipped_0002.txt").read_text().strip() == "0"
    saved = TrainingConfig.load(pre / "config.json")
    assert saved.epochs == 3 and saved.model_size == "tiny" and saved.logdir == str(pre)
    assert list((tmp_path / "viz").glob("pretrain_e0000_*.png"))  # at least one image per epoch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(pre))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/total", "lr", "throughput/samples_per_s", "throughput/data_stall_pct",
            "memory/host_max_rss_gb"} <= tags
    assert {"loss/semantic", "loss/depth", "loss/bev_semantic"} <= tags
    assert not any(t.startswith("loss/waypoint") for t in tags)  # pre-training: perception only
    assert len(events.Scalars("loss/total")) == 12  # 3 epochs x 4 steps, logged every step

    post = tmp_path / "posttrain"
    _train("posttrain.py", train_root, post, f"load_file={pre / 'model_0002.pth'}", "epochs=1",
           "max_steps_per_epoch=1", "lr=1e-12")
    cfg = TrainingConfig.load(post / "config.json")
    assert cfg.use_planning_decoder and cfg.collection == "full_posttrain" and cfg.model_size == "tiny"
    assert (post / "model_0000.pth").exists()  # epoch count restarted at 0
    optim = torch.load(post / "optimizer_0000.pth", weights_only=True)
    assert {float(s["step"]) for s in optim["state"].values()} == {1.0}  # a fresh optimizer: one step
    before, after = _weights(pre / "model_0002.pth"), _weights(post / "model_0000.pth")
    # learned weights of everything but the planner (BatchNorm running statistics move with any forward pass)
    backbone = [k for k in before if not k.startswith("planner.") and "running_" not in k
                and "num_batches_tracked" not in k]
    assert backbone and all(torch.allclose(before[k].float(), after[k].float(), atol=1e-6) for k in backbone)
    tags = EventAccumulator(str(post))
    tags.Reload()
    assert any(t.startswith("loss/waypoint") for t in tags.Tags()["scalars"])


def test_kill9_then_continue_gives_the_same_weights(train_root, tmp_path):
    args = ("epochs=2", "max_steps_per_epoch=6", "resume_every_steps=2", "visualize_training=false")
    full = tmp_path / "full" / "run"
    full.parent.mkdir()
    _train("pretrain.py", train_root, full, *args)
    killed = tmp_path / "killed" / "run"
    killed.parent.mkdir()
    proc = _train("pretrain.py", train_root, killed, *args, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            state = torch.load(killed / "resume" / "state.pth", weights_only=True)
            if (state["epoch"], state["step_in_epoch"]) >= (1, 2):
                break
        except (FileNotFoundError, RuntimeError, EOFError, OSError):
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model_0001.pth").exists()
    out = _train("pretrain.py", train_root, killed, *args, "continue_failed_training=true")
    assert "continuing from" in out
    a, b = _weights(full / "model_0001.pth"), _weights(killed / "model_0001.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_rank_ddp_on_cpu(train_root, tmp_path):
    logdir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--main_process_port", str(29600 + os.getpid() % 300),
           str(REPO / "leadtrain" / "pretrain.py"), f"root={train_root}", f"logdir={logdir}",
           f"viz_dir={tmp_path / 'viz'}", *FAST, "epochs=2", "visualize_training=false"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summaries = [json.loads((logdir / f"run_summary_rank{r}.json").read_text()) for r in (0, 1)]
    assert summaries[0]["global_steps"] == summaries[1]["global_steps"] == 8
    assert summaries[0]["weights_sha256"] == summaries[1]["weights_sha256"]
