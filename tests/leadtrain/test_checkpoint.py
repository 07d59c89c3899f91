"""leadtrain.checkpoint: a model file that does not fit is an error naming how many keys matched; the pre-training
file loads into the post-training model with only the planner new; checksums beside every checkpoint file, checked
on load; a fresh run's set-aside keeps config.json with its checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from leadtrain.checkpoint import (
    CHECKSUMS,
    CheckpointMismatch,
    DamagedCheckpointError,
    load_checkpoint_file,
    load_model_file,
    load_resume_state,
    prune_epoch_files,
    resume_summary,
    save_epoch_checkpoint,
    save_resume_state,
    set_aside_previous_run,
    verify_checkpoint_file,
)
from leadtrain.models.compact import CompactConfig, CompactModel
from leadtrain.models.tfv6 import TFv6, TFv6Config


def test_mismatched_load_file_is_an_error_naming_the_matched_keys(tmp_path):
    small = TFv6Config(final_image_height=64, final_image_width=192, image_architecture="resnet18",
                       lidar_architecture="resnet18")
    torch.save(CompactModel(CompactConfig.preset("tiny")).state_dict(), tmp_path / "compact.pth")
    with pytest.raises(CheckpointMismatch, match=r"load_file=.*compact.pth does not fit this model: 0 of 674 keys "
                                                 r"match, 674 missing .* 222 unexpected"):
        load_model_file(TFv6(small, planning=True), tmp_path / "compact.pth")
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


def _states() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"model": {"w": torch.randn(256, 256, generator=g)}, "optimizer": {"state": {}, "param_groups": []},
            "scheduler": {"last_epoch": 1}, "scaler": {}}


def test_every_checkpoint_file_has_a_checksum_checked_on_load(tmp_path):
    save_epoch_checkpoint(tmp_path, 0, _states(), 0)
    save_epoch_checkpoint(tmp_path, 1, _states(), 2)
    prune_epoch_files(tmp_path, 1, keep=[])
    doc = json.loads((tmp_path / CHECKSUMS).read_text())
    assert doc["algorithm"] == "xxh3-128" and sorted(doc["files"]) == [  # epoch 0's entries went with its files
        "gradient_steps_skipped_0001.txt", "model_0001.pth", "optimizer_0001.pth", "scaler_0001.pth",
        "scheduler_0001.pth"]
    assert all(verify_checkpoint_file(tmp_path / name) for name in doc["files"])
    assert not list(tmp_path.glob(".*tmp*"))
    model = tmp_path / "model_0001.pth"
    data = bytearray(model.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)  # same size, other bytes
    model.write_bytes(bytes(data))
    with pytest.raises(DamagedCheckpointError, match=r"model_0001\.pth is damaged: its xxh3-128 is .* recorded"):
        load_checkpoint_file(model)
    with pytest.raises(DamagedCheckpointError, match=r"load_file=|model_0001\.pth is damaged"):
        load_model_file(torch.nn.Linear(2, 2), model)
    reference = tmp_path / "ref" / "model_0030.pth"  # no checksums.json beside it: loads unverified
    reference.parent.mkdir()
    torch.save({"weight": torch.zeros(2, 2), "bias": torch.zeros(2)}, reference)
    assert not verify_checkpoint_file(reference)
    assert load_model_file(torch.nn.Linear(2, 2), reference)["matched"] == 2
    reference.write_bytes(reference.read_bytes()[:100])  # unverified and unreadable: still names the file
    with pytest.raises(DamagedCheckpointError, match=r"model_0030\.pth cannot be read as a checkpoint \(truncated"):
        load_checkpoint_file(reference)


def test_a_truncated_resume_state_is_refused_and_says_where_it_stood(tmp_path):
    save_resume_state(tmp_path, {"epoch": 3, "step_in_epoch": 5, "model": _states()["model"]})
    assert load_resume_state(tmp_path)["step_in_epoch"] == 5
    assert resume_summary(tmp_path) == {"epoch": 3, "step_in_epoch": 5, "weights_from_epoch": None}
    state = tmp_path / "resume" / "state.pth"
    state.write_bytes(state.read_bytes()[:1000])
    with pytest.raises(DamagedCheckpointError, match=r"resume/state\.pth is damaged: 1000 bytes, \d+ when it"):
        load_resume_state(tmp_path)
    assert resume_summary(tmp_path)["epoch"] == 3


def test_set_aside_keeps_config_json_with_its_checkpoints_and_never_loses_a_checkpoint(tmp_path):
    logdir = tmp_path / "run"
    logdir.mkdir()
    assert set_aside_previous_run(logdir) == ([], None)
    (logdir / "config.json").write_text("{}")
    assert set_aside_previous_run(logdir) == ([], None)  # a config.json alone stays
    save_epoch_checkpoint(logdir, 0, _states(), 0)
    moved, aside = set_aside_previous_run(logdir)
    assert aside == logdir / "previous_run" and "config.json" in moved and "checksums.json" in moved
    assert verify_checkpoint_file(aside / "model_0000.pth")  # its checksums went with it
    (logdir / "config.json").write_text("{}")  # a run that failed in its first epoch: no checkpoint
    (logdir / "events.out.tfevents.1").write_text("")
    moved, aside = set_aside_previous_run(logdir)
    assert aside == logdir / "previous_run_without_checkpoint" and (logdir / "previous_run" / "model_0000.pth").exists()
