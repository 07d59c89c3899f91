"""TFv6 perception heads and their losses: perspective (semantic, depth), BEV semantic, CenterNet.

Names and losses are the reference's:

- `PerspectiveDecoder` (``deconv1``/``deconv2``/``deconv3``): image features (stride 32) -> 3x3 convs, bilinear
  x8, convs, x4, convs -> (B, C, 384, 1152) (depth: (B, 384, 1152) m). ``loss_semantic``: cross-entropy;
  ``loss_depth``: L1 against the depth in metres,
  truncated to whole metres (the reference casts the label to long).
- `BEVDecoder` (``net``): BEV grid (B, 64, 80, 96) -> 3x3 conv, 1x1 conv, bilinear to (B, 13, 320, 384).
  ``loss_bev_semantic``: cross-entropy that ignores pixels outside the camera view (all visible with 3 cameras),
  averaged over all pixels (ignored ones count as 0, as the reference).
- `CenterNetDecoder` (``{heatmap,wh,offset,yaw_class,yaw_res,velocity}_head``, each 3x3 conv-ReLU-1x1 conv) on
  the BEV grid. Losses per sample, divided by the sample's ``center_net_avg_factor`` (+ eps), then averaged:
  Gaussian focal (alpha 2, gamma 4) on the sigmoid heatmap; L1 on wh and offset (/2); cross-entropy on the yaw
  class; smooth-L1 on the yaw residual; L1 on velocity; all but the heatmap weighted by the pixel weight. The
  targets, pixel weight and ``avg_factor`` are first cast to ``float_type`` (float32, or with ``precision=reference``
  the mixed-precision dtype, as the reference), and the eps is that dtype's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leadtrain.models.tfv6.config import TFv6Config

__all__ = ["BEVDecoder", "CenterNetDecoder", "PerspectiveDecoder", "decode_boxes"]


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1)


class PerspectiveDecoder(nn.Module):
    def __init__(self, cfg: TFv6Config, in_channels: int, out_channels: int, upsample_factor: int, modality: str):
        super().__init__()
        self.cfg, self.modality = cfg, modality
        self.scale_factor_0 = upsample_factor // cfg.deconv_scale_factor_0
        self.scale_factor_1 = upsample_factor // cfg.deconv_scale_factor_1
        c0, c1, c2 = cfg.deconv_channel_num_0, cfg.deconv_channel_num_1, cfg.deconv_channel_num_2
        self.deconv1 = nn.Sequential(_conv(in_channels, c0), nn.ReLU(True), _conv(c0, c1), nn.ReLU(True))
        self.deconv2 = nn.Sequential(_conv(c1, c2), nn.ReLU(True), _conv(c2, c2), nn.ReLU(True))
        self.deconv3 = nn.Sequential(_conv(c2, c2), nn.ReLU(True), _conv(c2, out_channels))

    def forward(self, image_features: Tensor) -> Tensor:
        x = self.deconv1(image_features)
        x = F.interpolate(x, scale_factor=self.scale_factor_0, mode="bilinear", align_corners=False)
        x = self.deconv2(x)
        x = F.interpolate(x, scale_factor=self.scale_factor_1, mode="bilinear", align_corners=False)
        x = self.deconv3(x)
        h, w = self.cfg.final_image_height, self.cfg.final_image_width
        if x.shape[2:] != (h, w):
            if max(abs(x.shape[2] - h) / h, abs(x.shape[3] - w) / w) > 0.1:
                raise ValueError(f"{self.modality} decoder output {tuple(x.shape[2:])} is more than 10% off the "
                                 f"configured image size ({h}, {w}); set final_image_height/width to the input size")
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        return x[:, 0] if self.modality == "depth" else x

    def loss(self, pred: Tensor, data: dict) -> Tensor:
        label = data[self.modality]
        if self.modality == "semantic":
            return F.cross_entropy(pred.float(), label.long())
        return F.l1_loss(pred.float(), label.long().float())  # the reference truncates depth to whole metres


def _visible_bev_pixels(cfg: TFv6Config) -> Tensor:
    """(H, W) 1 where a BEV pixel is inside the cameras' horizontal field of view (reference approximation)."""
    h, w = cfg.lidar_height_pixel, cfg.lidar_width_pixel
    if cfg.num_used_cameras >= 3:  # the reference treats 3 or more cameras as 360 degrees
        return torch.ones(h, w)
    half_fov = math.radians((cfg.num_used_cameras * 60 + 5) / 2)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    angle = torch.atan2(ys - h // 2, xs + cfg.min_x_meter * cfg.pixels_per_meter)
    return (angle.abs() <= half_fov).float()


class BEVDecoder(nn.Module):
    def __init__(self, cfg: TFv6Config, num_classes: int):
        super().__init__()
        c = cfg.bev_features_chanels
        self.net = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(True), nn.Conv2d(c, num_classes, 1, bias=False),
                                 nn.Upsample(size=(cfg.lidar_height_pixel, cfg.lidar_width_pixel), mode="bilinear",
                                             align_corners=False))
        # not a parameter or buffer (absent from the reference's state_dict); moved with the input in loss()
        self.visible = _visible_bev_pixels(cfg)

    def forward(self, bev_grid: Tensor) -> Tensor:
        return self.net(bev_grid)

    def loss(self, pred: Tensor, data: dict) -> Tensor:
        visible = self.visible.to(pred.device)
        label = torch.where(visible.bool(), data["bev_semantic"].long(), -1)
        per_pixel = F.cross_entropy(pred.float(), label, reduction="none", ignore_index=-1)
        return per_pixel.mean(dim=(1, 2)).mean()


def _head(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1), nn.ReLU(True), nn.Conv2d(cin, cout, 1))


def gaussian_focal_loss(pred: Tensor, target: Tensor, alpha: float = 2.0, gamma: float = 4.0) -> Tensor:
    """Elementwise CornerNet/mmdet focal loss on probabilities ``pred`` (eps 1e-12 inside the logs)."""
    eps = 1e-12
    pos = -(pred + eps).log() * (1 - pred).pow(alpha) * target.eq(1)
    neg = -(1 - pred + eps).log() * pred.pow(alpha) * (1 - target).pow(gamma)
    return pos + neg


class CenterNetDecoder(nn.Module):
    OUTPUTS = ("heatmap", "wh", "offset", "yaw_class", "yaw_res", "velocity")

    def __init__(self, cfg: TFv6Config, num_classes: int):
        super().__init__()
        c, self.cfg = cfg.bb_input_channel, cfg
        self.heatmap_head = _head(c, num_classes)
        self.wh_head = _head(c, 2)
        self.offset_head = _head(c, 2)
        self.yaw_class_head = _head(c, cfg.num_dir_bins)
        self.yaw_res_head = _head(c, 1)
        self.has_velocity = cfg.training_used_lidar_steps > 1
        if self.has_velocity:
            self.velocity_head = _head(c, 1)
        self.float_type: torch.dtype | None = None  # precision=reference: the targets' dtype (TFv6.set_float_type)

    def forward(self, bev_grid: Tensor) -> dict[str, Tensor]:
        logits = self.heatmap_head(bev_grid)
        out = {"center_heatmap_logit_pred": logits, "center_heatmap_pred": logits.float().sigmoid(),
               "wh_pred": self.wh_head(bev_grid), "offset_pred": self.offset_head(bev_grid),
               "yaw_class_pred": self.yaw_class_head(bev_grid), "yaw_res_pred": self.yaw_res_head(bev_grid)}
        if self.has_velocity:
            out["velocity_pred"] = self.velocity_head(bev_grid)
        return out

    def loss(self, pred: dict[str, Tensor], data: dict) -> dict[str, Tensor]:
        ft = self.float_type or torch.float32

        def target(key: str) -> Tensor:
            return data[key].to(ft)

        # in ft, as the reference: bfloat16's eps (2**-7) changes avg_factor, and the sum rounds there
        avg = target("center_net_avg_factor").reshape(-1) + torch.finfo(ft).eps  # (B,)
        weight = target("center_net_pixel_weight").float()

        def per_sample(x: Tensor) -> Tensor:
            return x.flatten(1).sum(1)

        # the focal loss's (1 - target) ** gamma is computed in the target's dtype, as the reference's
        heat = per_sample(gaussian_focal_loss(pred["center_heatmap_pred"].float(), target("center_net_heatmap"))) / avg
        wh = per_sample(F.l1_loss(pred["wh_pred"].float(), target("center_net_wh").float(), reduction="none") * weight)
        offset = per_sample(F.l1_loss(pred["offset_pred"].float(), target("center_net_offset").float(),
                                      reduction="none") * weight)
        yaw_class = per_sample(F.cross_entropy(pred["yaw_class_pred"].float(), data["center_net_yaw_class"].long(),
                                               reduction="none") * weight[:, 0])
        yaw_res = per_sample(F.smooth_l1_loss(pred["yaw_res_pred"].float(), target("center_net_yaw_res").float(),
                                              reduction="none") * weight[:, 0:1])
        channels = pred["wh_pred"].shape[1]
        losses = {"loss_center_net_heatmap": heat.mean(), "loss_center_net_wh": (wh / (avg * channels)).mean(),
                  "loss_center_net_offset": (offset / (avg * channels)).mean(),
                  "loss_center_net_yaw_class": (yaw_class / avg).mean(),
                  "loss_center_net_yaw_res": (yaw_res / avg).mean()}
        if self.has_velocity:
            vel = per_sample(F.l1_loss(pred["velocity_pred"].float(), target("center_net_velocity").float(),
                                       reduction="none") * weight[:, 0:1])
            losses["loss_center_net_velocity"] = (vel / avg).mean()
        else:
            losses["loss_center_net_velocity"] = heat.new_zeros(())
        return losses


@torch.no_grad()
def decode_boxes(pred: dict[str, Tensor], cfg: TFv6Config, k: int = 100, kernel: int = 3) -> Tensor:
    """Top-k CenterNet boxes (B, k, 9): [x, y, w, h, yaw, velocity, brake=0, class, score], x/y/w/h in BEV pixels.

    As the reference's ``pred_bounding_box_image_system``: 3x3 local maxima of the heatmap, top k over classes and
    cells, sub-cell offset added, cells scaled by ``pixels_per_meter`` (one cell per metre on the default grid).
    """
    heat = pred["center_heatmap_pred"].float()
    peaks = heat * (F.max_pool2d(heat, kernel, 1, (kernel - 1) // 2) == heat)
    b, _, h, w = heat.shape
    scores, index = peaks.reshape(b, -1).topk(min(k, peaks[0].numel()))
    classes, cell = index // (h * w), index % (h * w)
    ys, xs = (cell // w).float(), (cell % w).float()

    def gather(key: str) -> Tensor:
        x = pred[key].float().flatten(2).transpose(1, 2)  # (B, h*w, C)
        return x.gather(1, cell[..., None].expand(-1, -1, x.shape[2]))

    wh, offset = gather("wh_pred"), gather("offset_pred")
    bins = gather("yaw_class_pred").argmax(-1).float()
    yaw = bins * (2 * math.pi / cfg.num_dir_bins) + gather("yaw_res_pred")[..., 0]
    yaw = torch.where(yaw > math.pi, yaw - 2 * math.pi, yaw)
    velocity = gather("velocity_pred")[..., 0] if "velocity_pred" in pred else torch.zeros_like(yaw)
    boxes = torch.stack([xs + offset[..., 0], ys + offset[..., 1], wh[..., 0], wh[..., 1], yaw, velocity,
                         torch.zeros_like(yaw), classes.float(), scores], dim=2)
    boxes[..., :4] *= cfg.pixels_per_meter
    return boxes
