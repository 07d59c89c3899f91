"""TFv6 in leadtrain's training loop: its row of `leadtrain.models.MODELS` (``SPEC``), the reference's loss weights
and the colour augmentation.

A step: the leadio batch -> the reference loader's format (`leadio.lead.to_lead_batch`, on the device) -> colour
augmentation (``use_color_aug``) -> `TFv6` -> `TFv6.compute_loss` (the reference's names) -> weighted by
`loss_weights`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from leadio.lead import to_lead_batch
from leadtrain.models.precision import PRECISIONS, float_type, keep_norms_fp32
from leadtrain.models.spec import ModelSpec, normalise_loss_weights
from leadtrain.models.tfv6.config import TFv6Config
from leadtrain.models.tfv6.model import TFv6

if TYPE_CHECKING:
    from leadtrain.config import TrainingConfig

__all__ = ["LOSS_NAMES", "SPEC", "color_augment", "loss_weights", "reference_loss_table", "set_precision"]

LOSS_NAMES = ("loss_semantic", "loss_depth", "loss_bev_semantic", "loss_center_net_heatmap", "loss_center_net_wh",
              "loss_center_net_offset", "loss_center_net_yaw_class", "loss_center_net_yaw_res",
              "loss_center_net_velocity", "radar_loss", "loss_spatio_temporal_waypoints", "loss_target_speed",
              "loss_spatial_route")  # fmt: skip


def reference_loss_table(cfg: TFv6Config, planning: bool) -> dict[str, float]:
    """The reference's raw ``detailed_loss_weights`` for CARLA data: every loss, 0 for the heads that are off
    (planning ones in pre-training)."""
    w = {"loss_semantic": 1.0 * cfg.use_semantic, "loss_depth": 1e-5 * cfg.use_depth,
         "loss_bev_semantic": 1.0 * cfg.use_bev_semantic}
    for k in ("heatmap", "wh", "offset", "yaw_class", "yaw_res", "velocity"):
        w[f"loss_center_net_{k}"] = 1.0 * cfg.detect_boxes
    if cfg.training_used_lidar_steps <= 1:
        w["loss_center_net_velocity"] = 0.0
    w["radar_loss"] = 1.0 * cfg.radar_detection
    for k in ("loss_spatio_temporal_waypoints", "loss_target_speed", "loss_spatial_route"):
        w[k] = 1.0 * planning
    return w


def loss_weights(cfg: TFv6Config, planning: bool, overrides: dict | None = None) -> dict[str, float]:
    """`reference_loss_table` with ``overrides``, normalised to sum to 1 over all of them (as the reference)."""
    return normalise_loss_weights(reference_loss_table(cfg, planning), overrides, model="TFv6")


def color_augment(rgb: Tensor, prob: float, generator: torch.Generator | None = None) -> Tensor:
    """On-device colour augmentation of a (B, 3, H, W) 0..255 float batch; each operation fires with ``prob``.

    Per sample, independently: brightness (x U(0.7, 1.3)), contrast (about the mean, x U(0.7, 1.3)),
    saturation (towards grey, x U(0.6, 1.4)), additive Gaussian noise (sigma U(0, 8)). A simplified stand-in for
    the reference's imgaug pipeline (same firing probability, similar strengths); geometry is untouched.
    """
    if prob <= 0:
        return rgb
    b, dev = rgb.shape[0], rgb.device

    def draw(lo: float, hi: float) -> tuple[Tensor, Tensor]:
        fire = torch.rand(b, 1, 1, 1, device=dev, generator=generator) < prob
        return fire, lo + (hi - lo) * torch.rand(b, 1, 1, 1, device=dev, generator=generator)

    x = rgb.float()
    fire, f = draw(0.7, 1.3)
    x = torch.where(fire, x * f, x)
    fire, f = draw(0.7, 1.3)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = torch.where(fire, (x - mean) * f + mean, x)
    fire, f = draw(0.6, 1.4)
    grey = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    x = torch.where(fire, (x - grey) * f + grey, x)
    fire, sigma = draw(0.0, 8.0)
    noise = torch.randn(x.shape, device=dev, generator=generator) * sigma
    x = torch.where(fire, x + noise, x)
    return x.clamp(0, 255)


# ---- the row of leadtrain.models.MODELS --------------------------------------------------------------------------
def _build(cfg: TrainingConfig) -> TFv6:
    """ImageNet weights for the image encoder unless a checkpoint replaces every weight anyway (the reference
    fetches them regardless: same weights in the end, no download)."""
    weights = "none" if cfg.load_file or cfg.continue_failed_training else cfg.image_pretrained_weights
    return TFv6(cfg.tfv6, planning=cfg.use_planning_decoder, encoder_backend=cfg.encoder_backend,
                image_pretrained_weights=weights)


def _prepare(cfg: TrainingConfig, batch: dict[str, Tensor]) -> dict:
    data = to_lead_batch(batch, planning=cfg.use_planning_decoder)
    if cfg.tfv6.use_color_aug:
        data["rgb"] = color_augment(data["rgb"].float(), cfg.tfv6.use_color_aug_prob)
    return data


def _losses(model: nn.Module, pred: dict, data: dict, metrics: dict | None) -> dict[str, Tensor]:
    return model.compute_loss(pred, data, metrics)


#: TFv6 outputs -> `leadtrain.viz`'s names
_VIZ_NAMES = {"pred_semantic": "semantic", "pred_depth": "depth", "pred_bev_semantic": "bev_semantic",
              "pred_future_waypoints": "waypoints", "pred_route": "route", "pred_bounding_box": "boxes"}


def _viz(pred: dict) -> dict:
    return {new: pred[old] for old, new in _VIZ_NAMES.items() if old in pred}


def _channels_last(model: nn.Module) -> None:
    model.backbone.channels_last = True  # the encoders' inputs too


def set_precision(model: TFv6, precision: str, mixed_precision: str) -> torch.dtype | None:
    """``precision=reference``: the reference's casts to the mixed-precision dtype (`TFv6.set_float_type`) and its
    norm layers in float32 (`leadtrain.models.precision`); ``autocast``: float32 inputs and targets. Returns the
    dtype the weighted losses are summed in (None: float32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected {' or '.join(PRECISIONS)}")
    if precision == "autocast" or mixed_precision == "no":
        model.set_float_type(None)
        return None
    dtype = float_type(mixed_precision)
    model.set_float_type(dtype)
    keep_norms_fp32(model)
    return dtype


SPEC = ModelSpec(name="tfv6", build=_build, prepare=_prepare, forward=lambda cfg, model, data: model(data),
                 losses=_losses, loss_table=lambda cfg: reference_loss_table(cfg.tfv6, cfg.use_planning_decoder),
                 loss_names=LOSS_NAMES, viz=_viz, channels_last=_channels_last, set_precision=set_precision)
