"""TFv6 radar detector: 20 learned queries decode moving objects from radar points and BEV features.

As the reference (names ``bev_proj``, ``ego_vel_proj``, ``radar_point_tokenizer``, ``bev_pos_embed``,
``ego_vel_pos_embed``, ``q``, ``tf``, ``state_decoder``, ``label_decoder``):

- each of the 300 radar points (x, y, z, v, sensor id) becomes a token: the projected BEV feature sampled at its
  (x, y), v / max_speed and the sensor one-hot, through an MLP, plus a sine embedding of its normalised (x, y);
- the queries cross-attend over BEV tokens (+ learned positions), an ego-speed token and the point tokens;
- each query gives (x, y, v) squashed into the BEV range and [0, max_speed], and a validity logit: (B, Q, 4).

``radar_loss``: each sample's queries are matched one-to-one to its ``radar_detections`` rows (Hungarian, cost
5 x scaled L1 on valid rows + 1 x BCE of the validity), then 5 x scaled L1 over valid matches + 1 x mean BCE.
The reference samples the BEV grid with (y, x) as (column, row) (``bev_grid_sample``); kept for compatibility.

``float_type`` (``precision=reference``, `TFv6.set_float_type`): radar points, speed and ``radar_detections`` are
cast to it first, and the matching costs and the loss are computed in the predictions' dtype (bfloat16 under
autocast), as the reference. The reference hands that bfloat16 cost matrix to scipy, which cannot read it; here the
matching runs on its exact float64 copy.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leadtrain.models.tfv6.config import TFv6Config

__all__ = ["RadarDetector", "linear_sum_assignment", "sine_embedding"]


def sine_embedding(pos: Tensor, hidden_dim: int) -> Tensor:
    """DAB-DETR sine embedding of (..., 2) points in [0, 1] -> (..., hidden_dim), [y-part, x-part]."""
    half = hidden_dim // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=pos.device)
    dim_t = 10000 ** (2 * (dim_t // 2) / half)
    parts = []
    for coord in (pos[..., 1], pos[..., 0]):
        p = (coord * (2 * math.pi))[..., None] / dim_t  # scaled in pos's dtype, divided in float32 (reference)
        parts.append(torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=-1).flatten(-2))
    return torch.cat(parts, dim=-1)


def unit_normalize(points: Tensor, cfg: TFv6Config) -> Tensor:
    """Ego-frame metres -> [0, 1] over the BEV range (clamped; the reference asserts instead)."""
    lo = points.new_tensor([cfg.min_x_meter, cfg.min_y_meter])
    hi = points.new_tensor([cfg.max_x_meter, cfg.max_y_meter])
    return ((points - lo) / (hi - lo)).clamp(0, 1)


def linear_sum_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost perfect matching of a square cost matrix (shortest augmenting paths, O(n^3)).

    Returns (rows, cols) with rows = 0..n-1, as ``scipy.optimize.linear_sum_assignment`` for square input.
    """
    n = cost.shape[0]
    u, v = np.zeros(n + 1), np.zeros(n + 1)
    match = np.zeros(n + 1, dtype=np.int64)  # column j (1-based) -> row (1-based); 0 = free
    way = np.zeros(n + 1, dtype=np.int64)
    for i in range(1, n + 1):
        match[0], j0 = i, 0
        minv = np.full(n + 1, np.inf)
        used = np.zeros(n + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = match[j0]
            free = ~used[1:]
            reduced = cost[i0 - 1] - u[i0] - v[1:]
            better = free & (reduced < minv[1:])
            minv[1:][better] = reduced[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[match[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    cols = np.zeros(n, dtype=np.int64)
    cols[match[1:] - 1] = np.arange(n)
    return np.arange(n), cols


class RadarDetector(nn.Module):
    def __init__(self, cfg: TFv6Config, bev_input_dim: int):
        super().__init__()
        self.cfg = cfg
        d = cfg.radar_token_dim
        self.bev_proj = nn.Conv2d(bev_input_dim, d, 1)
        self.ego_vel_proj = nn.Linear(1, d)
        self.radar_point_tokenizer = nn.Sequential(nn.Linear(d + 1 + cfg.num_radar_sensors,
                                                             cfg.radar_hidden_dim_tokenizer), nn.ReLU(True),
                                                   nn.Linear(cfg.radar_hidden_dim_tokenizer, d))
        self.bev_pos_embed = nn.Parameter(torch.zeros(1, cfg.lidar_horz_anchors * cfg.lidar_vert_anchors, d))
        self.ego_vel_pos_embed = nn.Parameter(torch.zeros(1, 1, d))
        self.q = nn.Parameter(torch.zeros(1, cfg.num_radar_queries, d))
        layer = nn.TransformerDecoderLayer(d, cfg.radar_num_heads, cfg.radar_tf_dim_ff, cfg.radar_dropout,
                                           activation=nn.GELU(), batch_first=True)
        self.tf = nn.TransformerDecoder(layer, cfg.radar_num_layers, norm=nn.LayerNorm(d))
        nn.init.xavier_uniform_(self.q)
        self.float_type: torch.dtype | None = None  # precision=reference: inputs' and targets' dtype
        self.state_decoder = nn.Sequential(nn.Linear(d, cfg.radar_hidden_dim_decoder), nn.ReLU(True),
                                           nn.Linear(cfg.radar_hidden_dim_decoder, 3))
        self.label_decoder = nn.Linear(d, 1)

    def _grid_sample(self, bev: Tensor, xy: Tensor) -> Tensor:
        cfg = self.cfg
        u = 2 * (xy[..., 1] - cfg.min_y_meter) / (cfg.max_y_meter - cfg.min_y_meter) - 1
        v = 2 * (xy[..., 0] - cfg.min_x_meter) / (cfg.max_x_meter - cfg.min_x_meter) - 1
        grid = torch.stack([u, v], dim=-1)[:, :, None].to(bev.dtype)  # (B, N, 1, 2)
        return F.grid_sample(bev, grid, mode="bilinear", align_corners=True)[..., 0].transpose(1, 2)

    def forward(self, bev_features: Tensor, radar: Tensor, speed: Tensor) -> tuple[Tensor, Tensor]:
        """(B,C,h,w) LiDAR features, (B,300,5) radar points, (B,) speed -> (features (B,Q,D), predictions (B,Q,4))."""
        cfg, ft = self.cfg, self.float_type
        radar = torch.nan_to_num(radar.to(ft or torch.float32))
        bev = self.bev_proj(bev_features)
        feats_type = bev.dtype if ft is None else ft  # autocast alone: scalar features in the BEV features' dtype
        ego = self.ego_vel_proj(speed.reshape(-1, 1).to(feats_type) / cfg.max_speed)[:, None]
        xy, rel_v, sensor = radar[..., :2], radar[..., 3:4], radar[..., 4].long().clamp(0, cfg.num_radar_sensors - 1)
        feats = torch.cat([self._grid_sample(bev, xy), (rel_v / cfg.max_speed).to(feats_type),
                           F.one_hot(sensor, cfg.num_radar_sensors).to(feats_type)], dim=-1)
        tokens = self.radar_point_tokenizer(feats) + sine_embedding(unit_normalize(xy, cfg), cfg.radar_token_dim)
        kv = torch.cat([bev.flatten(2).transpose(1, 2) + self.bev_pos_embed, ego + self.ego_vel_pos_embed,
                        tokens.to(bev.dtype) if ft is None else tokens], dim=1)
        features = self.tf(self.q.expand(kv.shape[0], -1, -1), kv)
        state, logits = self.state_decoder(features), self.label_decoder(features)
        x_c, x_r = (cfg.max_x_meter + cfg.min_x_meter) / 2, (cfg.max_x_meter - cfg.min_x_meter) / 2
        y_c, y_r = (cfg.max_y_meter + cfg.min_y_meter) / 2, (cfg.max_y_meter - cfg.min_y_meter) / 2
        t = torch.tanh(state)
        pred = torch.stack([t[..., 0] * x_r + x_c, t[..., 1] * y_r + y_c, (t[..., 2] + 1) / 2 * cfg.max_speed], -1)
        return features, torch.cat([pred, logits], dim=-1)

    def _scale(self, like: Tensor) -> Tensor:
        cfg = self.cfg
        return like.new_tensor([cfg.max_x_meter - cfg.min_x_meter, cfg.max_y_meter - cfg.min_y_meter, cfg.max_speed])

    def loss(self, pred: Tensor, data: dict, metrics: dict | None = None) -> Tensor:
        cfg, ft = self.cfg, self.float_type
        gt = data["radar_detections"].to(ft or torch.float32)
        gt_state, gt_valid = gt[..., :3], gt[..., 3:4]
        if ft is None:  # autocast alone: costs and loss in float32
            p_state, p_label = pred[..., :3].float(), pred[..., 3:4].float()
        else:  # the reference: in the predictions' dtype (bfloat16 under autocast)
            p_state, p_label = pred[..., :3], pred[..., 3:4]
        scale = self._scale(gt_state)
        state_cost = ((p_state[:, :, None] - gt_state[:, None]) / scale).abs().sum(-1) * gt_valid[:, None, :, 0]
        n = p_label.shape[1]
        ce_cost = F.binary_cross_entropy_with_logits(p_label.float().expand(-1, -1, n),
                                                     gt_valid[..., 0].float()[:, None].expand(-1, n, -1),
                                                     reduction="none").to(p_label.dtype)
        cost = (cfg.radar_regression_loss_weight * state_cost + cfg.radar_classification_loss_weight * ce_cost)
        cost = cost.detach().cpu().double().numpy()
        cols = torch.as_tensor(np.stack([linear_sum_assignment(c)[1] for c in cost]), device=pred.device)
        matched_gt_state = gt_state.gather(1, cols[..., None].expand(-1, -1, 3))
        matched_valid = gt_valid.gather(1, cols[..., None])[..., 0]
        per_query = ((p_state - matched_gt_state) / scale).abs().sum(-1) * matched_valid
        state_loss = per_query.sum(-1) / matched_valid.sum(-1).clamp(min=1)
        ce = F.binary_cross_entropy_with_logits(p_label[..., 0].float(), matched_valid.float(),
                                                reduction="none").mean(-1).to(p_label.dtype)
        if metrics is not None:
            with torch.no_grad():
                valid = matched_valid.bool()
                dist = (p_state[..., :2] - matched_gt_state[..., :2]).norm(dim=-1)[valid]
                vel = (p_state[..., 2] - matched_gt_state[..., 2]).abs()[valid]
                metrics["metric/radar_distance_error"] = float(dist.mean()) if dist.numel() else 0.0
                metrics["metric/radar_vel_error"] = float(vel.mean()) if vel.numel() else 0.0
                hit = (p_label[..., 0] > 0).float()
                tp = float((hit * matched_valid).sum())
                denom = float(hit.sum() + matched_valid.sum())
                metrics["metric/radar_classification_f1"] = 2 * tp / denom if denom else 0.0
        return (cfg.radar_regression_loss_weight * state_loss + cfg.radar_classification_loss_weight * ce).mean()
