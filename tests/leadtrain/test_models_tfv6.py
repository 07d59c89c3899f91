"""leadtrain.models.tfv6 on CPU with random weights: the reference's parameter counts and state_dict listing, forward
shapes on a LEAD-format batch (leadio.lead.to_lead_batch), one optimizer step per phase, strict reload, loss
weights, radar matching, local ImageNet weights, and ``precision=reference``: what is cast to bfloat16, norms in
float32, the bfloat16 eps in avg_factor, the two-hot speed target and the loss sum in bfloat16."""

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
#: the reference's code at kesai-labs/lead 4489176, where the listing and the counts were measured: its
#: transfuser_token_dim was 64; the paper's 256, which the reference now publishes, is our default
AT_4489176 = TFv6Config(transfuser_token_dim=64)
#: parameters per top-level module of the reference's default TFv6 (kesai-labs/lead 4489176, measured there)
REFERENCE_COUNTS = {"backbone": 52_280_640, "semantic_decoder": 703_594, "depth_decoder": 700_993,
                    "bev_semantic_decoder": 37_760, "center_net_decoder": 223_258, "radar_detector": 5_179_396,
                    "planning_decoder": 1_845_452}

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest


def test_parameter_counts_per_module_equal_the_reference():
    for planning in (False, True):
        model = TFv6(AT_4489176, planning=planning)
        counts = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_children()}
        expected = {k: v for k, v in REFERENCE_COUNTS.items() if planning or k != "planning_decoder"}
        assert counts == expected
        assert sum(counts.values()) == (60_971_093 if planning else 59_125_641)
    # the default planner: 256-d tokens (6 decoder layers, FFN 2048, 8 heads), the paper's and the reference's now
    assert TFv6Config().transfuser_token_dim == 256
    planner = TFv6(planning=True).planning_decoder
    assert sum(p.numel() for p in planner.parameters()) == 9_753_356


def test_state_dict_keys_and_shapes_equal_the_committed_listing():
    rows = [line.split("\t") for line in LISTING.read_text().splitlines() if not line.startswith("#")]
    listing = [(k, [int(x) for x in s.strip("[]").split(",") if x]) for k, s in rows]
    assert len(listing) == 866
    post = TFv6(AT_4489176, planning=True).state_dict()
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


def test_imagenet_weights_load_from_a_file_into_the_builtin_encoder(tmp_path):
    source = create_encoder("resnet18", 3, "builtin").state_dict()
    torch.save({**source, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, tmp_path / "w.pth")
    encoder = create_encoder("resnet18", 3, "builtin", tmp_path / "w.pth")
    assert encoder.implementation == "built-in"
    assert all(torch.equal(v, source[k]) for k, v in encoder.state_dict().items())
    with pytest.raises(ValueError, match=r"not resnet34 ImageNet weights.*missing keys"):
        load_pretrained(create_encoder("resnet34", 3, "builtin"), "resnet34", tmp_path / "w.pth")


@pytest.mark.skipif(timm_or_none() is None, reason="timm is not installed here (PyPI has no torchvision for a CPU "
                                                   "torch); `make` installs it where it imports")
def test_builtin_resnet_equals_timm(tmp_path):
    for name in ("resnet34", "resnet50"):
        a, b = create_encoder(name, 1, "timm"), create_encoder(name, 1, "builtin")
        assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]
        b.load_state_dict(a.state_dict())
        x = torch.randn(1, 1, 64, 96)
        assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(a.eval()(x), b.eval()(x), strict=True))
    # the same weights file gives the same image encoder through timm's own loader (pretrained=True) and ours
    source = create_encoder("resnet18", 3, "builtin").state_dict()
    torch.save({**source, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, tmp_path / "w.pth")
    via_timm = create_encoder("resnet18", 3, "timm", tmp_path / "w.pth")
    ours = create_encoder("resnet18", 3, "builtin", tmp_path / "w.pth")
    assert via_timm.implementation.startswith("timm ")
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in via_timm.state_dict().items())


# ---- precision=reference: the reference's bfloat16 ----------------------------------------------------------------
class _CastsToBf16(torch.overrides.TorchFunctionMode):
    """Records which batch keys are cast to bfloat16 with ``.to`` (following views, slices and reshapes of them; keys
    holding the same tensor count together)."""

    VIEWS = {torch.Tensor.reshape, torch.Tensor.view, torch.Tensor.__getitem__, torch.Tensor.flatten,
             torch.Tensor.squeeze, torch.Tensor.unsqueeze, torch.Tensor.contiguous}

    def __init__(self, data: dict):
        super().__init__()
        self.origin: dict[int, set[str]] = {}
        for k, v in data.items():
            if isinstance(v, torch.Tensor):
                self.origin.setdefault(id(v), set()).add(k)
        self.keep, self.cast = list(data.values()), set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        key = self.origin.get(id(args[0])) if args and isinstance(args[0], torch.Tensor) else None
        if key is not None and func in self.VIEWS and isinstance(out, torch.Tensor):
            self.origin[id(out)] = key
            self.keep.append(out)
        if key is not None and func is torch.Tensor.to and getattr(out, "dtype", None) == torch.bfloat16:
            self.cast |= key
        return out


def _bf16_step(precision: str) -> tuple[TFv6, dict, dict, set]:
    from leadtrain.models.tfv6.spec import set_precision

    torch.manual_seed(0)
    model = TFv6(SMALL, planning=True).train()
    assert set_precision(model, precision, "bf16") == (torch.bfloat16 if precision == "reference" else None)
    data = to_lead_batch(leadio_batch(2, image=(64, 192)), planning=True)
    spy = _CastsToBf16(data)
    with torch.autocast("cpu", dtype=torch.bfloat16), spy:
        losses = model.compute_loss(model(data), data)
    return model, data, losses, spy.cast


def test_reference_precision_casts_what_the_reference_casts_to_bfloat16():
    from leadtrain.models.tfv6.model import REFERENCE_CASTS

    _, data, losses, cast = _bf16_step("reference")
    same = {k for k, v in data.items() for r in REFERENCE_CASTS if v is data[r]}  # previous_command is command
    assert cast == same == set(REFERENCE_CASTS) | {"previous_command"}  # semantics, depth, yaw classes, brake: not
    assert {"semantic", "depth", "bev_semantic", "center_net_yaw_class", "brake"} <= set(data)
    assert losses["radar_loss"].dtype == torch.bfloat16  # matched and summed in the predictions' dtype
    assert all(v.dtype == torch.float32 for k, v in losses.items() if k != "radar_loss")
    # autocast alone: inputs and targets in float32 (the radar's ego speed in the BEV features' dtype, as before)
    _, _, losses, cast = _bf16_step("autocast")
    assert cast == {"speed"} and all(v.dtype == torch.float32 for v in losses.values())


def test_reference_precision_keeps_every_norm_layer_in_float32():
    from leadtrain.models.precision import keep_norms_fp32
    from leadtrain.models.tfv6.spec import set_precision

    model = TFv6(SMALL, planning=True)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d | torch.nn.LayerNorm)]
    assert set_precision(model, "autocast", "bf16") is None and all("forward" not in vars(m) for m in norms)
    set_precision(model, "reference", "bf16")
    assert keep_norms_fp32(model) == len(norms) > 100 and all("forward" in vars(m) for m in norms)
    bn, ln = model.backbone.image_encoder["bn1"].eval(), model.backbone.transformers[0].ln_f
    x = torch.randn(2, 64, 8, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for norm, inp in ((bn, x), (ln, torch.randn(2, 5, ln.normalized_shape[0]).bfloat16())):
            out = norm(inp)
            assert out.dtype == torch.bfloat16 and norm.weight.dtype == torch.float32
            with torch.autocast("cpu", enabled=False):
                assert torch.equal(out, type(norm).forward(norm, inp.float()).bfloat16())
    assert set(model.state_dict()) == set(TFv6(SMALL, planning=True).state_dict())
    assert set_precision(model, "reference", "no") is None and model.float_type is None  # no mixed precision


def test_reference_precision_adds_bfloat16s_eps_to_avg_factor_and_builds_two_hot_speeds_in_bfloat16():
    from leadtrain.models.tfv6.heads import CenterNetDecoder
    from leadtrain.models.tfv6.planning import encode_two_hot

    head = CenterNetDecoder(SMALL, 8)
    torch.manual_seed(0)
    pred = {k: torch.randn(2, c, 80, 96) for k, c in (("wh_pred", 2), ("offset_pred", 2), ("yaw_class_pred", 12),
                                                      ("yaw_res_pred", 1), ("velocity_pred", 1))}
    pred["center_heatmap_pred"] = torch.rand(2, 8, 80, 96)
    data = {"center_net_heatmap": (torch.rand(2, 8, 80, 96) > 0.999).float(), "center_net_wh": torch.ones(2, 2, 80, 96),
            "center_net_offset": torch.zeros(2, 2, 80, 96), "center_net_yaw_class": torch.zeros(2, 80, 96).long(),
            "center_net_yaw_res": torch.zeros(2, 1, 80, 96), "center_net_velocity": torch.zeros(2, 1, 80, 96),
            "center_net_pixel_weight": torch.ones(2, 2, 80, 96), "center_net_avg_factor": torch.tensor([1, 2])}
    plain = head.loss(pred, data)
    head.float_type = torch.bfloat16
    ref = head.loss(pred, data)
    # the targets are exact in bfloat16, so only avg_factor + eps differs: 1 + 2**-7, and 2 (2 + 2**-7 rounds to 2)
    per_sample = torch.nn.functional.cross_entropy(pred["yaw_class_pred"], data["center_net_yaw_class"],
                                                   reduction="none").flatten(1).sum(1)
    avg = torch.tensor([1.0, 2.0])
    assert torch.allclose(plain["loss_center_net_yaw_class"], (per_sample / (avg + 2**-23)).mean(), rtol=1e-6)
    assert torch.allclose(ref["loss_center_net_yaw_class"], (per_sample / torch.tensor([1 + 2**-7, 2.0])).mean(),
                          rtol=1e-6)
    assert not torch.allclose(ref["loss_center_net_yaw_class"], plain["loss_center_net_yaw_class"], rtol=1e-4)
    classes = TFv6Config().target_speed_classes  # 13.89 and 17.78 m/s are 13.875 and 17.75 in bfloat16
    twohot = encode_two_hot(torch.tensor([13.0, 13.88, 30.0]).bfloat16(), classes, torch.tensor([0, 0, 0]))
    assert twohot.dtype == torch.bfloat16
    c = torch.tensor(classes).bfloat16()
    s = torch.tensor(13.0).bfloat16()
    assert twohot[0, 3] == (c[4] - s) / (c[4] - c[3]) and twohot[0, 4] == (s - c[3]) / (c[4] - c[3])
    assert twohot[1].tolist() == [0, 0, 0, 0, 1, 0, 0, 0] and twohot[2].tolist() == [0] * 7 + [1]
    fp32 = encode_two_hot(torch.tensor([13.88]), classes, torch.tensor([0]))
    assert 0 < fp32[0, 4] < 1  # in float32 it falls between two classes
