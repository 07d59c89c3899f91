"""The point-cloud inputs: the LiDAR BEV histogram (uint8 counts, §4.2; `lidar_bev_to_float` gives LEAD's
float32) and the radar input rows (§4.7).
"""

from __future__ import annotations

import math

import numpy as np

from leadio.format.config import DatasetConfig
from leadio.schema import NUM_RADAR_SENSORS, RADAR_POINTS_PER_SENSOR
from leadio.targets.common import LIDAR_USED_TIME_STEPS, perturbation


def lidar_bev_histogram(
    points: np.ndarray, time: np.ndarray, meta: dict, config: DatasetConfig, perturbated: bool,
    *, used_time_steps: int = LIDAR_USED_TIME_STEPS,
) -> np.ndarray:  # fmt: skip
    """LEAD's LiDAR BEV histogram (§4.2) as clipped counts.

    Equals np.histogramdd over edges linspace(min_x, max_x, W+1) x linspace(min_y, max_y, H+1) (bins
    [e_i, e_i+1), the last closed), clipped at ``config.lidar_hist_max_per_pixel``, transposed.

    Args:
        points: (N, 3) x, y, z in the ego frame, m (any float dtype; binned in float64).
        time: (N,) sweep age in ticks; points with time >= ``used_time_steps`` are dropped.
        meta: the frame's meta (perturbation values).
        config: BEV ranges, resolution, z range [lidar_min_z, lidar_max_z] and cap.
        perturbated: apply P to x, y.
        used_time_steps: LEAD's training_used_lidar_steps.

    Returns:
        uint8 (1, H, W) = (1, 320, 384) counts; row = y bin (left first), column = x bin (rear first).
    """
    points, time = np.asarray(points), np.asarray(time)
    if points.ndim != 2 or points.shape[1] < 3 or time.shape != (len(points),):
        raise ValueError(f"LiDAR points must be (N, 3) with time (N,); got {points.shape} and {time.shape}")
    x, y, z = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64), points[:, 2]
    if perturbated:
        t, r = perturbation(meta, perturbated)
        c, s = math.cos(math.radians(r)), math.sin(math.radians(r))
        x, y = x * c + (y - t) * s, (y - t) * c - x * s
    z_ok = (z >= np.float64(config.lidar_min_z)) & (z <= np.float64(config.lidar_max_z))  # float64, as LEAD
    keep = (time < used_time_steps) & z_ok & _inside(x, y, config)
    w, h = config.bev_width, config.bev_height
    col = _bin_index(x[keep], config.lidar_min_x, config.lidar_max_x, w)
    row = _bin_index(y[keep], config.lidar_min_y, config.lidar_max_y, h)
    counts = np.bincount(row * w + col, minlength=w * h)
    np.minimum(counts, config.lidar_hist_max_per_pixel, out=counts)
    return counts.astype(np.uint8).reshape(1, h, w)


def _bin_index(v: np.ndarray, lo: float, hi: float, n: int) -> np.ndarray:
    """histogramdd's bin of each v in [lo, hi]: the floor of the scaled value, and its exact rule near edges.

    Away from an edge the scaled value's error (~1e-13 bins) cannot change its floor; within 1e-6 bins of
    one, searchsorted against linspace's edges decides, and v == hi goes to the last bin, as in histogramdd.
    """
    f = (v - lo) * (n / (hi - lo))
    idx = f.astype(np.intp)  # f >= 0: truncation is floor
    near = np.flatnonzero(np.abs(f - np.rint(f)) < 1e-6)
    if near.size:
        edges = np.linspace(lo, hi, n + 1)
        idx[near] = np.minimum(np.searchsorted(edges, v[near], side="right") - 1, n - 1)
    return idx


def lidar_bev_to_float(hist: np.ndarray, config: DatasetConfig) -> np.ndarray:
    """Stored counts -> LEAD's float32 BEV in [0, 1] (counts / cap, bit for bit); same shape."""
    cap = config.lidar_hist_max_per_pixel
    return (np.arange(cap + 1, dtype=np.float64) / cap).astype(np.float32)[np.minimum(hist, cap)]


def radar_input(
    radar: dict[str, np.ndarray], config: DatasetConfig, max_points_per_sensor: int = RADAR_POINTS_PER_SENSOR
) -> np.ndarray:
    """Radar model input (§4.7): per sensor the points inside the closed BEV box, padded with zeros or
    truncated to ``max_points_per_sensor``, plus the sensor id. No P: pass ``radar_perturbated`` instead.

    Args:
        radar: ``radar1``..``radar4`` -> (N_i, 4) x, y, z, v in the (perturbed) ego frame (m, m/s).
        config: the BEV box (min_x <= x <= max_x and min_y <= y <= max_y, as LEAD's code).
        max_points_per_sensor: rows per sensor (LEAD's num_radar_points_per_sensor).

    Returns:
        float16 (4 · max_points_per_sensor, 5) = [x, y, z, v, sensor id 0..3].
    """
    n = max_points_per_sensor
    out = np.zeros((NUM_RADAR_SENSORS * n, 5), np.float16)
    for i in range(NUM_RADAR_SENSORS):
        if f"radar{i + 1}" not in radar:
            raise ValueError(f"radar has no 'radar{i + 1}' (keys {sorted(radar)}); LEAD has radar1..radar4")
        arr = np.asarray(radar[f"radar{i + 1}"]).reshape(-1, 4)
        kept = arr[_inside(arr[:, 0], arr[:, 1], config)][:n]
        out[i * n : i * n + len(kept), :4] = kept
        out[i * n : (i + 1) * n, 4] = i
    return out


def _inside(x: np.ndarray, y: np.ndarray, config: DatasetConfig) -> np.ndarray:
    """Closed BEV box test: min_x <= x <= max_x and min_y <= y <= max_y."""
    in_x = (x >= config.lidar_min_x) & (x <= config.lidar_max_x)
    return in_x & (y >= config.lidar_min_y) & (y <= config.lidar_max_y)
