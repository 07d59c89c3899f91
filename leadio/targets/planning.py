"""Planning targets (§4.7): waypoints and yaws, the resampled route, target points, the target-speed two-hot
and the command one-hot, from one frame's meta.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from leadio.schema import ROUTE_OUTPUT_POINTS, TARGET_LAYOUT, TARGET_SPEED_CLASSES, WAYPOINT_TICKS
from leadio.targets.common import (
    ROUTE_FIRST_DISTANCE_M,
    ROUTE_INPUT_POINTS,
    ROUTE_RESAMPLED_POINTS,
    ROUTE_SPACING_M,
    TARGET_POINT_POP_DISTANCE,
    perturb_points,
    perturb_yaw,
    perturbation,
    require_meta,
)


def resample_route(
    route: Any, *, first_distance: float = ROUTE_FIRST_DISTANCE_M, spacing: float = ROUTE_SPACING_M,
    num_points: int = ROUTE_RESAMPLED_POINTS,
) -> np.ndarray:  # fmt: skip
    """LEAD's route smoothing (§4.7 route steps 2-3): dedupe keeping order, then step along the route.

    Point k lies on the circle of radius ``first_distance`` around the origin (k = 0) or ``spacing``
    around point k−1, on the line from point k−1 to route[k]; of the two hits, the one further along
    route[k] − route[k−1] wins. Past the route's end the circle is cut with the line through the last two
    route points (extrapolation along the last segment).

    Args:
        route: (N, 2) points in the (perturbed) ego frame, m.
        first_distance, spacing: m.
        num_points: output length.

    Returns:
        float64 (num_points, 2).

    Raises:
        ValueError: fewer than 2 distinct points, or a step without intersection or of zero length.
    """
    pts = unique_rows_in_order(np.asarray(route, dtype=np.float64).reshape(-1, 2))
    if len(pts) < 2:
        raise ValueError(f"route has {len(pts)} distinct point(s); resampling needs at least 2")
    out = np.empty((num_points, 2))
    center, last, current = np.zeros(2), np.zeros(2), pts[0]
    for k in range(num_points):
        last = current if k > 0 else last
        if k < len(pts):
            current = pts[k]
            hits = _circle_line(center, first_distance if k == 0 else spacing, center, current)
        else:
            current, last = pts[-1], pts[-2]
            hits = _circle_line(center, spacing, last, current)
        if not hits:
            raise ValueError(f"route resampling found no point {spacing} m from {center.tolist()} (step {k})")
        direction = current - last
        far = len(hits) == 2 and np.dot(hits[0], direction) <= np.dot(hits[1], direction)
        center = out[k] = hits[1] if far else hits[0]
    return out


def unique_rows_in_order(pts: np.ndarray) -> np.ndarray:
    """The rows of ``pts`` without repeats, each kept where it first occurs: the rows of
    ``pts[np.sort(np.unique(pts, return_index=True, axis=0)[1])]``, 4x faster on a route's ~20 rows (the catalog
    scan runs it for every frame)."""
    seen: set[tuple[float, ...]] = set()
    keep = [i for i, row in enumerate(map(tuple, pts.tolist())) if not (row in seen or seen.add(row))]
    return pts[keep]


def _circle_line(center: np.ndarray, radius: float, p1: np.ndarray, p2: np.ndarray) -> list[np.ndarray]:
    """Intersections of a circle with the full line p1-p2, ordered from p1 to p2 (mathworld's formula)."""
    cx, cy = float(center[0]), float(center[1])
    x1, y1, x2, y2 = float(p1[0]) - cx, float(p1[1]) - cy, float(p2[0]) - cx, float(p2[1]) - cy
    dx, dy = x2 - x1, y2 - y1
    dr = (dx**2 + dy**2) ** 0.5
    if dr == 0.0:
        raise ValueError(f"route resampling: zero-length step, {p2.tolist()} coincides with {p1.tolist()}")
    big_d = x1 * y2 - x2 * y1
    disc = radius**2 * dr**2 - big_d**2
    if disc < 0:
        return []
    root, sgn = disc**0.5, (-1 if dy < 0 else 1)
    hits = [
        np.array([cx + (big_d * dy + sign * sgn * dx * root) / dr**2,
                  cy + (-big_d * dx + sign * abs(dy) * root) / dr**2])  # fmt: skip
        for sign in ((1, -1) if dy < 0 else (-1, 1))
    ]
    return hits[:1] if abs(disc) <= 1e-9 else hits  # tangent: one point


def target_speed_twohot(target_speed: float, brake: bool) -> np.ndarray:
    """Two-hot label over `TARGET_SPEED_CLASSES` (§4.7), as LEAD's encode_two_hot.

    Returns:
        float32 (8,) summing to 1: brake -> class 0; >= 20 m/s -> last class; otherwise the weight is split
        linearly between the neighbouring classes. A negative or NaN speed is a ValueError.
    """
    classes, v = np.asarray(TARGET_SPEED_CLASSES), float(target_speed)
    out = np.zeros(len(classes))
    if brake or v == 0.0:
        out[0] = 1.0
    elif v >= classes[-1]:
        out[-1] = 1.0
    elif not v > 0.0:
        raise ValueError(f"target speed must be >= 0 m/s, got {v}")
    else:
        hi = int(np.searchsorted(classes, v, side="left"))
        lo_v, hi_v = classes[hi - 1], classes[hi]
        out[hi - 1], out[hi] = (hi_v - v) / (hi_v - lo_v), (v - lo_v) / (hi_v - lo_v)
    return out.astype(np.float32)


def command_onehot(command: int) -> np.ndarray:
    """onehot6 (§4.7): c < 0 -> 4; index c − 1, or 3 if outside 0..5. float32 (6,) over LEFT, RIGHT,
    STRAIGHT, LANEFOLLOW, CHANGELANELEFT, CHANGELANERIGHT."""
    index = (4 if int(command) < 0 else int(command)) - 1
    out = np.zeros(6, np.float32)
    out[index if 0 <= index <= 5 else 3] = 1.0
    return out


def _target_points(meta: dict, t: float, r: float) -> dict[str, np.ndarray]:
    key_p, key_c = (f"next_{k}_{TARGET_POINT_POP_DISTANCE}" for k in ("target_points", "commands"))
    points, commands = require_meta(meta, key_p, "the target points"), require_meta(meta, key_c, "the commands")
    kept: list[tuple[Any, int]] = []
    for point, command in zip(points, commands, strict=False):
        prev = kept[-1][0] if kept else None  # np.allclose(point[:2], prev[:2]) with its defaults, unrolled
        same = prev is not None and all(abs(point[i] - prev[i]) <= 1e-8 + 1e-5 * abs(prev[i]) for i in (0, 1))
        if len(points) == 2 or not same:
            kept.append((point, command))
        if len(kept) == 3:  # only keypoints 0..2 are used, so long lists stay cheap
            break
    if len(kept) < 2:
        raise ValueError(
            f"meta {key_p!r} has {len(points)} keypoint(s) and {key_c!r} {len(commands)} command(s), "
            f"{len(kept)} distinct; at least 2 are needed (the expert always keeps 2)"
        )
    theta = float(require_meta(meta, "theta", "the target points"))
    pos = np.asarray(require_meta(meta, "pos_global", "the target points"), dtype=np.float64)[:2]
    c, s = math.cos(theta), math.sin(theta)
    ego = (np.array([p[:2] for p, _ in kept], dtype=np.float64) - pos) @ np.array([[c, -s], [s, c]])
    ego = perturb_points(ego, t, r)  # R(theta)ᵀ(p − pos) above, then P
    return {
        "previous_target_point": ego[0],
        "target_point": ego[1],
        "next_target_point": ego[2] if len(kept) > 2 else ego[1],
        "command": command_onehot(kept[0][1]),
        "next_command": command_onehot(kept[1][1]),
    }


def has_planning_targets(targets: dict[str, np.ndarray]) -> bool:
    """Whether `planning_targets` (``require_future=False``) gave a frame its waypoints and route: every value
    finite. The catalog's ``has_waypoints`` and the stored ``has_targets`` are both this."""
    return bool(np.isfinite(targets["waypoints"]).all() and np.isfinite(targets["route"]).all())


def planning_targets(meta: dict, perturbated: bool, *, require_future: bool = True) -> dict[str, np.ndarray]:
    """Planning targets of one frame (§4.7): `TARGET_LAYOUT`'s keys, shapes and order, all float32.

    waypoints (8, 2) m and waypoint_yaws (8,) rad at ticks 5, 10, ..., 40; route (10, 2) m; previous_,
    next_ and target_point (2,) m; command, next_command (6,); target_speed () m/s and target_speed_twohot
    (8,); speed () m/s; brake () 0/1. With ``perturbated``, P applies to every point and yaw.

    With ``require_future=False`` a frame too close to its route end gets NaN waypoints, waypoint_yaws and
    (when it cannot be resampled) route; the other fields exist for every frame (LEAD's loader gives target
    points, commands and speeds for them too).

    Raises:
        ValueError: a needed meta key is missing; fewer than 41 future positions or yaws while
            ``require_future`` (the frame is too close to the route end; LEAD's post-training buckets skip the
            last 8 frames); unusable target points or route.
    """
    t, r = perturbation(meta, perturbated)
    need, future = WAYPOINT_TICKS[-1] + 1, {}
    for key in ("future_positions", "future_yaws"):
        values = require_meta(meta, key, "the waypoints")
        if values is None or len(values) < need:
            if not require_future:
                future = None
                break
            raise ValueError(
                f"meta {key!r} has {'None' if values is None else len(values)} entries, need >= {need} "
                f"(ticks {WAYPOINT_TICKS[0]}..{WAYPOINT_TICKS[-1]}): the frame is too close to the end of "
                "its route; skip the last 8 frames of a route (LEAD's skip_last)"
            )
        future[key] = np.asarray(values, dtype=np.float64)[list(WAYPOINT_TICKS)]
    route = np.asarray(require_meta(meta, "route", "the route target"), dtype=np.float64).reshape(-1, 2)
    try:
        route = resample_route(perturb_points(route[:ROUTE_INPUT_POINTS], t, r))[:ROUTE_OUTPUT_POINTS]
    except ValueError:
        if future is not None:
            raise
        route = np.full((ROUTE_OUTPUT_POINTS, 2), np.nan)
    brake = bool(require_meta(meta, "brake", "the target speed"))
    target_speed = float(require_meta(meta, "target_speed", "the target speed"))
    nan = np.full(len(WAYPOINT_TICKS), np.nan)
    targets = {
        "waypoints": perturb_points(future["future_positions"][:, :2], t, r) if future else np.stack([nan, nan], 1),
        "waypoint_yaws": perturb_yaw(future["future_yaws"], r) if future else nan,
        "route": route,
        **_target_points(meta, t, r),
        "target_speed": target_speed,
        "target_speed_twohot": target_speed_twohot(target_speed, brake),
        "speed": require_meta(meta, "speed", "the speed input"),
        "brake": brake,
    }
    return {name: np.asarray(targets[name], np.float32).reshape(shape) for name, _, shape in TARGET_LAYOUT}
