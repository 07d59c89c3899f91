"""TFv6: the reference TransFuser v6 (kesai-labs/lead ``lead.tfv6.tfv6.TFv6``), same module tree and names.

``TFv6(cfg, planning)`` has the top-level modules ``backbone``, ``semantic_decoder``, ``depth_decoder``,
``bev_semantic_decoder``, ``center_net_decoder``, ``radar_detector`` and, with ``planning`` (post-training),
``planning_decoder``; its ``state_dict`` loads into the reference's model with ``strict=True`` and back
(`tests/data/tfv6_state_dict.txt` freezes keys and shapes). Input is a batch in the reference loader's format
(`leadio.lead.to_lead_batch`); `forward` returns the reference ``Prediction``'s fields as a dict:

======================================  ==========================  ===============================
key                                     shape (default config)      meaning
======================================  ==========================  ===============================
``pred_semantic``                       (B, 10, 384, 1152)          camera semantic logits
``pred_depth``                          (B, 384, 1152)              depth (m, unbounded)
``pred_bev_semantic``                   (B, 13, 320, 384)           BEV semantic logits
``pred_bounding_box``                   dict of (B, C, 80, 96)      CenterNet maps (heatmap logits and
                                                                    sigmoid, wh, offset, yaw class/res,
                                                                    velocity)
``pred_radar_features`` / ``_predictions``  (B, 20, 256) / (B, 20, 4)  radar queries; (x, y, v, logit)
``pred_route``                          (B, 10, 2)                  route (m), post-training
``pred_future_waypoints``               (B, 8, 2)                   waypoints (m), post-training
``pred_target_speed_distribution``      (B, 8)                      target-speed logits
``pred_target_speed_scalar``            (B,)                        expected target speed (m/s)
======================================  ==========================  ===============================

`compute_loss` returns the reference's loss names; their weights, the colour augmentation and the rest of what
the training loop needs are in `leadtrain.models.tfv6.spec`.

Mixed precision (`set_float_type`, the trainer's ``precision`` key): by default (``float_type`` None) inputs and
targets are used in float32 under the trainer's autocast. With ``precision=reference`` they are cast as the
reference casts them to its ``torch_float_type`` (bfloat16) before the model and the losses: `REFERENCE_CASTS`
lists the batch keys; the radar matching and loss then compute in the predictions' dtype, CenterNet adds that
dtype's eps to ``avg_factor``, and the planner's two-hot speed targets are built in it (`leadtrain.models.precision`
keeps the norm layers in float32).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from leadtrain.models.tfv6.backbone import TransfuserBackbone
from leadtrain.models.tfv6.config import TFv6Config
from leadtrain.models.tfv6.encoders import timm_or_none
from leadtrain.models.tfv6.heads import BEVDecoder, CenterNetDecoder, PerspectiveDecoder
from leadtrain.models.tfv6.planning import PlanningDecoder
from leadtrain.models.tfv6.radar import RadarDetector
from leadtrain.models.tfv6.weights import resolve_image_weights

__all__ = ["REFERENCE_CASTS", "TFv6"]

#: batch keys the reference casts to its ``torch_float_type`` before using them (model inputs, then loss targets);
#: the others (camera semantics and depth, BEV semantics, yaw classes, brake) it reads as long or bool
REFERENCE_CASTS = ("rgb", "rasterized_lidar", "radar", "speed", "command", "target_point", "target_point_previous",
                   "target_point_next", "center_net_heatmap", "center_net_wh", "center_net_offset",
                   "center_net_yaw_res", "center_net_velocity", "center_net_pixel_weight", "center_net_avg_factor",
                   "radar_detections", "future_waypoints", "route", "target_speed")


class TFv6(nn.Module):
    def __init__(self, cfg: TFv6Config | None = None, planning: bool = False, encoder_backend: str = "auto",
                 image_pretrained_weights: str = "none"):
        """Build the model with random weights (the image encoder from ImageNet weights unless ``"none"``).

        Args:
            cfg: model options (reference names); default: the reference's defaults.
            planning: add the planning decoder (the reference's ``use_planning_decoder``).
            encoder_backend: ``auto`` | ``timm`` | ``builtin`` (`leadtrain.models.tfv6.encoders`).
            image_pretrained_weights: ``none``, ``imagenet`` (timm's, from the Hugging Face cache, downloaded when
                missing: `leadtrain.models.tfv6.weights`) or a weights file.
        """
        super().__init__()
        self.cfg = cfg = cfg or TFv6Config()
        self.planning = planning
        timm = timm_or_none() if encoder_backend != "builtin" else None
        weights = resolve_image_weights(cfg.image_architecture, image_pretrained_weights, timm=timm)
        self.backbone = TransfuserBackbone(cfg, encoder_backend, weights)
        #: ``timm <version>`` or ``built-in (<why>)``
        self.encoder_implementation = self.backbone.encoder_implementation
        self.float_type: torch.dtype | None = None
        img_ch, lid_ch = self.backbone.num_image_features, self.backbone.num_lidar_features
        up = self.backbone.perspective_upsample_factor
        if cfg.use_semantic:
            self.semantic_decoder = PerspectiveDecoder(cfg, img_ch, cfg.num_semantic_classes, up, "semantic")
        if cfg.use_depth:
            self.depth_decoder = PerspectiveDecoder(cfg, img_ch, 1, up, "depth")
        if cfg.use_bev_semantic:
            self.bev_semantic_decoder = BEVDecoder(cfg, cfg.num_bev_semantic_classes)
        if cfg.detect_boxes:
            self.center_net_decoder = CenterNetDecoder(cfg, cfg.num_bb_classes)
        if cfg.radar_detection:
            self.radar_detector = RadarDetector(cfg, lid_ch)
        if planning:
            self.planning_decoder = PlanningDecoder(cfg, lid_ch)
        self.backbone.requires_grad_(not cfg.freeze_backbone)

    def set_float_type(self, float_type: torch.dtype | None) -> None:
        """``precision=reference``: cast `REFERENCE_CASTS` to ``float_type`` where the reference does (its
        ``torch_float_type``); None: float32 inputs and targets (autocast alone)."""
        self.float_type = float_type
        for module in self.modules():
            if module is not self and hasattr(module, "float_type"):
                module.float_type = float_type

    def forward(self, data: dict) -> dict:
        """Predictions for a LEAD-format batch (``rgb``, ``rasterized_lidar``, ``radar``, ``speed``; post-training
        also ``command``, ``target_point``, ``target_point_previous``, ``target_point_next``)."""
        cfg = self.cfg
        missing = [k for k in ("rgb", "rasterized_lidar") if k not in data]
        if missing:
            raise KeyError(f"TFv6 needs batch keys {missing} (the reference loader's names); convert leadio batches "
                           f"with leadio.lead.to_lead_batch")
        bev_features, image_features = self.backbone(data["rgb"], data["rasterized_lidar"])
        out: dict = {}
        radar_features = radar_predictions = None
        if cfg.radar_detection:
            radar_features, radar_predictions = self.radar_detector(bev_features, data["radar"], data["speed"])
            out["pred_radar_features"], out["pred_radar_predictions"] = radar_features, radar_predictions
        if self.planning:
            use_radar = cfg.radar_detection and cfg.use_radar_detection
            out.update(self.planning_decoder(bev_features, radar_features if use_radar else None,
                                             radar_predictions if use_radar else None, data))
        if cfg.use_semantic:
            out["pred_semantic"] = self.semantic_decoder(image_features)
        if cfg.use_depth:
            out["pred_depth"] = self.depth_decoder(image_features)
        grid = self.backbone.top_down(bev_features)
        if cfg.detect_boxes:
            out["pred_bounding_box"] = self.center_net_decoder(grid)
        if cfg.use_bev_semantic:
            out["pred_bev_semantic"] = self.bev_semantic_decoder(grid)
        return out

    def compute_loss(self, pred: dict, data: dict, metrics: dict | None = None) -> dict[str, Tensor]:
        """Unweighted losses under the reference's names; ``metrics`` (if given) gets the ``metric/*`` values."""
        cfg = self.cfg
        losses: dict[str, Tensor] = {}
        if cfg.use_semantic:
            losses["loss_semantic"] = self.semantic_decoder.loss(pred["pred_semantic"], data)
        if cfg.use_depth:
            losses["loss_depth"] = self.depth_decoder.loss(pred["pred_depth"], data)
        if cfg.use_bev_semantic:
            losses["loss_bev_semantic"] = self.bev_semantic_decoder.loss(pred["pred_bev_semantic"], data)
        if cfg.detect_boxes:
            losses.update(self.center_net_decoder.loss(pred["pred_bounding_box"], data))
        if cfg.radar_detection:
            losses["radar_loss"] = self.radar_detector.loss(pred["pred_radar_predictions"], data, metrics)
        if self.planning:
            losses.update(self.planning_decoder.loss(pred, data, metrics))
        return losses
