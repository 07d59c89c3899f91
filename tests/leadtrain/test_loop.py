"""leadtrain.loop: end to end on CPU (LEAD's checkpoint layout, TensorBoard scalars, post-training, exact resume
after kill -9, 2-rank DDP), a non-finite loss stopping the run before any checkpoint, and the ``channel_last`` /
``compile`` keys."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate.utils import extract_model_from_parallel
from leadtrain_batches import SMALL, leadio_batch

from leadio.lead import to_lead_batch
from leadtrain.config import TrainingConfig
from leadtrain.loop import compiled, planning_metrics, run, to_channels_last
from leadtrain.models import MODELS
from leadtrain.models.compact import CompactConfig, CompactModel
from leadtrain.models.tfv6 import TFv6

REPO = Path(__file__).resolve().parents[2]

FAST = ["model_size=tiny", "batch_size=4", "num_workers=0", "max_steps_per_epoch=4", "log_scalars_frequency=1",
        "log_images_frequency=1000", "backend=cpu"]


@pytest.fixture(scope="module")
def train_root(tmp_path_factory, make_built_root) -> Path:
    root = tmp_path_factory.mktemp("train") / "data" / "carla_leaderboard2"
    make_built_root(root, 8)
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


@pytest.mark.slow  # > 60 s on 2 cores
def test_pretrain_layout_tensorboard_then_posttrain(train_root, tmp_path):
    pre = tmp_path / "pretrain"
    _train("pretrain.py", train_root, pre, "epochs=3", "epoch_checkpoints_keep=[2]")
    names = sorted(p.name for p in pre.iterdir() if not p.name.startswith("events.out.tfevents"))
    # LEAD: epoch 2 files; epoch 1's model kept because 2 is in epoch_checkpoints_keep (LEAD checks e, not e-1)
    assert names == ["checksums.json", "config.json", "gradient_steps_skipped_0002.txt", "model_0001.pth",
                     "model_0002.pth", "optimizer_0002.pth", "resume", "run_summary_rank0.json", "scaler_0002.pth",
                     "scheduler_0002.pth"]
    recorded = json.loads((pre / "checksums.json").read_text())["files"]  # the files of now, none deleted since
    assert sorted(recorded) == ["gradient_steps_skipped_0002.txt", "model_0001.pth", "model_0002.pth",
                                "optimizer_0002.pth", "scaler_0002.pth", "scheduler_0002.pth"]
    assert (pre / "gradient_steps_skipped_0002.txt").read_text().strip() == "0"
    saved = TrainingConfig.load(pre / "config.json")
    assert saved.epochs == 3 and saved.model == "compact" and saved.model_size == "tiny" and saved.logdir == str(pre)
    assert list((tmp_path / "viz" / "pretrain").glob("pretrain_e0000_*.png"))  # at least one image per epoch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(pre))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"scaled_loss/total", "debug/lr_0", "debug/epoch", "debug/gradient_steps_skipped",
            "debug/average_loading_time", "throughput/samples_per_s", "throughput/data_stall_pct",
            "memory/host_max_rss_gb"} <= tags  # the reference's tags plus ours
    assert {"unscaled_loss/semantic", "unscaled_loss/depth", "scaled_loss/bev_semantic"} <= tags
    assert not any(t.startswith("unscaled_loss/waypoint") for t in tags)  # pre-training: perception only
    assert len(events.Scalars("scaled_loss/total")) == 12  # 3 epochs x 4 steps, logged every step

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
    assert any(t.startswith("unscaled_loss/waypoint") for t in tags.Tags()["scalars"])


@pytest.mark.slow  # > 60 s on 2 cores
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
    assert (proc.stdout + proc.stderr).count("done: 2 epochs") == 1  # rank 0 reports, once


def test_the_reference_train_py_form_logs_every_epoch_and_metrics_for_the_compact_model(train_root, tmp_path):
    """``python leadtrain/train.py logdir=...`` then ``... load_file=... use_planning_decoder=true`` (the
    reference's current guide); scalars on each epoch's last step even when ``log_scalars_frequency`` exceeds
    the epoch, ``epoch/*`` per epoch, and ``metric/*`` for the compact model's waypoints and route."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    pre, post = tmp_path / "pretrain", tmp_path / "posttrain"
    args = ["model_size=tiny", "batch_size=4", "num_workers=0", "max_steps_per_epoch=2", "backend=cpu",
            "log_scalars_frequency=50", "visualize_training=false", f"root={train_root}"]
    for cmd in ([f"logdir={pre}", "epochs=2"],
                [f"logdir={post}", f"load_file={pre / 'model_0001.pth'}", "use_planning_decoder=true", "epochs=1"]):
        proc = subprocess.run([sys.executable, str(REPO / "leadtrain" / "train.py"), *args, *cmd], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert TrainingConfig.load(post / "config.json").collection == "full_posttrain"
    assert (post / "model_0000.pth").exists() and (pre / "model_0001.pth").exists()
    events = EventAccumulator(str(pre))
    events.Reload()
    assert [e.step for e in events.Scalars("scaled_loss/total")] == [2, 4]  # each epoch's last step
    assert [e.step for e in events.Scalars("epoch/loss_total")] == [2, 4]
    assert {"epoch/seconds", "epoch/samples_per_s", "epoch/data_stall_pct", "epoch/samples_skipped"} <= set(
        events.Tags()["scalars"])
    events = EventAccumulator(str(post))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"metric/waypoints_ade", "metric/waypoints_fde", "metric/route_ade", "metric/route_fde"} <= tags
    assert all(math.isfinite(e.value) and e.value >= 0 for e in events.Scalars("metric/waypoints_ade"))


def test_planning_metrics_are_l2_over_the_samples_with_targets():
    batch = {"waypoints": torch.tensor([[[0.0, 0.0], [3.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]]),
             "has_targets": torch.tensor([1, 0])}
    pred = {"waypoints": torch.zeros(2, 2, 2)}
    metrics = {"metric/route_ade": 7.0}
    planning_metrics(pred, batch, metrics)
    assert metrics == {"metric/route_ade": 7.0, "metric/waypoints_ade": 2.5, "metric/waypoints_fde": 5.0}
    planning_metrics({"waypoints": torch.ones(2, 2, 2)}, batch, metrics)  # a model's own values are kept
    assert metrics["metric/waypoints_ade"] == 2.5


def test_a_non_finite_loss_stops_the_run_naming_its_first_step_before_any_checkpoint(train_root, tmp_path, monkeypatch):
    compact, calls = MODELS["compact"], itertools.count()

    def nan_on_step_2(model, pred, data, metrics):  # a model whose depth loss turns NaN on the third step
        losses = compact.losses(model, pred, data, metrics)
        if next(calls) == 2:
            losses["depth"] = losses["depth"] * float("nan")
        return losses

    monkeypatch.setitem(MODELS, "nan_model", dataclasses.replace(compact, name="nan_model", losses=nan_on_step_2))
    logdir = tmp_path / "nan"
    cfg = TrainingConfig(model="nan_model", model_size="tiny", root=str(train_root), logdir=str(logdir),
                         viz_dir=str(tmp_path / "viz"), batch_size=4, num_workers=0, max_steps_per_epoch=4,
                         backend="cpu", epochs=1, log_scalars_frequency=50, visualize_training=False,
                         resume_every_minutes=0)
    # not a logged step: found at the epoch end, which names the first NaN step (later ones are NaN too)
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 0 step 2: \{'semantic': .*'depth': nan"):
        run(cfg)
    assert next(calls) == 4  # the epoch ran on without a host sync per step
    assert not list(logdir.glob("model_*.pth")) and not (logdir / "resume").exists()


def _convs_channels_last(model: torch.nn.Module) -> list[bool]:
    """Per 3x3+ conv weight with more than one input channel (else both layouts coincide): channels_last?"""
    return [p.is_contiguous(memory_format=torch.channels_last)
            for p in model.parameters() if p.ndim == 4 and p.shape[2:] != (1, 1) and p.shape[1] > 1]


def test_channel_last_converts_the_weights_and_keeps_the_outputs():
    torch.manual_seed(0)
    b = leadio_batch(1, (64, 192))
    model = CompactModel(CompactConfig.preset("tiny")).eval()
    assert to_channels_last(TrainingConfig(model="compact"), model) is model  # off: unchanged
    assert not any(_convs_channels_last(model))
    reference = copy.deepcopy(model)
    model = to_channels_last(TrainingConfig(model="compact", channel_last=True), model)
    assert all(_convs_channels_last(model))
    with torch.no_grad():
        got, want = model(b), reference(b)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-4)

    tfv6 = TFv6(SMALL, encoder_backend="auto").eval()
    tfv6_ref = copy.deepcopy(tfv6)
    tfv6 = to_channels_last(TrainingConfig(model="tfv6", tfv6=SMALL, channel_last=True), tfv6)
    assert tfv6.backbone.channels_last and all(_convs_channels_last(tfv6))
    data = to_lead_batch(b)
    with torch.no_grad():
        got, want = tfv6(data), tfv6_ref(data)
    for k in ("pred_semantic", "pred_depth", "pred_bev_semantic"):
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-3)


def test_compile_wraps_the_model_and_checkpoints_keep_plain_names():
    model = CompactModel(CompactConfig.preset("tiny"))
    assert compiled(TrainingConfig(model="compact"), model) is model  # off: unchanged
    wrapped = compiled(TrainingConfig(model="compact", compile=True), model)
    assert isinstance(wrapped, torch._dynamo.eval_frame.OptimizedModule) and wrapped._orig_mod is model
    # what the loop saves: unwrap_model(model, keep_torch_compile=False) -> the reference's key names
    bare = extract_model_from_parallel(wrapped, keep_torch_compile=False)
    assert bare is model
    assert list(bare.state_dict()) == list(CompactModel(CompactConfig.preset("tiny")).state_dict())
