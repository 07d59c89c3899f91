"""Training visualisations: camera, LiDAR BEV, BEV semantic prediction vs target, waypoints, in one image.

Drawn with OpenCV into a uint8 RGB array (H, W, 3), saved as PNG under ``viz_dir`` and sent to TensorBoard
(and W&B). Cheap enough to run every few hundred steps; only rank 0 draws.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

__all__ = ["BEV_PALETTE", "render_sample", "save_png"]

#: one colour per BEV semantic class (13)
BEV_PALETTE = np.array([
    [0, 0, 0], [90, 90, 90], [255, 255, 255], [255, 0, 255], [0, 120, 255], [255, 140, 0], [255, 230, 0],
    [120, 60, 255], [255, 0, 0], [0, 255, 200], [0, 200, 0], [220, 0, 0], [150, 0, 0]], np.uint8)


def _bev_to_px(points: np.ndarray) -> np.ndarray:
    """Ego-frame metres (x forward, y right) -> BEV pixel (col, row) at 4 px/m, x in [-32, 64], y in [-40, 40]."""
    return np.stack([(points[:, 0] + 32) * 4, (points[:, 1] + 40) * 4], 1).round().astype(np.int32)


def _panel(image: np.ndarray, title: str, height: int) -> np.ndarray:
    scale = height / image.shape[0]
    out = cv2.resize(image, (max(1, round(image.shape[1] * scale)), height), interpolation=cv2.INTER_AREA)
    cv2.putText(out, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
    return out


def render_sample(batch: dict, pred: dict, i: int = 0, height: int = 240) -> np.ndarray:
    """One sample of a batch and its predictions as an RGB image (what is present is drawn)."""
    def np_(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy() if t.dtype != torch.uint8 else t.detach().cpu().numpy()

    if "pred_bev_semantic" in pred:  # TFv6 predictions (the reference's names)
        pred = {"bev_semantic": pred["pred_bev_semantic"], **({"waypoints": pred["pred_future_waypoints"]}
                                                               if "pred_future_waypoints" in pred else {})}
    panels = []
    if "rgb" in batch:
        panels.append(_panel(np.ascontiguousarray(np_(batch["rgb"][i]).transpose(1, 2, 0)), "camera", height))
    bev = None
    if "lidar" in batch:
        lidar = (np_(batch["lidar"][i])[0] / 5.0 * 255).astype(np.uint8)
        bev = np.repeat(lidar[:, :, None], 3, axis=2)
    if "bev_semantic" in batch:
        target = BEV_PALETTE[np.clip(np_(batch["bev_semantic"][i]).astype(int), 0, 12)]
        panels.append(_panel(target, "BEV target", height))
    if "bev_semantic" in pred:
        logits = pred["bev_semantic"][i].detach().float()
        classes = logits.argmax(0).cpu().numpy()
        panels.append(_panel(BEV_PALETTE[classes], "BEV prediction", height))
    if bev is not None:
        bev = np.ascontiguousarray(bev)
        for key, colour in (("waypoints", (0, 255, 0)),):
            if key in batch and bool(batch.get("has_targets", torch.ones(1))[i]):
                for p in _bev_to_px(np_(batch[key][i])):
                    cv2.circle(bev, tuple(int(v) for v in p), 3, colour, -1)
        if "waypoints" in pred:
            for p in _bev_to_px(np_(pred["waypoints"][i])):
                cv2.circle(bev, tuple(int(v) for v in p), 3, (255, 0, 0), -1)
        panels.append(_panel(bev, "LiDAR + waypoints (gt green, pred red)", height))
    if not panels:
        return np.zeros((height, height, 3), np.uint8)
    return np.concatenate(panels, axis=1)


def save_png(image: np.ndarray, path: Path) -> None:
    from leadio._io import atomic_write_bytes

    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if ok:
        atomic_write_bytes(path, data.tobytes())
