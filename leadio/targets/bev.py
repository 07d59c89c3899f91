"""The BEV semantic canvas (§4.5): the hdmap classes with the occupancy of boxes (filled hulls) on top.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from leadio.format.config import DatasetConfig
from leadio.schema import BEV_SEMANTIC_CLASSES, HDMAP_CLASSES, scenario_type
from leadio.targets.common import (
    BIKERS,
    CONE,
    DOOR_HALF_WIDTH,
    DOOR_SCENARIO,
    EMERGENCY,
    FIXED_EXTENT,
    MESH_EXTENT,
    OBSTACLE_SCENARIOS,
    PARKED_MIN,
    PARKING_SCENARIOS,
    VEHICLE_MIN,
    WALKER_MIN,
    box_xy,
    normalize_angle,
    occluded,
    parked_mesh,
    parked_scenario_car,
    perturbation,
)

# Occupancy labels (TransfuserBEVOccupancyClass); the BEV class is label + 3 (13 - 10 classes).
_VEHICLE, _WALKER, _OBSTACLE, _PARKING, _SPECIAL, _BIKER, _GREEN, _RED, _RED_NOT_NORMAL = range(1, 10)
_OCC_OFFSET = 3
_HDMAP_LUT = np.zeros(256, np.uint8)
_HDMAP_LUT[:HDMAP_CLASSES] = (0, 1, 0, 2, 2, 3, 0, 0, 0)  # ChauffeurNet id -> road 1, lane markers 2, stop signs 3
_OCC_HALF_RANGE_M = 128.0  # the occupancy canvas spans +-128 m (1024 px at 4 px/m)
_SMALL_SCALE, _SMALL_MIN_EXTENT = 2.5, 0.4  # walkers and bikers in the BEV
# class -> occlusion limits (P, V) of `occluded`; None: never occluded (traffic lights)
_OCC_CLASSES = {"car": VEHICLE_MIN, "walker": WALKER_MIN, "static": PARKED_MIN,
                "static_prop_car": PARKED_MIN, "traffic_light": None}  # fmt: skip


def bev_semantic(
    hdmap: np.ndarray, boxes: list[dict], meta: dict, config: DatasetConfig, perturbated: bool
) -> np.ndarray:
    """The 13-class BEV target (§4.5): the hdmap layer with the box occupancy drawn over it.

    Args:
        hdmap: uint8 (256, 256) ChauffeurNet ids at ``hdmap_pixels_per_meter``, ego at the centre; for the
            perturbated view pass ``hdmap_perturbated`` (already rendered from that pose).
        boxes: the frame's bboxes list (§3).
        meta: the frame's meta (perturbation, scenario type and ids, door and traffic-light flags).
        config: BEV range and resolution.
        perturbated: apply P to the boxes.

    Returns:
        uint8 (H, W) = (320, 384): 0 unlabeled, 1 road, 2 lane markers, 3 stop signs; where a box is drawn
        4 vehicle, 5 walker, 6 obstacle, 7 parking, 8 special, 9 biker, 10 green light, 11 red light,
        12 red light (overhead or European).
    """
    hdmap = np.asarray(hdmap)
    if hdmap.shape != (config.hdmap_size, config.hdmap_size):
        raise ValueError(f"hdmap must be {(config.hdmap_size,) * 2}, got {hdmap.shape}")
    zoom = round(config.pixels_per_meter / config.hdmap_pixels_per_meter)
    bev = _HDMAP_LUT[hdmap[_crop(config.hdmap_size, config.hdmap_pixels_per_meter, config)]]
    bev = bev.repeat(zoom, 0).repeat(zoom, 1)
    occupancy = _occupancy(boxes, meta, config, *perturbation(meta, perturbated))
    occupancy = occupancy[_crop(len(occupancy), config.pixels_per_meter, config)]
    if bev.shape != occupancy.shape or bev.shape != (config.bev_height, config.bev_width):
        raise ValueError(f"map {bev.shape} / occupancy {occupancy.shape} do not fit config {config.name}")
    out = np.where(occupancy != 0, occupancy + _OCC_OFFSET, bev).astype(np.uint8)
    assert int(out.max()) < BEV_SEMANTIC_CLASSES, "BEV labels exceed their classes"  # by construction
    return out


def _crop(size: int, ppm: float, config: DatasetConfig) -> tuple[slice, slice]:
    """Rows (y) and columns (x) of the BEV range in a square raster of ``size`` px, ego at the centre."""
    y = (size / 2 + np.array([config.lidar_min_y, config.lidar_max_y]) * ppm).astype(int)
    x = (size / 2 + np.array([config.lidar_min_x, config.lidar_max_x]) * ppm).astype(int)
    return slice(y[0], y[1]), slice(x[0], x[1])


def _occupancy(boxes: list[dict], meta: dict, config: DatasetConfig, t: float, r: float) -> np.ndarray:
    """LEAD's uncropped occupancy canvas: uint8 (S, S), S = 256 m · ppm, ego at the centre."""
    ppm = config.pixels_per_meter
    size = round(2 * _OCC_HALF_RANGE_M * ppm)
    canvas = np.zeros((size, size), np.uint8)
    scenario, obstacle_ids = scenario_type(meta), set(meta.get("scenario_obstacles_ids") or ())
    opened = meta.get("vehicle_opened_door")
    red = _RED_NOT_NORMAL if meta.get("over_head_traffic_light") or meta.get("europe_traffic_light") else _RED
    hulls: dict[str, list[np.ndarray]] = {"cone": [], "warning": [], "obstacle": [], "red": [], "green": []}
    yaw_off = np.deg2rad(r)
    for box, (x, y) in zip(boxes, box_xy(boxes, t, r), strict=True):
        cls, type_id = box["class"], box.get("type_id", "")
        if cls not in _OCC_CLASSES:
            continue
        small = cls == "walker" or type_id in BIKERS
        cx, cy = (x + _OCC_HALF_RANGE_M) * ppm, (_OCC_HALF_RANGE_M + y) * ppm  # column = x, row = y
        if not (0 <= cx < size and 0 <= cy < size):
            continue
        min_extent = _SMALL_MIN_EXTENT if small else 0.0
        ex, ey = max(box["extent"][0], min_extent), max(box["extent"][1], min_extent)
        in_scenario = box.get("id") in obstacle_ids
        if parked_scenario_car(box) and in_scenario and scenario == DOOR_SCENARIO and opened:
            ey += DOOR_HALF_WIDTH
            cy += DOOR_HALF_WIDTH * ppm * (1 if meta.get("vehicle_door_side") == "left" else -1)
        if "mesh_path" in box:
            ex, ey = MESH_EXTENT.get(box["mesh_path"], (ex, ey))
        elif type_id in FIXED_EXTENT:
            ex, ey = FIXED_EXTENT[type_id]
        extra = _SMALL_SCALE if small else 1.0
        yaw = math.degrees(normalize_angle(box["yaw"] - yaw_off))
        corners = cv2.boxPoints(((cx, cy), (ex * 2 * ppm * extra, ey * 2 * ppm * extra), yaw))
        corners = corners.astype(np.int32)  # truncation, as LEAD

        label, hull = _VEHICLE, None
        if cls == "car":
            if type_id in EMERGENCY:
                obstacle = scenario in OBSTACLE_SCENARIOS and in_scenario
                label, hull = (_OBSTACLE, "obstacle") if obstacle else (_SPECIAL, None)
            elif type_id in BIKERS:
                label = _BIKER
            elif parked_scenario_car(box):
                if scenario in OBSTACLE_SCENARIOS and in_scenario:
                    label, hull = _OBSTACLE, "obstacle"
                elif scenario == DOOR_SCENARIO and in_scenario:
                    label, hull = (_OBSTACLE, "obstacle") if opened else (_PARKING, None)
                elif scenario in PARKING_SCENARIOS and box.get("lane_type_str") == "Parking":
                    label = _PARKING
        elif cls in ("walker", "static_prop_car"):
            label = _WALKER if cls == "walker" else _PARKING
        elif cls == "static":
            if type_id in FIXED_EXTENT:
                label, hull = _OBSTACLE, ("cone" if type_id == CONE else "warning")
            elif type_id in EMERGENCY:
                label, hull = _SPECIAL, "obstacle"
            elif parked_mesh(box):
                label = _PARKING
            else:
                continue
        elif box.get("affects_ego"):  # traffic light
            label, hull = (red, "red") if box.get("state") in ("Red", "Yellow") else (_GREEN, "green")
        else:
            continue
        if hull is not None:  # corners join the hulls even when the box itself is occluded, as in LEAD
            hulls[hull].append(corners)
        if _OCC_CLASSES[cls] is None or not occluded(box, _OCC_CLASSES[cls]):
            cv2.fillPoly(canvas, [corners], label)

    if len(hulls["warning"]) >= 1 and len(hulls["cone"]) >= 6:  # >= 3 and >= 24 corners
        _fill_hull(canvas, hulls["cone"] + hulls["warning"], _OBSTACLE, 24 * ppm)
    if hulls["obstacle"]:
        _fill_hull(canvas, hulls["obstacle"], _OBSTACLE, 48 * ppm)
    if hulls["red"] or hulls["green"]:
        _fill_hull(canvas, hulls["red"] or hulls["green"], red if hulls["red"] else _GREEN, None)
    return canvas


def _fill_hull(canvas: np.ndarray, corner_sets: list[np.ndarray], label: int, max_dist: float | None) -> None:
    """Fill the convex hull of the corners if they all lie within max_dist px of their mean."""
    points = np.concatenate(corner_sets)
    if max_dist is None or np.all(np.linalg.norm(points - points.mean(axis=0), axis=1) <= max_dist):
        cv2.fillPoly(canvas, [cv2.convexHull(points)], label)
