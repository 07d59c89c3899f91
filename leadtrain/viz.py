"""Training visualisation: one sample of a batch, its targets and the model's predictions, in one fixed-size image.

`render_sample` draws with OpenCV into a uint8 RGB array of `IMAGE_SIZE` (whatever the input sizes; every
panel is resized into its box in `PANELS`, so tests can check each one). Panels:

- ``header``: phase, epoch, step and total loss;
- ``camera`` and ``info`` (every loss, the camera-semantics legend, the depth colour bar);
- ``semantic_target`` | ``semantic_pred`` and ``depth_target`` | ``depth_pred`` (same palette, same 0..50 m
  scale, side by side);
- ``bev_lidar``: the LiDAR BEV (forward up) with the ego, target boxes, predicted boxes (CenterNet decoded by
  `leadtrain.models.tfv6.heads.decode_boxes`, score > 0.3 as the reference's ``bb_confidence_threshold``), target
  and predicted route and waypoints, target points; ``bev_target`` | ``bev_pred``: the BEV semantics;
  ``legend``: the overlay colours and the BEV classes.

Predictions come in the visualiser's names (`PREDICTION_KEYS`); each model's `leadtrain.models.ModelSpec.viz`
maps its outputs onto them. A panel whose input is absent says so in grey. Class colours come from
`leadio.inspect.render`, the BEV geometry and depth scale from the `leadio.format.DatasetConfig`, the ego's size
from `leadio.schema`. Drawing is host work on one sample (argmax on the device first); cheap next to a training
step, done every ``log_images_frequency`` steps.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import torch

from leadio.format import DATASET_CONFIGS
from leadio.inspect.render import BEV_CLASSES, CAMERA_CLASSES
from leadio.schema import EGO_EXTENT

__all__ = ["BOX_SCORE_THRESHOLD", "COLOURS", "IMAGE_SIZE", "PANELS", "PREDICTION_KEYS", "predicted_boxes",
           "render_sample", "save_png"]

#: What `render_sample` draws from the predictions of sample i (every key optional): ``semantic`` (B, 10, h, w)
#: logits, ``depth`` (B, h, w) m, ``bev_semantic`` (B, 13, bh, bw) logits, ``waypoints`` (B, 8, 2) and ``route``
#: (B, 10, 2) m, ``boxes``: CenterNet maps under the reference's ``pred_bounding_box`` names (`predicted_boxes`).
PREDICTION_KEYS = ("semantic", "depth", "bev_semantic", "waypoints", "route", "boxes")

BOX_SCORE_THRESHOLD = 0.3  # reference: bb_confidence_threshold
_P_W, _P_H, _GAP, _TOP = 648, 216, 8, 32  # perspective panel (3:1), gap, header height
_B_W, _B_H = 320, 384  # BEV panel: the 320 x 384 raster at 1 px per pixel, forward up
IMAGE_SIZE = (2 * _P_W + _GAP, _TOP + 3 * (_P_H + _GAP) + _B_H)  # (width, height) = (1304, 1088)


def _perspective_row(k: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    y = _TOP + k * (_P_H + _GAP)
    return (0, y, _P_W, y + _P_H), (_P_W + _GAP, y, IMAGE_SIZE[0], y + _P_H)


_BEV_Y = _TOP + 3 * (_P_H + _GAP)
#: panel -> (x0, y0, x1, y1) in pixels from the image's top-left
PANELS = {
    "header": (0, 0, IMAGE_SIZE[0], _TOP),
    **dict(zip(("camera", "info"), _perspective_row(0), strict=True)),
    **dict(zip(("semantic_target", "semantic_pred"), _perspective_row(1), strict=True)),
    **dict(zip(("depth_target", "depth_pred"), _perspective_row(2), strict=True)),
    **{name: (k * (_B_W + _GAP), _BEV_Y, k * (_B_W + _GAP) + _B_W, _BEV_Y + _B_H)
       for k, name in enumerate(("bev_lidar", "bev_target", "bev_pred", "legend"))},
}
#: overlay colours (RGB) in the BEV LiDAR panel
COLOURS = {"target box": (0, 255, 0), "predicted box": (255, 0, 255), "target route": (0, 140, 255),
           "predicted route": (255, 165, 0), "target waypoints": (0, 255, 255), "predicted waypoints": (255, 40, 40),
           "target point": (255, 255, 0), "next target point": (255, 120, 0), "ego": (255, 255, 255)}
_CAMERA_PALETTE = np.array([c for _, c in CAMERA_CLASSES], np.uint8)
_BEV_PALETTE = np.array([c for _, c in BEV_CLASSES], np.uint8)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BG, _TEXT = (30, 30, 30), (235, 235, 235)


def _np(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t.float() if t.is_floating_point() else t).cpu().numpy()


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.42, colour=_TEXT) -> None:
    cv2.putText(img, text, org, _FONT, scale, colour, 1, cv2.LINE_AA)


def _put(canvas: np.ndarray, name: str, content: np.ndarray | None, title: str, nearest: bool = False) -> np.ndarray:
    """Resize ``content`` (RGB) into panel ``name`` with a title bar; None: a grey 'not available' panel."""
    x0, y0, x1, y1 = PANELS[name]
    if content is None:
        canvas[y0:y1, x0:x1] = (70, 70, 70)
        _text(canvas, f"{title}: not available", (x0 + 10, (y0 + y1) // 2), 0.5)
        return canvas[y0:y1, x0:x1]
    if content.shape[:2] != (y1 - y0, x1 - x0):
        content = cv2.resize(content, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST if nearest
                             else cv2.INTER_AREA if content.shape[0] > y1 - y0 else cv2.INTER_LINEAR)
    canvas[y0:y1, x0:x1] = content
    cv2.rectangle(canvas, (x0, y0), (x0 + 8 * len(title) + 10, y0 + 18), (0, 0, 0), -1)
    _text(canvas, title, (x0 + 5, y0 + 13))
    return canvas[y0:y1, x0:x1]


def _depth_rgb(metres: np.ndarray, depth_max: float) -> np.ndarray:
    u8 = (np.clip(np.nan_to_num(metres) / depth_max, 0, 1) * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(u8, cv2.COLORMAP_MAGMA), cv2.COLOR_BGR2RGB)


def predicted_boxes(centernet: dict[str, torch.Tensor], i: int = 0, bev_width_px: int | None = None,
                    threshold: float = BOX_SCORE_THRESHOLD) -> np.ndarray:
    """Sample ``i``'s CenterNet maps (TFv6's ``pred_bounding_box`` names) -> (n, 9) box rows with score >
    ``threshold``, in the target rows' units: [x_px, y_px, ex_px, ey_px, yaw, velocity, brake, class, score] on the
    ``bev_width_px``-wide BEV raster (default: LEAD's, `leadio.format.DatasetConfig.bev_width`)."""
    from leadtrain.models.tfv6.heads import decode_boxes

    if bev_width_px is None:
        bev_width_px = DATASET_CONFIGS["carla_leaderboard2"].bev_width

    one = {k: v[i : i + 1].detach() for k, v in centernet.items()}
    heat = one["center_heatmap_pred"]
    cells = SimpleNamespace(num_dir_bins=one["yaw_class_pred"].shape[1],
                            pixels_per_meter=bev_width_px / heat.shape[-1])  # raster pixels per grid cell
    rows = decode_boxes(one, cells)[0].cpu().numpy()
    return rows[rows[:, 8] > threshold]


class _Bev:
    """Ego metres / BEV-raster pixels -> pixels of a panel showing the raster forward up (np.rot90)."""

    def __init__(self, config):
        self.c = config
        self.rows_y, self.cols_x = config.bev_height, config.bev_width  # 320, 384

    def from_raster(self, x_px: np.ndarray, y_px: np.ndarray) -> np.ndarray:
        return np.stack([y_px * (_B_W / self.rows_y), (self.cols_x - x_px) * (_B_H / self.cols_x)], -1)

    def from_metres(self, xy: np.ndarray) -> np.ndarray:
        ppm = self.c.pixels_per_meter
        return self.from_raster((xy[..., 0] - self.c.lidar_min_x) * ppm, (xy[..., 1] - self.c.lidar_min_y) * ppm)


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(points * 16).astype(np.int32)  # cv2 drawing with shift=4 (1/16 px)


def _draw_boxes(img: np.ndarray, bev: _Bev, rows: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Box rows [x_px, y_px, ex_px, ey_px, yaw, ...] as outlines with a heading tick (no anti-aliasing)."""
    for x, y, ex, ey, yaw in rows[:, :5]:
        if not np.isfinite([x, y, ex, ey, yaw]).all():
            continue
        c, s = np.cos(yaw), np.sin(yaw)
        local = np.array([[ex, ey], [ex, -ey], [-ex, -ey], [-ex, ey], [0, 0], [max(ex, 4.0) * 1.3, 0]])
        pts = bev.from_raster(x + local[:, 0] * c - local[:, 1] * s, y + local[:, 0] * s + local[:, 1] * c)
        cv2.polylines(img, [_fixed(pts[:4])], True, colour, 1, cv2.LINE_8, 4)
        cv2.line(img, tuple(_fixed(pts[4])), tuple(_fixed(pts[5])), colour, 1, cv2.LINE_8, 4)


def _draw_path(img: np.ndarray, bev: _Bev, xy: np.ndarray, colour, line: bool) -> None:
    xy = xy[np.isfinite(xy).all(-1)]
    if not len(xy):
        return
    pts = _fixed(bev.from_metres(xy))
    if line:
        cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA, 4)
    for p in pts:
        cv2.circle(img, tuple(p), 2 * 16 if line else 3 * 16, colour, -1, cv2.LINE_AA, 4)


def _lidar_panel(batch: dict, p: dict, i: int, bev: _Bev) -> np.ndarray:
    if "lidar" in batch:
        counts = _np(batch["lidar"][i]).astype(np.float32).sum(0)
        grey = (np.clip(counts / bev.c.lidar_hist_max_per_pixel, 0, 1) * 180).astype(np.uint8)
        img = np.ascontiguousarray(np.repeat(np.rot90(grey)[:, :, None], 3, axis=2))
        img = cv2.resize(img, (_B_W, _B_H), interpolation=cv2.INTER_NEAREST)
    else:
        img = np.zeros((_B_H, _B_W, 3), np.uint8)
    ego = np.array([[-bev.c.lidar_min_x * bev.c.pixels_per_meter, -bev.c.lidar_min_y * bev.c.pixels_per_meter,
                     EGO_EXTENT[0] * bev.c.pixels_per_meter, EGO_EXTENT[1] * bev.c.pixels_per_meter, 0.0]])
    _draw_boxes(img, bev, ego, COLOURS["ego"])
    has_targets = bool(batch["has_targets"][i] > 0.5) if "has_targets" in batch else True
    for key, name in (("route", "target route"), ("waypoints", "target waypoints")):
        if key in batch and has_targets:
            _draw_path(img, bev, _np(batch[key][i]).reshape(-1, 2), COLOURS[name], key == "route")
    for key, name in (("route", "predicted route"), ("waypoints", "predicted waypoints")):
        if key in p:
            _draw_path(img, bev, _np(p[key][i]).reshape(-1, 2), COLOURS[name], key == "route")
    if "boxes" in batch:
        rows = _np(batch["boxes"][i])
        n = int(_np(batch["num_boxes"][i])) if "num_boxes" in batch else len(rows)
        _draw_boxes(img, bev, rows[:n], COLOURS["target box"])
    if "boxes" in p:
        _draw_boxes(img, bev, predicted_boxes(p["boxes"], i, bev.cols_x), COLOURS["predicted box"])
    for key, name, marker in (("target_point", "target point", cv2.MARKER_STAR),
                              ("next_target_point", "next target point", cv2.MARKER_TILTED_CROSS)):
        if key in batch and np.isfinite(xy := _np(batch[key][i]).reshape(2)).all():
            q = bev.from_metres(xy).round().astype(int)
            cv2.drawMarker(img, (int(q[0]), int(q[1])), COLOURS[name], marker, 14, 2)
    return img


def _info_panel(losses: dict[str, float], depth_max: float) -> np.ndarray:
    img = np.full((_P_H, _P_W, 3), _BG, np.uint8)
    items = [(k.removeprefix("loss_"), v) for k, v in losses.items() if k != "total"]
    for n, (name, value) in enumerate(items[:20]):
        col, row = divmod(n, 10)
        _text(img, f"{name[:21]} {value:.4g}", (8 + 200 * col, 38 + 15 * row), 0.36)
    bar = _depth_rgb(np.linspace(0, depth_max, 300)[None].repeat(10, 0), depth_max)
    img[_P_H - 22 : _P_H - 12, 40:340] = bar
    _text(img, "0 m", (8, _P_H - 12), 0.36)
    _text(img, f"{depth_max:g} m (depth)", (346, _P_H - 12), 0.36)
    _text(img, "camera semantics", (430, 36), 0.4)
    for n, (name, colour) in enumerate(CAMERA_CLASSES):
        y = 44 + 15 * n
        cv2.rectangle(img, (430, y), (444, y + 11), colour, -1)
        cv2.rectangle(img, (430, y), (444, y + 11), (128, 128, 128), 1)
        _text(img, name, (450, y + 10), 0.36)
    return img


def _legend_panel() -> np.ndarray:
    img = np.full((_B_H, _B_W, 3), _BG, np.uint8)
    y = 32
    for name, colour in COLOURS.items():
        label = f"{name} (score > {BOX_SCORE_THRESHOLD})" if name == "predicted box" else name
        cv2.rectangle(img, (10, y - 10), (30, y + 2), colour, -1 if "box" not in name and name != "ego" else 2)
        _text(img, label, (38, y), 0.4)
        y += 16
    y += 6
    _text(img, "BEV semantic classes", (10, y), 0.4)
    for name, colour in BEV_CLASSES:
        y += 15
        cv2.rectangle(img, (10, y - 10), (30, y + 1), colour, -1)
        cv2.rectangle(img, (10, y - 10), (30, y + 1), (128, 128, 128), 1)
        _text(img, name, (38, y), 0.38)
    return img


@torch.no_grad()
def render_sample(batch: dict, pred: dict, i: int = 0, *, epoch: int | None = None, step: int | None = None,
                  losses: dict[str, float] | None = None, phase: str = "", config=None) -> np.ndarray:
    """Sample ``i`` of a leadio batch and its predictions (`PREDICTION_KEYS`: a model's ``SPEC.viz`` of its
    outputs) as uint8 RGB (height, width, 3) of `IMAGE_SIZE`; ``losses`` (with ``total``) are printed, ``config``
    (a `leadio.format.DatasetConfig`, default LEAD's) gives the BEV range and the depth scale."""
    config = config or DATASET_CONFIGS["carla_leaderboard2"]
    losses = dict(losses or {})
    canvas = np.full((IMAGE_SIZE[1], IMAGE_SIZE[0], 3), _BG, np.uint8)
    total = losses.get("total")
    head = [phase or "training", f"epoch {epoch}" if epoch is not None else "", f"step {step}" if step is not None
            else "", f"loss {total:.4f}" if total is not None else "", f"sample {i}"]
    _text(canvas, "   ".join(h for h in head if h), (10, 22), 0.65)

    _put(canvas, "camera", np.ascontiguousarray(_np(batch["rgb"][i]).transpose(1, 2, 0)) if "rgb" in batch
         else None, "camera")
    _put(canvas, "info", _info_panel(losses, config.depth_max_m), "losses, legend")
    sem_t = _CAMERA_PALETTE[np.clip(_np(batch["semantic"][i]).astype(int), 0, 9)] if "semantic" in batch else None
    sem_p = _CAMERA_PALETTE[np.clip(_np(pred["semantic"][i].argmax(0)), 0, 9)] if "semantic" in pred else None
    _put(canvas, "semantic_target", sem_t, "semantic target", nearest=True)
    _put(canvas, "semantic_pred", sem_p, "semantic prediction", nearest=True)
    depth_t = (_depth_rgb(_np(batch["depth"][i]).astype(np.float32) / 255 * config.depth_max_m, config.depth_max_m)
               if "depth" in batch else None)
    depth_p = (_depth_rgb(_np(pred["depth"][i]).reshape(pred["depth"].shape[-2:]), config.depth_max_m)
               if "depth" in pred else None)
    _put(canvas, "depth_target", depth_t, "depth target")
    span = (f" ({float(pred['depth'][i].min()):.1f}..{float(pred['depth'][i].max()):.1f} m)" if "depth" in pred
            else "")
    _put(canvas, "depth_pred", depth_p, "depth prediction" + span)

    bev = _Bev(config)
    _put(canvas, "bev_lidar", _lidar_panel(batch, pred, i, bev), "LiDAR, boxes, route")
    bev_t = (np.ascontiguousarray(np.rot90(_BEV_PALETTE[np.clip(_np(batch["bev_semantic"][i]).astype(int), 0, 12)]))
             if "bev_semantic" in batch else None)
    bev_p = (np.ascontiguousarray(np.rot90(_BEV_PALETTE[np.clip(_np(pred["bev_semantic"][i].argmax(0)), 0, 12)]))
             if "bev_semantic" in pred else None)
    _put(canvas, "bev_target", bev_t, "BEV semantic target", nearest=True)
    _put(canvas, "bev_pred", bev_p, "BEV semantic prediction", nearest=True)
    _put(canvas, "legend", _legend_panel(), "legend")
    return canvas


def save_png(image: np.ndarray, path: Path) -> None:
    """Write an RGB image as PNG, atomically."""
    from leadio.files import atomic_write_bytes

    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode the training visualisation for {path}")
    atomic_write_bytes(path, data.tobytes())
