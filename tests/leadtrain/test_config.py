"""leadtrain.config: key=value overrides and their errors, the reference's config.json, LEAD_TRAINING_CONFIG and the
phase change of post-training, the model names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from leadtrain.config import ConfigError, TrainingConfig, parse_overrides
from leadtrain.models import MODELS

REPO = Path(__file__).resolve().parents[2]


def test_config_overrides_and_errors(tmp_path):
    cfg = TrainingConfig.from_cli(["epochs=3", "log_wandb=true", "epoch_checkpoints_keep=[7,15]", "load_file=null"])
    assert cfg.epochs == 3 and cfg.log_wandb is True and cfg.epoch_checkpoints_keep == [7, 15] and cfg.lr == 3e-4
    with pytest.raises(ConfigError, match=r"^unknown key 'epoch'; did you mean 'epochs'\? \(python leadtrain/"
                                          r"pretrain.py --help lists every key\)$"):
        parse_overrides(["epoch=3"])
    with pytest.raises(ConfigError, match=r"unknown key 'batchsize'; did you mean 'batch_size'\?"):
        parse_overrides(["batchsize=3"])
    with pytest.raises(ConfigError, match=r"^unknown key 'xyzzy' \("):  # nothing close: no suggestion
        parse_overrides(["xyzzy=3"])
    with pytest.raises(ConfigError, match=r"^LEAD_TRAINING_CONFIG: unknown key 'epoch'; did you mean 'epochs'"):
        TrainingConfig.from_cli([], environ={"LEAD_TRAINING_CONFIG": "epoch=2"})  # an error, not a warning
    assert TrainingConfig.from_cli(["on_error=skip"], environ={}).on_error == "skip"
    with pytest.raises(ConfigError, match="on_error must be raise|skip"):
        TrainingConfig(on_error="ignore")
    with pytest.raises(ConfigError, match=r"epochs='three': expected int"):
        parse_overrides(["epochs=three"])
    with pytest.raises(ConfigError, match="is not key=value"):
        parse_overrides(["--epochs"])
    with pytest.raises(ConfigError, match="mixed_precision must be auto|bf16|fp16|no"):
        TrainingConfig(mixed_precision="fp8")
    path = cfg.save(tmp_path)
    assert json.loads(path.read_text())["posttrain"] is False  # derived properties are written too
    assert TrainingConfig.load(path) == cfg


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


def test_model_names_come_from_the_models_table_and_leadtrain_is_refused_by_its_new_name(tmp_path):
    assert set(MODELS) == {"tfv6", "compact"}
    assert TrainingConfig(model_size="tiny").model == "compact" and TrainingConfig().model == "tfv6"  # auto
    assert TrainingConfig.from_cli(["model=compact", "model_size=small"], environ={}).model == "compact"
    with pytest.raises(ConfigError, match=r"^model 'leadtrain' is now called 'compact'$"):
        TrainingConfig.from_cli(["model=leadtrain"], environ={})
    with pytest.raises(ConfigError, match=r"model must be tfv6\|compact\|auto"):
        TrainingConfig(model="transfuser")
    (tmp_path / "config.json").write_text(json.dumps({"model": "leadtrain", "model_size": "tiny"}))  # an old run's
    with pytest.raises(ConfigError, match="is now called 'compact'"):
        TrainingConfig.load(tmp_path / "config.json")
    proc = subprocess.run([sys.executable, str(REPO / "leadtrain" / "pretrain.py"), "model=leadtrain"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: model 'leadtrain' is now called 'compact'"


def test_continue_with_the_default_logdir_keeps_that_run_s_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    TrainingConfig(model_size="tiny", lr=0.05, logdir="outputs/local_training/pretrain").save()
    cfg = TrainingConfig.from_cli(["continue_failed_training=true"], environ={})
    assert cfg.lr == 0.05 and cfg.model == "compact" and cfg.logdir == "outputs/local_training/pretrain"
    assert TrainingConfig.from_cli(["continue_failed_training=true", "lr=0.1"], environ={}).lr == 0.1
