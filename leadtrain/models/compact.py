"""The compact model (``model=compact``): a small end-to-end driving model for CPU demos and tests, after
TransFuser's layout: camera and LiDAR-BEV encoders, transformer fusion, perception heads and an optional planner.
Pure torch, trained from scratch (no downloaded weights). Its losses are `leadtrain.models.compact_losses`;
``SPEC`` is its row of `leadtrain.models.MODELS`.

Data flow for a batch of B (shapes for the ``reference`` preset; ``tiny`` pools the inputs first)::

    rgb uint8 (B,3,384,1152) -> /255, ImageNet norm, area-pool x image_downscale -> image CNN: stem /2, stages /2
    lidar uint8 (B,C,320,384) -> min(counts, 5) / 5 (`LIDAR_HIST_MAX`), area-pool x lidar_downscale -> LiDAR CNN
    deepest image and LiDAR maps -> avg-pooled to anchor grids -> tokens (+ learned positions, + radar tokens
        when the batch has ``radar``) -> nn.TransformerEncoder -> projected, upsampled and added back to both maps
    camera decoder: every image stage -> 1x1 conv, summed top-down (FPN), resized to (384, 1152) /
        camera_out_stride, 3x3 conv -> semantic logits (10) and depth (m, 50 * sigmoid)
    BEV decoder: every LiDAR stage -> same, at (320, 384) / 4 = 80 x 96 (1 m cells) -> BEV semantic logits (13)
        and CenterNet maps: heatmap logits (8), wh (2), offset (2), yaw class logits (12), yaw residual,
        velocity, brake logits (2)
    planner (``use_planner``, post-training): 8 waypoint + 10 route + 1 speed queries attend over the fused tokens
        plus a status token (target point, next target point, speed, command) -> waypoints and route as cumulative
        sums of per-step offsets (m), target-speed logits (8)

Dense outputs: with ``upsample_dense`` (reference, small) semantic and BEV-semantic logits are bilinearly
upsampled to the target resolution (384x1152, 320x384), as LEAD; without it (tiny) they stay at the decoder's
resolution and `leadtrain.models.compact_losses` compares them with nearest-subsampled targets. Depth is
predicted at the decoder's resolution (reference: 96x288, exactly the stored depth) and resized to the target in
the loss.

Simplified vs LEAD's TransFuser (kesai-labs/lead), whose reference port is ``model=tfv6``:

- backbones: small ResNet-style CNNs trained from scratch, not timm RegNetY/ResNet with ImageNet weights;
- fusion: one transformer at the deepest scale, not one per encoder scale;
- decoders: FPN-lite (1x1 laterals summed top-down, one 3x3 conv), not progressive upsampling decoders;
- CenterNet: one shared 3x3 trunk for all outputs, not a two-layer head per output;
- radar: only fusion tokens (no radar-detection head); planner: a minimal query decoder, not LEAD's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leadio.schema import DEPTH_MAX_M, LIDAR_HIST_MAX
from leadtrain.models.compact_losses import DEFAULT_LOSS_WEIGHTS, perception_losses, planning_losses
from leadtrain.models.spec import ModelSpec

if TYPE_CHECKING:
    from leadtrain.config import TrainingConfig

__all__ = ["SPEC", "CompactConfig", "CompactModel"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
BOX_GRID_STRIDE = 4  # LiDAR pixels per CenterNet cell: 4 px/m -> 1 m cells, 320x384 -> 80x96
HEATMAP_PRIOR_BIAS = -2.19  # CenterNet: sigmoid(-2.19) ~ 0.1 initial heatmap


@dataclass(frozen=True, kw_only=True)
class CompactConfig:
    """Sizes of `CompactModel`. Defaults are the ``reference`` preset; see `CompactConfig.preset`.

    Encoder widths are (stem, stage 1, ..., stage n); depths are residual blocks per stage (each stage first
    halves the resolution). Anchors are the (rows, cols) token grids the deepest maps are pooled to for fusion.
    """

    image_downscale: int = 1  # area-pool the 384x1152 image by this factor before the CNN
    image_widths: tuple[int, ...] = (32, 64, 128, 256, 512)
    image_depths: tuple[int, ...] = (2, 2, 2, 2)
    lidar_channels: int = 1  # channels of the ``lidar`` BEV (1 = all sweeps in one histogram)
    lidar_downscale: int = 1
    lidar_widths: tuple[int, ...] = (32, 64, 128, 256, 512)
    lidar_depths: tuple[int, ...] = (2, 2, 2, 2)
    decoder_width: int = 128  # channels of the camera and BEV decoders
    head_width: int = 128  # CenterNet trunk channels
    camera_out_stride: int = 4  # camera decoder output = image size / this (4 -> 96x288, the depth size)
    upsample_dense: bool = True  # upsample semantic / BEV-semantic logits to the targets' resolution
    fusion_dim: int = 512
    fusion_heads: int = 8
    fusion_layers: int = 4
    image_anchors: tuple[int, int] = (12, 36)
    lidar_anchors: tuple[int, int] = (10, 12)
    use_radar: bool = True  # radar points become fusion tokens when the batch has ``radar``
    dropout: float = 0.0  # transformer dropout
    use_planner: bool = False  # build the planner (post-training); its parameters are ``planner.*``
    planner_layers: int = 3
    num_semantic_classes: int = 10
    num_bev_classes: int = 13
    num_box_classes: int = 8
    num_yaw_bins: int = 12
    num_waypoints: int = 8
    num_route_points: int = 10
    num_speed_classes: int = 8

    def __post_init__(self) -> None:
        problems = []
        for name in ("image", "lidar"):
            widths, depths = getattr(self, f"{name}_widths"), getattr(self, f"{name}_depths")
            if len(widths) != len(depths) + 1 or min(widths) < 1 or min(depths) < 0:
                problems.append(f"{name}_widths must be (stem, one width per stage) with {name}_depths one count "
                                f"per stage; got {widths} and {depths}")
        if self.fusion_dim % self.fusion_heads:
            problems.append(f"fusion_dim {self.fusion_dim} must be a multiple of fusion_heads {self.fusion_heads}")
        if min(self.image_downscale, self.lidar_downscale, self.camera_out_stride, self.fusion_layers) < 1:
            problems.append("image_downscale, lidar_downscale, camera_out_stride and fusion_layers must be >= 1")
        if problems:
            raise ValueError("invalid CompactConfig: " + "; ".join(problems))

    @classmethod
    def preset(cls, name: str, **overrides) -> CompactConfig:
        """A named size (``tiny``, ``small``, ``reference``), with field overrides (e.g. ``use_planner=True``).

        Raises:
            ValueError: an unknown preset name (lists the valid ones) or an unknown field.
        """
        if name not in _PRESETS:
            raise ValueError(f"unknown model preset {name!r}; valid presets: {sorted(_PRESETS)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown CompactConfig field(s) {unknown}; valid fields: {sorted(fields)}")
        return cls(**{**_PRESETS[name], **overrides})


_PRESETS: dict[str, dict] = {
    "reference": {},
    "small": dict(image_downscale=2, image_widths=(24, 48, 96, 192, 256), image_depths=(1, 2, 2, 1),
                  lidar_widths=(24, 48, 96, 192, 256), lidar_depths=(1, 2, 2, 1), decoder_width=64, head_width=64,
                  camera_out_stride=8, fusion_dim=256, fusion_heads=8, fusion_layers=2, image_anchors=(6, 18),
                  lidar_anchors=(5, 6), planner_layers=2),
    "tiny": dict(image_downscale=4, image_widths=(16, 24, 48, 96, 128), image_depths=(1, 1, 1, 1),
                 lidar_downscale=2, lidar_widths=(16, 24, 48, 96, 128), lidar_depths=(1, 1, 1, 1), decoder_width=32,
                 head_width=32, camera_out_stride=8, upsample_dense=False, fusion_dim=64, fusion_heads=4,
                 fusion_layers=1, image_anchors=(3, 9), lidar_anchors=(5, 6), planner_layers=1),
}


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Block(nn.Module):
    """Basic residual block (two 3x3 conv-BN, identity shortcut)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(width, width)
        self.conv2 = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.conv2(self.conv1(x)))


class _Encoder(nn.Module):
    """Stride-2 stem, then stages that each halve the resolution; returns every stage's map (stem excluded)."""

    def __init__(self, in_channels: int, widths: Sequence[int], depths: Sequence[int]) -> None:
        super().__init__()
        self.stem = _conv_bn(in_channels, widths[0], stride=2)
        self.stages = nn.ModuleList(
            nn.Sequential(_conv_bn(widths[i], widths[i + 1], stride=2), *(_Block(widths[i + 1]) for _ in range(d)))
            for i, d in enumerate(depths)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        feats, x = [], self.stem(x)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling, area pooling for downsampling; a no-op at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class _DenseDecoder(nn.Module):
    """FPN-lite: every level -> 1x1 conv to ``width``, summed top-down (each sum upsampled to the next finer
    level), resized to the output size, one 3x3 conv-BN-ReLU."""

    def __init__(self, in_widths: Sequence[int], width: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_widths)
        self.fuse = _conv_bn(width, width)

    def forward(self, feats: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
        out = None
        for lateral, f in zip(reversed(self.lateral), reversed(feats), strict=True):
            y = lateral(f)
            out = y if out is None else y + _resize(out, tuple(y.shape[-2:]))
        return self.fuse(_resize(out, size))


class _Fusion(nn.Module):
    """Transformer fusion of the deepest image and LiDAR maps (and radar points) at anchor resolution."""

    def __init__(self, cfg: CompactConfig) -> None:
        super().__init__()
        d, self.cfg = cfg.fusion_dim, cfg
        self.image_in, self.image_out = nn.Conv2d(cfg.image_widths[-1], d, 1), nn.Conv2d(d, cfg.image_widths[-1], 1)
        self.lidar_in, self.lidar_out = nn.Conv2d(cfg.lidar_widths[-1], d, 1), nn.Conv2d(d, cfg.lidar_widths[-1], 1)
        self.image_pos = nn.Parameter(torch.zeros(1, cfg.image_anchors[0] * cfg.image_anchors[1], d))
        self.lidar_pos = nn.Parameter(torch.zeros(1, cfg.lidar_anchors[0] * cfg.lidar_anchors[1], d))
        nn.init.trunc_normal_(self.image_pos, std=0.02)
        nn.init.trunc_normal_(self.lidar_pos, std=0.02)
        # radar point: x/32, y/32, z/4, v/10 and a one-hot of the sensor id (4)
        self.radar_in = nn.Sequential(nn.Linear(8, d), nn.ReLU(), nn.Linear(d, d)) if cfg.use_radar else None
        layer = nn.TransformerEncoderLayer(d, cfg.fusion_heads, 4 * d, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.fusion_layers, norm=nn.LayerNorm(d),
                                             enable_nested_tensor=False)

    def _radar_tokens(self, radar: Tensor) -> tuple[Tensor, Tensor]:
        radar = radar.float()
        xyzv = radar[..., :4]
        sensor = F.one_hot(radar[..., 4].long().clamp(0, 3), 4).to(xyzv.dtype)
        feats = torch.cat([xyzv * xyzv.new_tensor([1 / 32, 1 / 32, 1 / 4, 1 / 10]), sensor], dim=-1)
        padding = (xyzv == 0).all(dim=-1)  # padded rows are all zeros
        return self.radar_in(torch.nan_to_num(feats)), padding

    def forward(self, image: Tensor, lidar: Tensor, radar: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Fuse; returns (image map, LiDAR map, fused image + LiDAR tokens (B, n_img + n_lidar, fusion_dim))."""
        cfg = self.cfg
        img_tok = self.image_in(F.adaptive_avg_pool2d(image, cfg.image_anchors)).flatten(2).transpose(1, 2)
        lid_tok = self.lidar_in(F.adaptive_avg_pool2d(lidar, cfg.lidar_anchors)).flatten(2).transpose(1, 2)
        tokens = [img_tok + self.image_pos, lid_tok + self.lidar_pos]
        n_img, n_lid = img_tok.shape[1], lid_tok.shape[1]
        mask = None
        if radar is not None and self.radar_in is not None:
            radar_tok, padding = self._radar_tokens(radar)
            tokens.append(radar_tok.to(img_tok.dtype))
            mask = torch.cat([padding.new_zeros(padding.shape[0], n_img + n_lid), padding], dim=1)
        elif self.radar_in is not None:  # no radar in this batch: a zero term keeps DDP's unused-parameter check quiet
            tokens[0] = tokens[0] + 0.0 * sum(p.sum() for p in self.radar_in.parameters())
        x = self.encoder(torch.cat(tokens, dim=1), src_key_padding_mask=mask)
        fused = x[:, : n_img + n_lid]
        img_map = fused[:, :n_img].transpose(1, 2).reshape(x.shape[0], -1, *cfg.image_anchors)
        lid_map = fused[:, n_img:].transpose(1, 2).reshape(x.shape[0], -1, *cfg.lidar_anchors)
        image = image + _resize(self.image_out(img_map), tuple(image.shape[-2:]))
        lidar = lidar + _resize(self.lidar_out(lid_map), tuple(lidar.shape[-2:]))
        return image, lidar, fused


class _Planner(nn.Module):
    """Query decoder: waypoint, route and target-speed queries attend over fused tokens plus a status token."""

    def __init__(self, cfg: CompactConfig) -> None:
        super().__init__()
        d, self.cfg = cfg.fusion_dim, cfg
        # status: target point / 20 (2), next target point / 20 (2), speed / 10 (1), command one-hot (6)
        self.status = nn.Sequential(nn.Linear(11, d), nn.ReLU(), nn.Linear(d, d))
        self.queries = nn.Parameter(torch.zeros(1, cfg.num_waypoints + cfg.num_route_points + 1, d))
        nn.init.trunc_normal_(self.queries, std=0.02)
        layer = nn.TransformerDecoderLayer(d, cfg.fusion_heads, 4 * d, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.planner_layers, norm=nn.LayerNorm(d))
        self.waypoint_head, self.route_head = nn.Linear(d, 2), nn.Linear(d, 2)
        self.speed_head = nn.Linear(d, cfg.num_speed_classes)

    def forward(self, tokens: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        missing = [k for k in ("target_point", "speed") if k not in batch]
        if missing:
            raise ValueError(f"planning needs batch keys {missing}; load the 'targets' key from leadio")
        b = tokens.shape[0]
        target = batch["target_point"].float().reshape(b, 2)
        nxt = batch["next_target_point"].float().reshape(b, 2) if "next_target_point" in batch else target
        command = batch["command"].float().reshape(b, 6) if "command" in batch else target.new_zeros(b, 6)
        status = torch.cat([target / 20, nxt / 20, batch["speed"].float().reshape(b, 1) / 10, command], dim=1)
        # samples without planning targets are NaN-filled: zero them so no NaN reaches any gradient
        status = self.status(torch.nan_to_num(status, nan=0.0, posinf=0.0, neginf=0.0)).to(tokens.dtype)
        memory = torch.cat([tokens, status[:, None]], dim=1)
        q = self.decoder(self.queries.expand(b, -1, -1) + status[:, None], memory)
        nw, nr = self.cfg.num_waypoints, self.cfg.num_route_points
        # Waypoint steps are predicted in units of the distance covered at the current speed in one waypoint
        # interval (0.25 s, floor 0.5 m/s): "keep going at this speed" is then the same output at any speed,
        # which generalises across routes far better than metres (measured: tests/leadtrain/test_learning.py).
        unit = (torch.nan_to_num(batch["speed"].float().reshape(b, 1, 1), nan=0.0).clamp(min=0.5) * 0.25)
        return {
            "waypoints": torch.cumsum(self.waypoint_head(q[:, :nw]).float() * unit, dim=1),  # fp32 under autocast
            "route": torch.cumsum(self.route_head(q[:, nw : nw + nr]).float(), dim=1),
            "target_speed_logits": self.speed_head(q[:, nw + nr]),
        }


class CompactModel(nn.Module):
    """The compact model; see the module docstring for the architecture.

    Args:
        config: sizes; ``CompactConfig.preset("tiny" | "small" | "reference", use_planner=...)``.
    """

    def __init__(self, config: CompactConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config if config is not None else CompactConfig()
        self.register_buffer("rgb_mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("rgb_std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)
        self.image_encoder = _Encoder(3, cfg.image_widths, cfg.image_depths)
        self.lidar_encoder = _Encoder(cfg.lidar_channels, cfg.lidar_widths, cfg.lidar_depths)
        self.fusion = _Fusion(cfg)
        c = cfg.decoder_width
        self.camera_decoder = _DenseDecoder(cfg.image_widths[1:], c)
        self.bev_decoder = _DenseDecoder(cfg.lidar_widths[1:], c)
        self.semantic_head = nn.Conv2d(c, cfg.num_semantic_classes, 1)
        self.depth_head = nn.Conv2d(c, 1, 1)
        self.bev_semantic_head = nn.Conv2d(c, cfg.num_bev_classes, 1)
        self.box_splits = {"center_heatmap": cfg.num_box_classes, "center_wh": 2, "center_offset": 2,
                           "center_yaw_class": cfg.num_yaw_bins, "center_yaw_res": 1, "center_velocity": 1,
                           "center_brake": 2}  # fmt: skip
        self.box_head = nn.Sequential(nn.Conv2d(c, cfg.head_width, 3, 1, 1), nn.ReLU(inplace=True),
                                      nn.Conv2d(cfg.head_width, sum(self.box_splits.values()), 1))
        with torch.no_grad():
            self.box_head[-1].bias[: cfg.num_box_classes].fill_(HEATMAP_PRIOR_BIAS)
        self.planner = _Planner(cfg) if cfg.use_planner else None

    def num_parameters(self) -> int:
        """Number of parameters (trainable and frozen)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, batch: dict[str, Tensor], planning: bool = False) -> dict[str, Tensor]:
        """Predict perception maps and, with ``planning``, the plan.

        Args:
            batch: leadio's batch on the model's device. Needs ``rgb`` uint8 (B, 3, H, W) and ``lidar`` uint8
                (B, lidar_channels, Hl, Wl) BEV counts; uses ``radar`` (B, P, 5) when present, and with
                ``planning`` ``target_point`` (B, 2), ``speed`` (B,), optionally ``next_target_point``, ``command``.
            planning: also run the planner (needs ``use_planner=True``).

        Returns:
            Logits and regressions in the autocast dtype; depth, waypoints and route in float32. With s =
            camera_out_stride, g = (Hl/4, Wl/4) = 80x96 cells (1 m), (h, w) = (H, W) with ``upsample_dense`` else
            (H/s, W/s), (bh, bw) = (Hl, Wl) with ``upsample_dense`` else g:
            ``semantic`` (B, 10, h, w); ``depth`` (B, H/s, W/s) m; ``bev_semantic`` (B, 13, bh, bw);
            ``center_heatmap`` (B, 8, *g) logits; ``center_wh`` (B, 2, *g) half-extents, m; ``center_offset``
            (B, 2, *g) cells; ``center_yaw_class`` (B, 12, *g) logits; ``center_yaw_res`` (B, 1, *g) rad;
            ``center_velocity`` (B, 1, *g) m/s; ``center_brake`` (B, 2, *g) logits. With ``planning``:
            ``waypoints`` (B, 8, 2) m, ``route`` (B, 10, 2) m, ``target_speed_logits`` (B, 8).

        Raises:
            ValueError: a missing or misshaped input, or ``planning`` on a model built without the planner.
        """
        cfg = self.config
        for key, channels in (("rgb", 3), ("lidar", cfg.lidar_channels)):
            if key not in batch or batch[key].ndim != 4 or batch[key].shape[1] != channels:
                got = tuple(batch[key].shape) if key in batch else "missing"
                raise ValueError(f"CompactModel needs batch[{key!r}] of shape (B, {channels}, H, W); got {got}")
        if planning and self.planner is None:
            raise ValueError("planning=True but the model has no planner; build it with "
                             "CompactConfig.preset(..., use_planner=True) (post-training)")
        rgb, lidar = batch["rgb"], batch["lidar"]
        image = rgb.float()
        if cfg.image_downscale > 1:
            image = F.avg_pool2d(image, cfg.image_downscale)
        image = (image - self.rgb_mean) / self.rgb_std
        bev = lidar.float().clamp(max=LIDAR_HIST_MAX) / LIDAR_HIST_MAX
        if cfg.lidar_downscale > 1:
            bev = F.avg_pool2d(bev, cfg.lidar_downscale)

        image_feats, lidar_feats = self.image_encoder(image), self.lidar_encoder(bev)
        radar = batch.get("radar") if cfg.use_radar else None
        image_feats[-1], lidar_feats[-1], tokens = self.fusion(image_feats[-1], lidar_feats[-1], radar)

        cam_size = (rgb.shape[2] // cfg.camera_out_stride, rgb.shape[3] // cfg.camera_out_stride)
        grid = (lidar.shape[2] // BOX_GRID_STRIDE, lidar.shape[3] // BOX_GRID_STRIDE)
        cam = self.camera_decoder(image_feats, cam_size)
        bev_feat = self.bev_decoder(lidar_feats, grid)
        semantic, bev_semantic = self.semantic_head(cam), self.bev_semantic_head(bev_feat)
        if cfg.upsample_dense:
            semantic = F.interpolate(semantic, size=rgb.shape[2:], mode="bilinear", align_corners=False)
            bev_semantic = F.interpolate(bev_semantic, size=lidar.shape[2:], mode="bilinear", align_corners=False)
        out = {"semantic": semantic, "depth": DEPTH_MAX_M * torch.sigmoid(self.depth_head(cam).float())[:, 0],
               "bev_semantic": bev_semantic}
        out.update(zip(self.box_splits, torch.split(self.box_head(bev_feat), list(self.box_splits.values()), 1),
                       strict=True))
        if planning:
            out.update(self.planner(tokens, batch))
        return out


# ---- the row of leadtrain.models.MODELS --------------------------------------------------------------------------
def _build(cfg: TrainingConfig) -> CompactModel:
    return CompactModel(CompactConfig.preset(cfg.model_size, use_planner=cfg.use_planning_decoder))


def _forward(cfg: TrainingConfig, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    return model(batch, planning=cfg.use_planning_decoder)


def _losses(model: nn.Module, pred: dict[str, Tensor], batch: dict[str, Tensor],
            metrics: dict | None) -> dict[str, Tensor]:
    return perception_losses(pred, batch) | planning_losses(pred, batch)  # no planning outputs: no planning losses


def _loss_table(cfg: TrainingConfig) -> dict[str, float]:
    """LEAD's weights (`DEFAULT_LOSS_WEIGHTS`) of the losses the phase computes: planning ones only post-training."""
    planning = {"waypoints", "route", "target_speed"}
    return {k: w for k, w in DEFAULT_LOSS_WEIGHTS.items() if cfg.use_planning_decoder or k not in planning}


#: CenterNet outputs -> `leadtrain.viz`'s names (the reference's ``pred_bounding_box`` keys)
_VIZ_BOXES = {"center_wh": "wh_pred", "center_offset": "offset_pred", "center_yaw_class": "yaw_class_pred",
              "center_yaw_res": "yaw_res_pred", "center_velocity": "velocity_pred"}


def _viz(pred: dict[str, Tensor]) -> dict:
    """`CompactModel` outputs -> `leadtrain.viz.render_sample`'s names (heatmap logits -> scores)."""
    out = {k: pred[k] for k in ("semantic", "depth", "bev_semantic", "waypoints", "route") if k in pred}
    if "center_heatmap" in pred:
        out["boxes"] = {"center_heatmap_pred": pred["center_heatmap"].detach().float().sigmoid(),
                        **{new: pred[old] for old, new in _VIZ_BOXES.items() if old in pred}}
    return out


SPEC = ModelSpec(name="compact", build=_build, prepare=lambda cfg, batch: batch, forward=_forward, losses=_losses,
                 loss_table=_loss_table, loss_names=tuple(DEFAULT_LOSS_WEIGHTS), viz=_viz)
