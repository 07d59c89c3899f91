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


REFERENCE_STYLE = {  # an excerpt of a reference config.json (training_dict of kesai-labs/lead), with its quirks
    "batch_size": 64, "epochs": 31, "lr": 0.0003, "carla_root": "data/carla_leaderboard2", "logdir": "x/pretrain",
    "use_planning_decoder": False, "continue_failed_training": True, "load_file": None, "seed": 0,
    "image_architecture": "resnet34", "lidar_architecture": "regnety_032", "n_layer": 2, "LTF": False,
    "img_vert_anchors": 12, "img_horz_anchors": 36, "lidar_vert_anchors": 10, "lidar_horz_anchors": 12,
    "use_sensor_perburtation_prob": 0.5, "use_mixed_precision_training": True, "log_wandb": False,
    "bicycle_frame_rate": 20, "camera_calibration": {"1": {"fov": 60}}, "use_training_session_cache": True,
    "wandb_id": None, "wandb_resume": "never", "description": "An example experiment description.",
}  # fmt: skip


def test_reference_config_json_is_understood_and_unknown_keys_warn_once(tmp_path, caplog):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(REFERENCE_STYLE))
    with caplog.at_level("WARNING", logger="leadtrain.config"):
        cfg = TrainingConfig.load(path)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "4 keys leadtrain does not implement are ignored: bicycle_frame_rate, " \
        "camera_calibration, description, use_training_session_cache" in warnings[0]
    assert cfg.model == "tfv6" and cfg.tfv6.lidar_architecture == "regnety_032"
    assert cfg.root == "data/carla_leaderboard2"
    assert cfg.perturbation_rate == 0.5 and cfg.mixed_precision == "auto" and cfg.collection == "full_pretrain"
    saved = json.loads(cfg.save(tmp_path / "out").read_text())  # the reference's names, for its agent
    assert saved["carla_root"] == cfg.root and saved["lidar_architecture"] == "regnety_032" and saved["LTF"] is False
    assert saved["img_horz_anchors"] == 36 and saved["bev_features_chanels"] == 64
    assert saved["use_planning_decoder"] is False
    assert TrainingConfig.load(tmp_path / "out" / "config.json") == cfg  # our own file reads back without a warning
    with pytest.raises(ConfigError, match=r"LTF=True is not implemented"):
        TrainingConfig.from_dict({**REFERENCE_STYLE, "LTF": True})
    with pytest.raises(ConfigError, match=r"img_horz_anchors=72 \(leadtrain derives 36\)"):
        TrainingConfig.from_dict({**REFERENCE_STYLE, "img_horz_anchors": 72})


def test_lead_training_config_and_single_entry_point_posttrain(tmp_path):
    pre = tmp_path / "pretrain"
    pre.mkdir()
    (pre / "config.json").write_text(json.dumps({**REFERENCE_STYLE, "collection": "full_pretrain",
                                                 "logdir": str(pre), "compile": True, "channel_last": True}))
    env = {"LEAD_TRAINING_CONFIG": f"load_file={pre / 'model_0030.pth'} use_planning_decoder=true epochs=5"}
    # as the reference's posttrain: LEAD_TRAINING_CONFIG over the pretrain config.json, the command line over both
    cfg = TrainingConfig.from_cli(["epochs=7"], defaults={}, environ=env)
    assert cfg.use_planning_decoder and cfg.load_file == str(pre / "model_0030.pth") and cfg.epochs == 7
    assert cfg.collection == "full_posttrain" and cfg.logdir == "outputs/local_training/posttrain"  # new phase
    assert cfg.continue_failed_training is False  # never inherited from the pretrain run
    assert cfg.tfv6.lidar_architecture == "regnety_032" and cfg.batch_size == 64  # everything else is
    assert not cfg.compile and not cfg.channel_last  # ...but the reference's always-true speed switches
    assert TrainingConfig.from_cli([f"load_file={pre / 'model_0030.pth'}", "compile=true"], defaults={},
                                   environ={}).compile  # the command line still sets them
    same_phase = TrainingConfig.from_cli([f"load_file={pre / 'model_0030.pth'}"], defaults={}, environ={})
    assert same_phase.collection == "full_pretrain" and same_phase.logdir == str(pre)
    with pytest.raises(ConfigError, match=r"unknown key 'epoch'"):
        TrainingConfig.from_cli(["epoch=3"], environ={})


def test_mismatched_load_file_is_an_error_naming_the_matched_keys(tmp_path):
    from leadtrain.checkpoint import CheckpointMismatch, load_model_file
    from leadtrain.model import ModelConfig, TransFuser
    from leadtrain.tfv6 import TFv6, TFv6Config

    small = TFv6Config(final_image_height=64, final_image_width=192, image_architecture="resnet18",
                       lidar_architecture="resnet18")
    torch.save(TransFuser(ModelConfig.preset("tiny")).state_dict(), tmp_path / "leadtrain.pth")
    with pytest.raises(CheckpointMismatch, match=r"load_file=.*leadtrain.pth does not fit this model: 0 of 674 keys "
                                                 r"match, 674 missing .* 222 unexpected"):
        load_model_file(TFv6(small, planning=True), tmp_path / "leadtrain.pth")
    pre = TFv6(small, planning=False)
    torch.save({f"module.{k}": v for k, v in pre.state_dict().items()}, tmp_path / "pre.pth")  # DDP prefix
    post = TFv6(small, planning=True)
    info = load_model_file(post, tmp_path / "pre.pth")  # pretrain -> posttrain: only the planner is new
    assert info == {"matched": len(pre.state_dict()), "new_modules": ["planning_decoder"], "dropped_modules": []}
    assert all(torch.equal(v, post.state_dict()[k]) for k, v in pre.state_dict().items())
    other = TFv6(small.replace(n_layer=1), planning=False).state_dict()
    torch.save(other, tmp_path / "other.pth")
    with pytest.raises(CheckpointMismatch, match=r"480 of 544 keys match, 64 missing \(e\.g\. \[.backbone"):
        load_model_file(TFv6(small, planning=False), tmp_path / "other.pth")
