"""Training targets built on the device, and the losses of `leadtrain.models.compact.CompactModel` (docs/format.md
§4.3-4.7, §8).

leadio stores only what is expensive to make: box rows, class-id maps, 8-bit depth, planning targets. Dense
CenterNet targets are drawn on the boxes' device by `leadio.lead.centernet_targets` (the one implementation,
LEAD's values; `centernet_targets` here ignores the zero padding that LEAD also draws).

Losses (every key only when the batch has its target; names = the prediction keys of `CompactModel`):

- ``semantic``, ``bev_semantic``: cross-entropy. A prediction coarser than its target (tiny preset) is compared
  with the target subsampled at each cell's centre pixel (nearest).
- ``depth``: L1 in metres (v / 255 * 50); the prediction is bilinearly resized to the stored 96x288.
- ``center_*``: CenterNet as TransFuser/mmdet: Gaussian focal loss (alpha 2, gamma 4) on the heatmap; L1 on
  wh, offset (avg_factor x 2), yaw residual and velocity; cross-entropy on yaw class and brake; all regression
  and class terms only at box-centre cells (pixel weight); every term divided by avg_factor = max(1, number of
  heatmap cells equal to 1 in the batch).
- ``waypoints``, ``route``: L1 (m); ``target_speed``: soft cross-entropy against the two-hot. Samples with
  ``has_targets`` = 0 (NaN-filled) are masked out without reading their values, and without a host sync.

`total_loss` weights and normalises (LEAD: weights sum to 1, depth 1e-5, all others 1) with the training loop's
one normalisation (`leadtrain.models.spec.normalise_loss_weights`). Simplified vs LEAD: one avg_factor per batch
(not per sample), brake CE on round(brake).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from leadio.lead import centernet_targets as lead_centernet_targets
from leadio.schema import DEPTH_MAX_M
from leadtrain.models.spec import normalise_loss_weights

__all__ = ["DEFAULT_LOSS_WEIGHTS", "centernet_targets", "perception_losses", "planning_losses", "total_loss",
           "waypoint_l1"]  # fmt: skip

#: LEAD's loss weights (normalised over the present losses in `total_loss`).
DEFAULT_LOSS_WEIGHTS: dict[str, float] = {
    "semantic": 1.0, "depth": 1e-5, "bev_semantic": 1.0, "center_heatmap": 1.0, "center_wh": 1.0,
    "center_offset": 1.0, "center_yaw_class": 1.0, "center_yaw_res": 1.0, "center_velocity": 1.0,
    "center_brake": 1.0, "waypoints": 1.0, "route": 1.0, "target_speed": 1.0,
}  # fmt: skip


def centernet_targets(
    boxes: Tensor, num_boxes: Tensor, grid: tuple[int, int] = (80, 96), num_classes: int = 8, *,
    num_yaw_bins: int = 12, min_overlap: float = 0.1, min_radius: int = 2,
) -> dict[str, Tensor]:  # fmt: skip
    """CenterNet targets of docs/format.md §4.6 from box rows, on ``boxes.device``: `leadio.lead.centernet_targets`
    (the one implementation, LEAD's values) with rows past ``num_boxes`` ignored, class maps as int64 for
    cross-entropy and ``avg_factor`` as float32.

    Args:
        boxes: (B, N, 9) rows [x_px, y_px, ex*4, ey*4, yaw (rad), speed (m/s), brake, class, radar points].
        num_boxes: (B,) valid rows per sample (any numeric dtype).
        grid: (gh, gw) cells; num_classes: heatmap channels; the rest: LEAD's parameters.

    Returns:
        ``heatmap`` (B, C, gh, gw), ``wh``/``offset``/``pixel_weight`` (B, 2, gh, gw), ``yaw_res``/``velocity``
        (B, 1, gh, gw) float32; ``yaw_class``/``brake`` (B, gh, gw) int64; ``avg_factor`` (B,) float32.
    """
    t = lead_centernet_targets(boxes, num_boxes, grid, num_classes, num_yaw_bins=num_yaw_bins,
                               min_overlap=min_overlap, min_radius=min_radius)
    t["yaw_class"], t["brake"], t["avg_factor"] = t["yaw_class"].long(), t["brake"].long(), t["avg_factor"].float()
    return t


def _gaussian_focal_loss(logits: Tensor, target: Tensor, alpha: float = 2.0, gamma: float = 4.0) -> Tensor:
    """Summed Gaussian focal loss (CornerNet / mmdet) on sigmoid(logits) clamped to [1e-4, 1 - 1e-4] (CenterNet).

    The clamp also keeps p**alpha out of float32's denormal range, which slows CPUs down by orders of magnitude.
    """
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = -torch.log(p) * (1 - p).pow(alpha) * target.eq(1)
    neg = -torch.log1p(-p) * p.pow(alpha) * (1 - target).pow(gamma)
    return (pos + neg).sum()


def _centernet_losses(pred: dict[str, Tensor], t: dict[str, Tensor]) -> dict[str, Tensor]:
    avg = t["heatmap"].eq(1).sum().clamp(min=1).float()
    weight, w1 = t["pixel_weight"], t["pixel_weight"][:, 0]

    def l1(key: str, target: Tensor, w: Tensor) -> Tensor:
        return ((pred[key].float() - target).abs() * w).sum()

    def ce(key: str, target: Tensor) -> Tensor:
        return (F.cross_entropy(pred[key].float(), target, reduction="none") * w1).sum() / avg

    return {
        "center_heatmap": _gaussian_focal_loss(pred["center_heatmap"].float(), t["heatmap"]) / avg,
        "center_wh": l1("center_wh", t["wh"], weight) / (2 * avg),
        "center_offset": l1("center_offset", t["offset"], weight) / (2 * avg),
        "center_yaw_class": ce("center_yaw_class", t["yaw_class"]),
        "center_yaw_res": l1("center_yaw_res", t["yaw_res"], w1[:, None]) / avg,
        "center_velocity": l1("center_velocity", t["velocity"], w1[:, None]) / avg,
        "center_brake": ce("center_brake", t["brake"]),
    }


def _nearest(target: Tensor, size: tuple[int, int]) -> Tensor:
    """Subsample (B, H, W) at the centre pixel of each of size's cells (identity at the same size)."""
    h, w = target.shape[-2:]
    if (h, w) == tuple(size):
        return target
    rows = ((torch.arange(size[0], device=target.device) + 0.5) * (h / size[0])).long().clamp(max=h - 1)
    cols = ((torch.arange(size[1], device=target.device) + 0.5) * (w / size[1])).long().clamp(max=w - 1)
    return target[:, rows][:, :, cols]


def perception_losses(pred: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Perception losses for the targets the batch has (see the module docstring).

    Args:
        pred: `CompactModel` outputs.
        batch: leadio's batch; uses ``semantic`` (B, 384, 1152), ``depth`` (B, 96, 288) uint8, ``bev_semantic``
            (B, 320, 384), ``boxes`` (B, 90, 9) with ``num_boxes`` (B,), whichever are present.

    Returns:
        0-d float32 losses named ``semantic``, ``depth``, ``bev_semantic``, ``center_*``.

    Raises:
        ValueError: ``boxes`` without ``num_boxes``.
    """
    losses = {}
    for key in ("semantic", "bev_semantic"):
        if key in batch and key in pred:
            logits = pred[key].float()
            losses[key] = F.cross_entropy(logits, _nearest(batch[key], logits.shape[-2:]).long())
    if "depth" in batch and "depth" in pred:
        target = batch["depth"].float() * (DEPTH_MAX_M / 255)
        depth = pred["depth"].float()
        if depth.shape[-2:] != target.shape[-2:]:
            depth = F.interpolate(depth[:, None], size=target.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        losses["depth"] = F.l1_loss(depth, target)
    if "boxes" in batch and "center_heatmap" in pred:
        if "num_boxes" not in batch:
            raise ValueError("batch has 'boxes' but no 'num_boxes'; leadio adds it with the 'targets' key")
        heat = pred["center_heatmap"]
        targets = centernet_targets(batch["boxes"], batch["num_boxes"], tuple(heat.shape[-2:]), heat.shape[1],
                                    num_yaw_bins=pred["center_yaw_class"].shape[1])
        losses.update(_centernet_losses(pred, targets))
    return losses


def _valid(batch: dict[str, Tensor], like: Tensor) -> Tensor:
    """(B,) bool: samples with planning targets (all when the batch has no ``has_targets``)."""
    if "has_targets" not in batch:
        return torch.ones(like.shape[0], dtype=torch.bool, device=like.device)
    return batch["has_targets"].reshape(-1).to(like.device) > 0.5


def _masked_l1(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Mean |pred - target| over valid samples; 0 (with a gradient path) when none is valid. No host sync."""
    mask = valid.reshape(-1, *([1] * (pred.ndim - 1)))
    diff = torch.where(mask, pred.float() - torch.where(mask, target.float(), 0.0), 0.0).abs()
    count = valid.sum().clamp(min=1) * (pred[0].numel())
    return diff.sum() / count


def planning_losses(pred: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Planning losses over the samples with ``has_targets`` = 1.

    Args:
        pred: `CompactModel` outputs with ``planning=True``: ``waypoints`` (B, 8, 2), ``route`` (B, 10, 2) m,
            ``target_speed_logits`` (B, 8).
        batch: ``waypoints``, ``route``, ``target_speed_twohot`` (B, 8), ``has_targets`` (B,), whichever present.

    Returns:
        0-d float32 ``waypoints``, ``route`` (mean L1, m) and ``target_speed`` (soft cross-entropy).
    """
    losses = {}
    for key in ("waypoints", "route"):
        if key in pred and key in batch:
            losses[key] = _masked_l1(pred[key], batch[key], _valid(batch, pred[key]))
    if "target_speed_logits" in pred and "target_speed_twohot" in batch:
        logits = pred["target_speed_logits"].float()
        valid = _valid(batch, logits)
        twohot = torch.where(valid[:, None], batch["target_speed_twohot"].float(), 0.0)
        per_sample = -(twohot * F.log_softmax(logits, dim=-1)).sum(-1)
        losses["target_speed"] = torch.where(valid, per_sample, 0.0).sum() / valid.sum().clamp(min=1)
    return losses


def total_loss(losses: dict[str, Tensor], weights: dict[str, float] | None = None) -> Tensor:
    """Weighted sum of the losses, weights normalised to sum to 1 over the losses present.

    Args:
        losses: name -> 0-d tensor.
        weights: overrides of `DEFAULT_LOSS_WEIGHTS` (a loss name not listed there weighs 1).

    Raises:
        ValueError: no losses, a weight for an unknown loss name, or present weights summing to <= 0.
    """
    if not losses:
        raise ValueError("total_loss got no losses; does the batch hold any target the model predicts?")
    table = {name: DEFAULT_LOSS_WEIGHTS.get(name, 1.0) for name in losses}
    normalised = normalise_loss_weights(table, weights, model="compact", known=DEFAULT_LOSS_WEIGHTS)
    return sum(normalised[k] * v.float() for k, v in losses.items())


@torch.no_grad()
def waypoint_l1(pred: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
    """Evaluation metric: mean absolute waypoint error (m, over 8 points and x, y) of the samples with targets.

    Returns:
        0-d float32 tensor; NaN when no sample of the batch has targets.
    """
    valid = _valid(batch, pred["waypoints"])
    err = _masked_l1(pred["waypoints"], batch["waypoints"], valid)
    return torch.where(valid.any(), err, torch.full_like(err, float("nan")))
