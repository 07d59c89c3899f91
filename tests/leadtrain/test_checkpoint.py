"""leadtrain.checkpoint: a model file that does not fit is an error naming how many keys matched; the pre-training
file loads into the post-training model with only the planner new."""

from __future__ import annotations

import pytest
import torch

from leadtrain.checkpoint import CheckpointMismatch, load_model_file
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
