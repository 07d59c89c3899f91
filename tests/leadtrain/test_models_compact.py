"""leadtrain.models.compact and its losses: output shapes, CenterNet targets against a loop port of TransFuser's,
planning-loss masking, loss weighting, pretrain -> posttrain loading, a short overfit run, preset sizes. CPU only
(one torch thread), seeded."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from leadtrain_batches import fake_batch

from leadtrain.models.compact import CompactConfig, CompactModel
from leadtrain.models.compact_losses import (
    DEFAULT_LOSS_WEIGHTS,
    centernet_targets,
    perception_losses,
    planning_losses,
    total_loss,
    waypoint_l1,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest

PLANNING_KEYS = ("waypoints", "waypoint_yaws", "route", "previous_target_point", "target_point",
                 "next_target_point", "command", "next_command", "target_speed", "target_speed_twohot", "speed",
                 "brake", "has_targets")  # fmt: skip


def _tiny(planner: bool = True, seed: int = 0) -> CompactModel:
    torch.manual_seed(seed)
    return CompactModel(CompactConfig.preset("tiny", use_planner=planner))


def test_output_shapes_tiny():
    model, batch = _tiny(), fake_batch(2)
    out = model(batch, planning=True)
    expected = {
        "semantic": (2, 10, 48, 144), "depth": (2, 48, 144), "bev_semantic": (2, 13, 80, 96),
        "center_heatmap": (2, 8, 80, 96), "center_wh": (2, 2, 80, 96),
        "center_offset": (2, 2, 80, 96), "center_yaw_class": (2, 12, 80, 96), "center_yaw_res": (2, 1, 80, 96),
        "center_velocity": (2, 1, 80, 96), "center_brake": (2, 2, 80, 96),
        "waypoints": (2, 8, 2), "route": (2, 10, 2), "target_speed_logits": (2, 8),
    }  # fmt: skip
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.values())
    assert (out["depth"] >= 0).all() and (out["depth"] <= 50).all()
    # pre-training: no planner outputs; radar and planning keys are optional inputs
    pre = {k: v for k, v in fake_batch(2, planning=False).items() if k != "radar"}
    assert set(_tiny(planner=False)(pre, planning=False)) == set(expected) - {"waypoints", "route",
                                                                               "target_speed_logits"}
    losses = perception_losses(out, batch) | planning_losses(out, batch)
    assert set(losses) == set(DEFAULT_LOSS_WEIGHTS)
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())


def test_planning_without_planner_and_bad_input_raise():
    model = _tiny(planner=False)
    with pytest.raises(ValueError, match="use_planner=True"):
        model(fake_batch(1), planning=True)
    with pytest.raises(ValueError, match="lidar"):
        model({"rgb": fake_batch(1)["rgb"]})
    with pytest.raises(ValueError, match="unknown model preset"):
        CompactConfig.preset("huge")


def _cornernet_radius(height: float, width: float, min_overlap: float = 0.1) -> float:
    """mmdet's gaussian_radius, verbatim in Python floats."""
    b1, c1 = height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 - math.sqrt(b1**2 - 4 * c1)) / 2
    b2, c2 = 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 - math.sqrt(b2**2 - 16 * c2)) / 8
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / (2 * a3)
    return min(r1, r2, r3)


def test_centernet_targets_one_box():
    boxes = torch.zeros(1, 90, 9)
    # x_px 150.5 -> cell col 37.625, y_px 201 -> row 50.25; ex 2.2 m, ey 1 m; yaw 100 deg; class WALKER
    boxes[0, 0] = torch.tensor([150.5, 201.0, 8.8, 4.0, math.radians(100), 5.0, 0.7, 1.0, 3.0])
    t = centernet_targets(boxes, torch.tensor([1.0]))
    heat = t["heatmap"][0]
    assert heat.max() == 1.0 and heat[1, 50, 37] == 1.0 and int(heat.eq(1).sum()) == 1
    assert heat[[0, 2, 3, 4, 5, 6, 7]].abs().sum() == 0
    r = max(2, int(_cornernet_radius(1.0, 2.2)))
    sigma = (2 * r + 1) / 6
    assert r == 2
    assert heat[1, 50, 38].item() == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-6)
    assert heat[1, 52, 39].item() == pytest.approx(math.exp(-8 / (2 * sigma**2)), rel=1e-5)
    assert heat[1, 50, 40] == 0 and heat[1, 53, 37] == 0  # outside the (2r+1)^2 window
    assert t["offset"][0, :, 50, 37].tolist() == [0.625, 0.25]
    assert t["wh"][0, :, 50, 37].tolist() == pytest.approx([2.2, 1.0], abs=1e-6)
    assert t["yaw_class"][0, 50, 37] == 3  # s = 115 deg -> floor(115 / 30)
    assert t["yaw_res"][0, 0, 50, 37].item() == pytest.approx(math.radians(10), abs=1e-6)  # 115 - 90 - 15
    assert t["velocity"][0, 0, 50, 37] == 5.0 and t["brake"][0, 50, 37] == 1
    assert t["pixel_weight"][0, :, 50, 37].tolist() == [1.0, 1.0] and t["pixel_weight"].sum() == 2
    assert t["avg_factor"].tolist() == [1.0]
    # empty sample: all zero, avg_factor clamped at 1; rows past num_boxes are ignored
    t0 = centernet_targets(boxes, torch.tensor([0.0]))
    assert t0["heatmap"].abs().sum() == 0 and t0["avg_factor"].tolist() == [1.0]


@pytest.mark.parametrize(("yaw_deg", "k", "res_deg"), [(-170, 6, 10), (-10, 0, -10), (14.9, 0, 14.9), (15, 1, -15)])
def test_centernet_yaw_bins(yaw_deg, k, res_deg):
    boxes = torch.zeros(1, 90, 9)
    boxes[0, 0] = torch.tensor([10.0, 10.0, 4.0, 4.0, math.radians(yaw_deg), 0, 0, 0, 0])
    t = centernet_targets(boxes, torch.tensor([1]))
    assert t["yaw_class"][0, 2, 2] == k
    assert t["yaw_res"][0, 0, 2, 2].item() == pytest.approx(math.radians(res_deg), abs=1e-5)


def _loop_targets(rows: np.ndarray, grid=(80, 96), num_classes=8) -> dict[str, np.ndarray]:
    """TransFuser's get_targets + mmdet's gen_gaussian_target, one box at a time (yaw per docs/format.md §4.6)."""
    h, w = grid
    heat = np.zeros((num_classes, h, w), np.float32)
    dense = {k: np.zeros((c, h, w), np.float32) for k, c in (("wh", 2), ("offset", 2), ("yaw_class", 1),
                                                            ("yaw_res", 1), ("velocity", 1), ("brake", 1))}
    for row in rows:
        cx, cy = row[0] * w / 384, row[1] * h / 320
        ix, iy = int(cx), int(cy)
        ex, ey = row[2] * w / 384, row[3] * h / 320
        r = max(2, int(_cornernet_radius(ey, ex)))
        ys, xs = np.mgrid[-r : r + 1, -r : r + 1]
        gauss = np.exp(-(xs**2 + ys**2) / (2 * ((2 * r + 1) / 6) ** 2))
        gauss[gauss < np.finfo(np.float32).eps * gauss.max()] = 0
        left, right, top, bottom = min(ix, r), min(w - ix, r + 1), min(iy, r), min(h - iy, r + 1)
        sub = heat[int(row[7]), iy - top : iy + bottom, ix - left : ix + right]
        np.maximum(sub, gauss[r - top : r + bottom, r - left : r + right], out=sub)
        s = (row[4] % (2 * np.pi) + np.pi / 12) % (2 * np.pi)
        k = int(s // (np.pi / 6))
        values = {"wh": (ex, ey), "offset": (cx - ix, cy - iy), "yaw_class": (k,),
                  "yaw_res": (s - k * np.pi / 6 - np.pi / 12,), "velocity": (row[5],), "brake": (round(row[6]),)}
        for key, v in values.items():
            dense[key][:, iy, ix] = v
    return {"heatmap": heat, **dense}


def test_centernet_targets_match_loop_reference():
    g = torch.Generator().manual_seed(1)
    boxes = torch.zeros(3, 90, 9)
    n = [12, 0, 30]
    for i, count in enumerate(n):
        rows = torch.rand(count, 9, generator=g)
        rows[:, 0] *= 383.9
        rows[:, 1] *= 319.9
        rows[:, 2:4] = 1 + 60 * rows[:, 2:4] ** 2  # up to 15 m half-extents: radii above 2 too
        rows[:, 4] = (rows[:, 4] - 0.5) * 2 * math.pi
        rows[:, 5] *= 10
        rows[:, 7] = torch.randint(0, 8, (count,), generator=g)
        if count:
            rows[::5, :2] = rows[0, :2]  # shared cells: the later row wins
        boxes[i, :count] = rows
    t = centernet_targets(boxes, torch.tensor(n, dtype=torch.float32))
    for i, count in enumerate(n):
        ref = _loop_targets(boxes[i, :count].double().numpy())
        np.testing.assert_allclose(t["heatmap"][i].numpy(), ref["heatmap"], atol=1e-6)
        for key in ("wh", "offset", "yaw_res", "velocity"):
            np.testing.assert_allclose(t[key][i].numpy(), ref[key], atol=1e-5, err_msg=key)
        for key in ("yaw_class", "brake"):
            np.testing.assert_array_equal(t[key][i].numpy(), ref[key][0].astype(np.int64), err_msg=key)
        assert t["avg_factor"][i] == max(1, int((ref["heatmap"] == 1).sum()))
        assert (t["pixel_weight"][i, 0].numpy() > 0).sum() == len({(int(r[1] / 4), int(r[0] / 4))
                                                                    for r in boxes[i, :count].tolist()})


def test_planning_losses_mask_samples_without_targets():
    torch.manual_seed(0)
    batch = fake_batch(2, planning=True)
    for key in PLANNING_KEYS:
        batch[key][1] = float("nan")
    batch["has_targets"] = torch.tensor([1.0, 0.0])
    pred = {"waypoints": torch.randn(2, 8, 2, requires_grad=True), "route": torch.randn(2, 10, 2),
            "target_speed_logits": torch.randn(2, 8)}  # fmt: skip
    full = planning_losses(pred, batch)
    alone = planning_losses({k: v[:1] for k, v in pred.items()}, {k: v[:1] for k, v in batch.items()})
    assert set(full) == {"waypoints", "route", "target_speed"}
    for key in full:
        assert torch.isfinite(full[key]) and full[key].item() == pytest.approx(alone[key].item(), rel=1e-6)
    full["waypoints"].backward()
    assert torch.isfinite(pred["waypoints"].grad).all() and pred["waypoints"].grad[1].abs().sum() == 0
    assert torch.isnan(waypoint_l1(pred, {**batch, "has_targets": torch.zeros(2)}))
    assert waypoint_l1(pred, batch).item() == pytest.approx(alone["waypoints"].item(), rel=1e-6)

    # through the model: NaN status inputs of the masked sample must not reach any gradient
    model = _tiny()
    out = model(batch, planning=True)
    total_loss(perception_losses(out, batch) | planning_losses(out, batch)).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bf16_autocast_and_missing_radar():
    model, batch = _tiny(), fake_batch(1)
    batch.pop("radar")  # radar parameters still get (zero) gradients, so DDP sees no unused parameter
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch, planning=True)
        loss = total_loss(perception_losses(out, batch) | planning_losses(out, batch))
    assert out["center_heatmap"].dtype == torch.bfloat16 and out["waypoints"].dtype == torch.float32
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_total_loss_normalises_weights():
    losses = {"semantic": torch.tensor(2.0), "depth": torch.tensor(10.0), "waypoints": torch.tensor(4.0)}
    expected = (2.0 + 1e-5 * 10.0 + 4.0) / (2 + 1e-5)
    assert total_loss(losses).item() == pytest.approx(expected, rel=1e-6)
    assert total_loss(losses, {"waypoints": 0.0, "depth": 0.0}).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"unknown compact losses \['semantics'\]"):
        total_loss(losses, {"semantics": 1.0})


def test_pretrain_checkpoint_loads_into_planning_model():
    pre, post = _tiny(planner=False, seed=1), _tiny(planner=True, seed=2)
    result = post.load_state_dict(pre.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(k.startswith("planner.") for k in result.missing_keys)
    assert set(result.missing_keys) == {k for k in post.state_dict() if k.startswith("planner.")}
    assert torch.equal(post.state_dict()["fusion.image_pos"], pre.state_dict()["fusion.image_pos"])


def test_deterministic_with_seed():
    batch = fake_batch(1)
    a, b = _tiny(seed=3)(batch, planning=True), _tiny(seed=3)(batch, planning=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_overfits_fixed_batch():
    torch.manual_seed(0)
    model, batch = _tiny(), fake_batch(4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history = []
    for _ in range(31):  # 30 updates; the 31st forward measures the result
        out = model(batch, planning=True)
        loss = total_loss(perception_losses(out, batch) | planning_losses(out, batch))
        history.append((loss.item(), waypoint_l1(out, batch).item()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    (loss0, wp0), (loss1, wp1) = history[0], history[-1]
    print(f"loss {loss0:.3f} -> {loss1:.3f}, waypoint L1 {wp0:.3f} -> {wp1:.3f} m")
    assert loss1 < 0.5 * loss0, history
    assert wp1 < 0.5 * wp0, history


def test_reference_preset_size():
    sizes = {name: CompactModel(CompactConfig.preset(name, use_planner=True)).num_parameters()
             for name in ("tiny", "small", "reference")}  # fmt: skip
    print(f"parameters: {sizes}")
    assert 1e6 < sizes["tiny"] < 3e6
    assert sizes["tiny"] < sizes["small"] < sizes["reference"]
    assert 30e6 < sizes["reference"] < 80e6
