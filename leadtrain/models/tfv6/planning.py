"""TFv6 planning decoder (post-training): queries over BEV tokens plus status tokens -> route, waypoints, speed.

As the reference (``planning_context_encoder.{velocity_encoder.0, command_encoder.0, tp_encoder, radar_encoder,
status_pos_embedding, dimension_adapter}``, ``query``, ``transformer_decoder``, ``route_decoder``, ``wp_decoder``,
``target_speed_decoder.{0, 2}``), default config:

- context: the LiDAR features (B, 512, 10, 12) -> 1x1 conv to ``transfuser_token_dim`` (256, the paper's; the
  reference's code said 64) + 2-D sine positions -> 120 tokens; then the
  status tokens + learned positions: speed / 25, the command one-hot (6), the target point, previous and next
  target points (each / [200, 50], one shared linear layer) and the 20 radar queries (+ sine position of their
  predicted (x, y));
- 10 route + 8 waypoint + 1 target-speed queries, 6 decoder layers, 8 heads, FFN 2048 (torch's default);
- route and waypoints are cumulative sums of per-query (x, y) steps; target speed: 8 logits over
  ``target_speed_classes`` and their softmax expectation in m/s.

Losses (names as the reference): ``loss_spatio_temporal_waypoints`` L1; ``loss_target_speed`` cross-entropy
against the two-hot target speed (one-hot at 0 when braking); ``loss_spatial_route`` L1 over all points plus L1
of the last point. Samples whose ``has_targets`` is 0 (leadio marks them) are left out; the reference has none.

``float_type`` (``precision=reference``, `TFv6.set_float_type`): speed, command, target points and the waypoint,
route and target-speed targets are cast to it first, and the two-hot speed target is built in it, as the reference
(in bfloat16 the speed classes 13.89 and 17.78 m/s become 13.875 and 17.75, and targets at 32-64 m round to
0.25 m).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leadtrain.models.tfv6.config import TFv6Config
from leadtrain.models.tfv6.radar import sine_embedding, unit_normalize

__all__ = ["PlanningDecoder", "decode_two_hot", "encode_two_hot"]


def encode_two_hot(speed: Tensor, classes: list[float], brake: Tensor) -> Tensor:
    """(B,) m/s -> (B, C) two-hot over ``classes`` in ``speed``'s dtype (as the reference: each neighbour's weight
    is its own distance over the gap, so in bfloat16 they need not sum to 1; at or above the last class: one-hot
    there; brake: one-hot at class 0; negative speeds count as 0)."""
    c = speed.new_tensor(classes)
    s = speed.clamp(min=0)
    upper = torch.searchsorted(c, s.contiguous(), right=False).clamp(1, len(classes) - 1)
    lower = upper - 1
    gap = c[upper] - c[lower]
    w_low, w_up = ((c[upper] - s) / gap).clamp(0, 1), ((s - c[lower]) / gap).clamp(0, 1)
    out = torch.zeros(s.shape[0], len(classes), dtype=s.dtype, device=s.device)
    out.scatter_(1, lower[:, None], w_low[:, None])
    out.scatter_(1, upper[:, None], w_up[:, None])
    one_hot = F.one_hot(torch.full_like(upper, len(classes) - 1), len(classes)).to(s.dtype)
    out = torch.where((s >= c[-1])[:, None], one_hot, out)
    return torch.where(brake.bool().reshape(-1, 1), F.one_hot(torch.zeros_like(upper), len(classes)).to(s.dtype), out)


def decode_two_hot(probs: Tensor, classes: list[float]) -> Tensor:
    return (probs * probs.new_tensor(classes)).sum(-1)


def sine_position_grid(x: Tensor, num_feats: int) -> Tensor:
    """DETR's normalised 2-D sine positions for a (B, C, H, W) map -> (B, 2 * num_feats, H, W), [y-part, x-part]."""
    b, _, h, w = x.shape
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, h + 1, dtype=torch.float32, device=x.device)[:, None].expand(h, w) / (h + eps) * scale
    xx = torch.arange(1, w + 1, dtype=torch.float32, device=x.device)[None].expand(h, w) / (w + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=x.device)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    parts = []
    for e in (y, xx):
        p = e[..., None] / dim_t
        parts.append(torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=3).flatten(2))
    return torch.cat(parts, dim=2).permute(2, 0, 1)[None].expand(b, -1, -1, -1).to(x.dtype)


class PlanningContextEncoder(nn.Module):
    def __init__(self, cfg: TFv6Config, input_bev_channels: int):
        super().__init__()
        self.cfg, d = cfg, cfg.transfuser_token_dim
        n = 0
        if cfg.use_velocity:
            n += 1
            self.velocity_encoder = nn.Sequential(nn.Linear(1, d))
        if cfg.use_discrete_command:
            n += 1
            self.command_encoder = nn.Sequential(nn.Linear(cfg.discrete_command_dim, d))
        if cfg.use_tp:
            n += 1
            self.tp_encoder = nn.Linear(2, d)
        n += int(cfg.use_previous_tp) + int(cfg.use_next_tp)
        self.use_radar = cfg.radar_detection and cfg.use_radar_detection
        if self.use_radar:
            n += cfg.num_radar_queries
            self.radar_encoder = nn.Linear(cfg.radar_token_dim, d)
        self.num_status_tokens = n
        self.status_pos_embedding = nn.Parameter(torch.zeros(1, n, d))
        self.dimension_adapter = nn.Conv2d(input_bev_channels, d, 1)
        nn.init.uniform_(self.status_pos_embedding)
        self.float_type: torch.dtype | None = None  # precision=reference: the status inputs' dtype

    def forward(self, bev_features: Tensor, radar_features: Tensor | None, radar_predictions: Tensor | None,
                data: dict) -> Tensor:
        cfg, d, ft = self.cfg, self.cfg.transfuser_token_dim, self.float_type
        b = bev_features.shape[0]
        # autocast alone: float32 inputs, target points over constants in the BEV features' dtype; reference: all in ft
        norm = bev_features.new_tensor(cfg.target_points_normalization_constants, dtype=ft).reshape(1, 2)
        status = []
        if cfg.use_velocity:
            status.append(self.velocity_encoder(data["speed"].reshape(-1, 1).to(ft or torch.float32) / cfg.max_speed))
        if cfg.use_discrete_command:
            status.append(self.command_encoder(data["command"].reshape(b, -1).to(ft or torch.float32)))
        for flag, key in ((cfg.use_tp, "target_point"), (cfg.use_previous_tp, "target_point_previous"),
                          (cfg.use_next_tp, "target_point_next")):
            if flag:
                status.append(self.tp_encoder(data[key].reshape(b, 2).to(ft or torch.float32) / norm))
        tokens = [s.reshape(b, 1, d) for s in status]
        if self.use_radar:
            xy = radar_predictions[..., :2]
            pos = sine_embedding(unit_normalize(xy.float() if ft is None else xy, cfg), d)
            radar = self.radar_encoder(radar_features)
            tokens.append(radar + pos.to(radar_features.dtype) if ft is None else radar + pos)
        context = self.dimension_adapter(bev_features)
        if not tokens:  # the reference adds no positions when there are no status tokens
            return context.flatten(2).transpose(1, 2)
        context = (context + sine_position_grid(context, d // 2)).flatten(2).transpose(1, 2)
        status_tokens = torch.cat(tokens, dim=1)
        status_tokens = (status_tokens.to(context.dtype) if ft is None else status_tokens) + self.status_pos_embedding
        return torch.cat([context, status_tokens], dim=1)


class PlanningDecoder(nn.Module):
    def __init__(self, cfg: TFv6Config, input_bev_channels: int):
        super().__init__()
        self.cfg, d = cfg, cfg.transfuser_token_dim
        self.planning_context_encoder = PlanningContextEncoder(cfg, input_bev_channels)
        n = (cfg.num_route_points_prediction * cfg.predict_spatial_path
             + cfg.num_way_points_prediction * cfg.predict_temporal_spatial_waypoints + int(cfg.predict_target_speed))
        self.query = nn.Parameter(torch.zeros(1, n, d))
        layer = nn.TransformerDecoderLayer(d, cfg.transfuser_num_bev_cross_attention_heads, activation=nn.GELU(),
                                           batch_first=True)
        self.transformer_decoder = nn.TransformerDecoder(layer, cfg.transfuser_num_bev_cross_attention_layers,
                                                         norm=nn.LayerNorm(d))
        if cfg.predict_spatial_path:
            self.route_decoder = nn.Linear(d, 2)
        if cfg.predict_temporal_spatial_waypoints:
            self.wp_decoder = nn.Linear(d, 2)
        if cfg.predict_target_speed:
            self.target_speed_decoder = nn.Sequential(nn.Linear(d, d), nn.ReLU(True),
                                                      nn.Linear(d, len(cfg.target_speed_classes)))
        nn.init.uniform_(self.query)
        self.float_type: torch.dtype | None = None  # precision=reference: the targets' dtype

    def forward(self, bev_features: Tensor, radar_features: Tensor | None, radar_predictions: Tensor | None,
                data: dict) -> dict[str, Tensor]:
        cfg = self.cfg
        context = self.planning_context_encoder(bev_features, radar_features, radar_predictions, data)
        q = self.transformer_decoder(self.query.expand(context.shape[0], -1, -1), context)
        out, i = {}, 0
        if cfg.predict_spatial_path:
            out["pred_route"] = torch.cumsum(self.route_decoder(q[:, i : i + cfg.num_route_points_prediction]), 1)
            i += cfg.num_route_points_prediction
        if cfg.predict_temporal_spatial_waypoints:
            out["pred_future_waypoints"] = torch.cumsum(self.wp_decoder(q[:, i : i + cfg.num_way_points_prediction]),
                                                        1)
            i += cfg.num_way_points_prediction
        if cfg.predict_target_speed:
            logits = self.target_speed_decoder(q[:, i])
            out["pred_target_speed_distribution"] = logits
            out["pred_target_speed_scalar"] = decode_two_hot(logits.float().softmax(-1), cfg.target_speed_classes)
        return out

    def loss(self, pred: dict[str, Tensor], data: dict, metrics: dict | None = None) -> dict[str, Tensor]:
        cfg, ft = self.cfg, self.float_type or torch.float32
        some = next(iter(pred.values()))
        valid = (data["has_targets"].reshape(-1) > 0.5 if "has_targets" in data
                 else torch.ones(some.shape[0], dtype=torch.bool, device=some.device)).to(some.device)
        count = valid.sum().clamp(min=1)

        def masked_l1(p: Tensor, t: Tensor) -> Tensor:
            mask = valid.reshape(-1, *([1] * (p.ndim - 1)))
            diff = torch.where(mask, p.float() - torch.where(mask, t.float(), 0.0), 0.0).abs()
            return diff.sum() / (count * p[0].numel())

        losses = {}
        if cfg.predict_temporal_spatial_waypoints:
            target = data["future_waypoints"][:, : cfg.num_way_points_prediction].to(ft)
            losses["loss_spatio_temporal_waypoints"] = masked_l1(pred["pred_future_waypoints"], target)
        if cfg.predict_target_speed:
            speed = torch.where(valid, torch.nan_to_num(data["target_speed"].reshape(-1).to(ft)), 0.0)
            brake = torch.where(valid, torch.nan_to_num(data["brake"].reshape(-1).float()), 0.0)
            twohot = encode_two_hot(speed, cfg.target_speed_classes, brake).float()
            ce = F.cross_entropy(pred["pred_target_speed_distribution"].float(), twohot, reduction="none")
            losses["loss_target_speed"] = torch.where(valid, ce, 0.0).sum() / count
        if cfg.predict_spatial_path:
            route, target = pred["pred_route"], data["route"].to(ft)
            losses["loss_spatial_route"] = masked_l1(route, target) + masked_l1(route[:, -1], target[:, -1])
        if metrics is not None:
            with torch.no_grad():
                self._metrics(pred, data, valid, metrics)
        return losses

    def _metrics(self, pred: dict, data: dict, valid: Tensor, metrics: dict) -> None:
        """metric/{route,waypoints}_{ade,fde} (m, L2) and metric/target_speed_{error,correlation} over valid samples."""
        if not bool(valid.any()):
            return
        cfg = self.cfg
        for name, key, target_key in (("route", "pred_route", "route"),
                                      ("waypoints", "pred_future_waypoints", "future_waypoints")):
            if key in pred:
                p = pred[key][valid].float()
                t = data[target_key][valid][:, : p.shape[1]].float()
                err = (p - t).norm(dim=-1)
                metrics[f"metric/{name}_ade"] = float(err.mean())
                metrics[f"metric/{name}_fde"] = float(err[:, -1].mean())
        if "pred_target_speed_scalar" in pred:
            twohot = encode_two_hot(data["target_speed"].reshape(-1)[valid].float(), cfg.target_speed_classes,
                                    data["brake"].reshape(-1)[valid])
            label = decode_two_hot(twohot, cfg.target_speed_classes)
            p = pred["pred_target_speed_scalar"][valid].float()
            metrics["metric/target_speed_error"] = float((p - label).abs().mean())
            if p.numel() > 1:
                metrics["metric/target_speed_correlation"] = float(torch.corrcoef(torch.stack([p, label]))[0, 1])
