"""The BEV semantic canvas (§4.5): the hdmap classes with the occupancy of boxes (filled hulls) on top.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from leadio.format.config import DatasetConfig
from leadio.targets.boxes import _box_xy, _occluded, _parked_mesh, _parked_scenario_car, _scenario_type
from leadio.targets.common import (
    _BIKER,
    _BIKERS,
    _CONE,
    _DOOR_HALF_WIDTH,
    _DOOR_SCENARIO,
    _EMERGENCY,
    _FIXED_EXTENT,
    _GREEN,
    _HDMAP_LUT,
    _MESH_EXTENT,
    _OBSTACLE,
    _OBSTACLE_SCENARIOS,
    _OCC_CLASSES,
    _OCC_HALF_RANGE_M,
    _OCC_OFFSET,
    _PARKING,
    _PARKING_SCENARIOS,
    _RED,
    _RED_NOT_NORMAL,
    _SMALL_MIN_EXTENT,
    _SMALL_SCALE,
    _SPECIAL,
    _VEHICLE,
    _WALKER,
    _normalize,
    _perturbation,
)


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
    occupancy = _occupancy(boxes, meta, config, *_perturbation(meta, perturbated))
    occupancy = occupancy[_crop(len(occupancy), config.pixels_per_meter, config)]
    if bev.shape != occupancy.shape or bev.shape != (config.bev_height, config.bev_width):
        raise ValueError(f"map {bev.shape} / occupancy {occupancy.shape} do not fit config {config.name}")
    return np.where(occupancy != 0, occupancy + _OCC_OFFSET, bev).astype(np.uint8)


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
    scenario, obstacle_ids = _scenario_type(meta), set(meta.get("scenario_obstacles_ids") or ())
    opened = meta.get("vehicle_opened_door")
    red = _RED_NOT_NORMAL if meta.get("over_head_traffic_light") or meta.get("europe_traffic_light") else _RED
    hulls: dict[str, list[np.ndarray]] = {"cone": [], "warning": [], "obstacle": [], "red": [], "green": []}
    yaw_off = np.deg2rad(r)
    for box, (x, y) in zip(boxes, _box_xy(boxes, t, r), strict=True):
        cls, type_id = box["class"], box.get("type_id", "")
        if cls not in _OCC_CLASSES:
            continue
        small = cls == "walker" or type_id in _BIKERS
        cx, cy = (x + _OCC_HALF_RANGE_M) * ppm, (_OCC_HALF_RANGE_M + y) * ppm  # column = x, row = y
        if not (0 <= cx < size and 0 <= cy < size):
            continue
        min_extent = _SMALL_MIN_EXTENT if small else 0.0
        ex, ey = max(box["extent"][0], min_extent), max(box["extent"][1], min_extent)
        in_scenario = box.get("id") in obstacle_ids
        if _parked_scenario_car(box) and in_scenario and scenario == _DOOR_SCENARIO and opened:
            ey += _DOOR_HALF_WIDTH
            cy += _DOOR_HALF_WIDTH * ppm * (1 if meta.get("vehicle_door_side") == "left" else -1)
        if "mesh_path" in box:
            ex, ey = _MESH_EXTENT.get(box["mesh_path"], (ex, ey))
        elif type_id in _FIXED_EXTENT:
            ex, ey = _FIXED_EXTENT[type_id]
        extra = _SMALL_SCALE if small else 1.0
        yaw = math.degrees(_normalize(box["yaw"] - yaw_off))
        corners = cv2.boxPoints(((cx, cy), (ex * 2 * ppm * extra, ey * 2 * ppm * extra), yaw))
        corners = corners.astype(np.int32)  # truncation, as LEAD

        label, hull = _VEHICLE, None
        if cls == "car":
            if type_id in _EMERGENCY:
                obstacle = scenario in _OBSTACLE_SCENARIOS and in_scenario
                label, hull = (_OBSTACLE, "obstacle") if obstacle else (_SPECIAL, None)
            elif type_id in _BIKERS:
                label = _BIKER
            elif _parked_scenario_car(box):
                if scenario in _OBSTACLE_SCENARIOS and in_scenario:
                    label, hull = _OBSTACLE, "obstacle"
                elif scenario == _DOOR_SCENARIO and in_scenario:
                    label, hull = (_OBSTACLE, "obstacle") if opened else (_PARKING, None)
                elif scenario in _PARKING_SCENARIOS and box.get("lane_type_str") == "Parking":
                    label = _PARKING
        elif cls in ("walker", "static_prop_car"):
            label = _WALKER if cls == "walker" else _PARKING
        elif cls == "static":
            if type_id in _FIXED_EXTENT:
                label, hull = _OBSTACLE, ("cone" if type_id == _CONE else "warning")
            elif type_id in _EMERGENCY:
                label, hull = _SPECIAL, "obstacle"
            elif _parked_mesh(box):
                label = _PARKING
            else:
                continue
        elif box.get("affects_ego"):  # traffic light
            label, hull = (red, "red") if box.get("state") in ("Red", "Yellow") else (_GREEN, "green")
        else:
            continue
        if hull is not None:  # corners join the hulls even when the box itself is occluded, as in LEAD
            hulls[hull].append(corners)
        if _OCC_CLASSES[cls] is None or not _occluded(box, _OCC_CLASSES[cls]):
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
