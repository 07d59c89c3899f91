"""leadtrain.models.tfv6 on CPU with random weights: the reference's parameter counts and state_dict listing, forward
shapes on a LEAD-format batch (leadio.lead.to_lead_batch), one optimizer step per phase, strict reload, loss
weights, radar matching, local ImageNet weights."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from leadtrain_batches import SMALL, leadio_batch

from leadio.lead import to_lead_batch
from leadtrain.models.tfv6 import TFv6, TFv6Config, loss_weights
from leadtrain.models.tfv6.encoders import create_encoder, load_pretrained, timm_or_none
from leadtrain.models.tfv6.radar import linear_sum_assignment

LISTING = Path(__file__).parents[1] / "data" / "tfv6_state_dict.txt"
#: parameters per top-level module of the reference's default TFv6 (kesai-labs/lead 4489176, measured there)
REFERENCE_COUNTS = {"backbone": 52_280_640, "semantic_decoder": 703_594, "depth_decoder": 700_993,
                    "bev_semantic_decoder": 37_760, "center_net_decoder": 223_258, "radar_detector": 5_179_396,
                    "planning_decoder": 1_845_452}

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest


def test_parameter_counts_per_module_equal_the_reference():
    for planning in (False, True):
        model = TFv6(planning=planning)
        counts = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_children()}
        expected = {k: v for k, v in REFERENCE_COUNTS.items() if planning or k != "planning_decoder"}
        assert counts == expected
        assert sum(counts.values()) == (60_971_093 if planning else 59_125_641)


def test_state_dict_keys_and_shapes_equal_the_committed_listing():
    rows = [line.split("\t") for line in LISTING.read_text().splitlines() if not line.startswith("#")]
    listing = [(k, [int(x) for x in s.strip("[]").split(",") if x]) for k, s in rows]
    assert len(listing) == 866
    post = TFv6(planning=True).state_dict()
    assert [(k, list(v.shape)) for k, v in post.items()] == listing
    pre = TFv6(planning=False).state_dict()
    assert [(k, list(v.shape)) for k, v in pre.items()] == [r for r in listing
                                                            if not r[0].startswith("planning_decoder.")]


def test_forward_of_a_lead_batch_gives_every_output_with_documented_shapes():
    torch.manual_seed(0)
    model = TFv6(planning=True).eval()
    data = to_lead_batch(leadio_batch(1), planning=True)
    with torch.no_grad():
        out = model(data)
    shapes = {k: tuple(v.shape) for k, v in out.items() if k != "pred_bounding_box"}
    assert shapes == {"pred_semantic": (1, 10, 384, 1152), "pred_depth": (1, 384, 1152),
                      "pred_bev_semantic": (1, 13, 320, 384), "pred_radar_features": (1, 20, 256),
                      "pred_radar_predictions": (1, 20, 4), "pred_route": (1, 10, 2),
                      "pred_future_waypoints": (1, 8, 2), "pred_target_speed_distribution": (1, 8),
                      "pred_target_speed_scalar": (1,)}
    boxes = {k: tuple(v.shape) for k, v in out["pred_bounding_box"].items()}
    assert boxes == {"center_heatmap_logit_pred": (1, 8, 80, 96), "center_heatmap_pred": (1, 8, 80, 96),
                     "wh_pred": (1, 2, 80, 96), "offset_pred": (1, 2, 80, 96), "yaw_class_pred": (1, 12, 80, 96),
                     "yaw_res_pred": (1, 1, 80, 96), "velocity_pred": (1, 1, 80, 96)}
    radar = out["pred_radar_predictions"]
    assert bool(((radar[..., 0] >= -32) & (radar[..., 0] <= 64) & (radar[..., 2] >= 0) & (radar[..., 2] <= 25)).all())


@pytest.mark.parametrize("planning", [False, True])
def test_one_optimizer_step(planning):
    torch.manual_seed(0)
    model = TFv6(SMALL, planning=planning).train()
    data = to_lead_batch(leadio_batch(2, image=(64, 192)), planning=planning)
    weights = loss_weights(SMALL, planning)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, amsgrad=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = model.compute_loss(model(data), data)
    names = {"loss_semantic", "loss_depth", "loss_bev_semantic", "radar_loss"} | {
        f"loss_center_net_{k}" for k in ("heatmap", "wh", "offset", "yaw_class", "yaw_res", "velocity")}
    if planning:
        names |= {"loss_spatio_temporal_waypoints", "loss_target_speed", "loss_spatial_route"}
    assert set(losses) == names and all(torch.isfinite(v) for v in losses.values())
    loss = sum(weights[k] * v for k, v in losses.items())
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    moved = {k.split(".")[0] for k in after if after[k].is_floating_point() and not torch.equal(before[k], after[k])}
    assert moved == {name for name, _ in model.named_children()}  # every top-level module learned
    assert ("planning_decoder" in moved) == planning


def test_loss_weights_are_the_references_normalised():
    pre, post = loss_weights(TFv6Config(), False), loss_weights(TFv6Config(), True)
    assert pre["loss_depth"] == pytest.approx(1e-5 / 9.00001) and pre["loss_spatial_route"] == 0.0
    assert post["loss_semantic"] == pytest.approx(1 / 12.00001) and sum(post.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"unknown TFv6 losses \['loss_waypoints'\]"):
        loss_weights(TFv6Config(), True, {"loss_waypoints": 2.0})


def test_a_saved_state_dict_reloads_strictly_with_identical_outputs(tmp_path):
    torch.manual_seed(1)
    model = TFv6(SMALL, planning=True).eval()
    torch.save(model.state_dict(), tmp_path / "model_0000.pth")
    state = torch.load(tmp_path / "model_0000.pth", weights_only=True)
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in state)
    torch.manual_seed(2)
    other = TFv6(SMALL, planning=True).eval()
    other.load_state_dict(state, strict=True)
    data = to_lead_batch(leadio_batch(1, image=(64, 192), seed=3), planning=True)
    with torch.no_grad():
        a, b = model(data), other(data)
    assert all(torch.equal(a[k], b[k]) for k in a if k != "pred_bounding_box")
    assert all(torch.equal(a["pred_bounding_box"][k], b["pred_bounding_box"][k]) for k in a["pred_bounding_box"])


def test_hungarian_matching_is_optimal():
    rng = np.random.default_rng(0)
    for n in (1, 4, 6):
        for _ in range(10):
            cost = rng.random((n, n))
            rows, cols = linear_sum_assignment(cost)
            best = min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(n)))
            assert sorted(cols.tolist()) == list(range(n)) and cost[rows, cols].sum() == pytest.approx(best)


def test_imagenet_weights_come_from_a_local_file_or_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    encoder = create_encoder("resnet18", 3, "builtin")
    with pytest.raises(FileNotFoundError, match=r"no ImageNet weights for 'resnet18'.*never downloads.*=none"):
        load_pretrained(encoder, "resnet18", "timm-cache")
    source = create_encoder("resnet18", 3, "builtin").state_dict()
    torch.save({**source, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, tmp_path / "w.pth")
    assert load_pretrained(encoder, "resnet18", str(tmp_path / "w.pth")) == str(tmp_path / "w.pth")
    assert all(torch.equal(v, source[k]) for k, v in encoder.state_dict().items())
    with pytest.raises(ValueError, match=r"not resnet34 ImageNet weights.*missing keys"):
        load_pretrained(create_encoder("resnet34", 3, "builtin"), "resnet34", str(tmp_path / "w.pth"))


@pytest.mark.skipif(timm_or_none() is None, reason="timm does not import here (no torchvision for this torch)")
def test_builtin_resnet_equals_timm():
    for name in ("resnet34", "resnet50"):
        a, b = create_encoder(name, 1, "timm"), create_encoder(name, 1, "builtin")
        assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]
        b.load_state_dict(a.state_dict())
        x = torch.randn(1, 1, 64, 96)
        assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(a.eval()(x), b.eval()(x), strict=True))
