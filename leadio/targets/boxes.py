"""Box rows (§3 filters, §4.6 rows): LEAD's relabelling, occlusion and range filters over ``bboxes``.
"""

from __future__ import annotations

import numpy as np

from leadio.format.config import DatasetConfig
from leadio.schema import BoxClass, BoxColumn, scenario_type
from leadio.targets.common import (
    BIKERS,
    BOX_MAX_Z,
    BOX_MIN_Z,
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


def box_rows(
    boxes: list[dict], meta: dict, config: DatasetConfig, perturbated: bool
) -> tuple[np.ndarray, int]:
    """CenterNet box rows (§4.6) after LEAD's loader filters (§3) and relabelling.

    Args:
        boxes: the frame's bboxes list (§3).
        meta: the frame's meta (perturbation, scenario type and obstacle ids, opened-door flags).
        config: BEV range, ``pixels_per_meter`` (ppm) and ``max_num_bbs``.
        perturbated: apply P to positions and yaws.

    Returns:
        (rows, count): float32 (max_num_bbs, 9), rows [x_px, y_px, ex·ppm, ey·ppm, yaw' (rad), speed (m/s),
        brake (0..1), class (`BoxClass`), num_radar_points (-1 unknown)], x_px = (x' − min_x)·ppm and
        y_px = (y' − min_y)·ppm; the first ``count`` rows are the kept boxes in file order, the rest zeros.
    """
    t, r = perturbation(meta, perturbated)
    yaw_off = np.deg2rad(r)
    scenario, obstacle_ids = scenario_type(meta), set(meta.get("scenario_obstacles_ids") or ())
    rows = []
    for box, (x, y) in zip(boxes, box_xy(boxes, t, r), strict=True):
        row = _box_row(box, x, y, yaw_off, config)
        if row is not None:
            _relabel_scenario_car(box, row, meta, scenario, obstacle_ids)
            if box.get("type_id") in BIKERS:
                row[BoxColumn.CLASS] = BoxClass.BIKER
            rows.append(row)
    return _pixel_rows(rows, config)


def _box_row(box: dict, x: float, y: float, yaw_off: float, config: DatasetConfig) -> np.ndarray | None:
    """One box's row in ego metres with its class and extents, or None when LEAD's filters drop the box."""
    cls, type_id = box["class"], box.get("type_id")
    if cls == "ego_car":
        return None
    row = _labelled_row(box, x, y, yaw_off)
    if _occluded_or_out_of_range(box, row, config):
        return None
    parked = cls == "static_prop_car" or (cls == "static" and parked_mesh(box))
    if cls == "static" and "type_id" in box and type_id not in FIXED_EXTENT and not parked:
        return None  # statics survive only as cones, traffic warnings or parked cars
    if type_id in FIXED_EXTENT:
        row[BoxColumn.EX], row[BoxColumn.EY] = FIXED_EXTENT[type_id]
        row[BoxColumn.CLASS] = BoxClass.OBSTACLE
    if "mesh_path" in box:
        if box["mesh_path"] in MESH_EXTENT:
            row[BoxColumn.EX], row[BoxColumn.EY] = MESH_EXTENT[box["mesh_path"]]
        if parked:
            row[BoxColumn.CLASS] = BoxClass.PARKING
    if cls == "static_prop_car":
        row[BoxColumn.CLASS] = BoxClass.PARKING
    return row


def _labelled_row(box: dict, x: float, y: float, yaw_off: float) -> np.ndarray:
    """The box's raw row: position, extents, yaw under P, and the speed, brake and class its kind gives."""
    cls, type_id = box["class"], box.get("type_id")
    ext = box["extent"]
    row = np.array([x, y, ext[0], ext[1], 0, 0, 0, 0, box.get("num_radar_points", -1)], np.float32)
    row[BoxColumn.YAW] = normalize_angle(box["yaw"] - yaw_off)
    if cls == "car":
        brake = box.get("brake")
        row[BoxColumn.SPEED] = box["speed"]
        row[BoxColumn.BRAKE] = 0.0 if brake is None or np.isnan(brake) else brake
        special = "scenario" in (box.get("role_name") or "") and type_id in EMERGENCY
        row[BoxColumn.CLASS] = BoxClass.SPECIAL if special else BoxClass.VEHICLE
    elif cls == "walker":
        row[BoxColumn.SPEED], row[BoxColumn.CLASS] = box["speed"], BoxClass.WALKER
    elif cls in ("traffic_light", "stop_sign", "static"):
        row[BoxColumn.CLASS] = {"traffic_light": BoxClass.TRAFFIC_LIGHT, "stop_sign": BoxClass.STOP_SIGN}.get(
            cls, BoxClass.PARKING)
    return row


def _occluded_or_out_of_range(box: dict, row: np.ndarray, config: DatasetConfig) -> bool:
    """LEAD's occlusion, traffic light / stop sign and BEV range filters: whether they drop the box."""
    cls = box["class"]
    semantics = box.get("transfuser_semantics_id")  # occlusion by semantics: 1 vehicle, 4 pedestrian
    if "num_points" in box and (
        (semantics == 4 and occluded(box, WALKER_MIN))
        or (semantics == 1 and cls == "static" and occluded(box, PARKED_MIN))
        or (semantics == 1 and occluded(box, VEHICLE_MIN))
    ):
        return True
    green_light = cls == "traffic_light" and box.get("state") == "Green"
    if cls in ("traffic_light", "stop_sign") and (not box.get("affects_ego") or green_light):
        return True  # only lights that affect the ego and are not green, only stop signs that affect it
    return not (
        config.lidar_min_x < row[BoxColumn.X] < config.lidar_max_x
        and config.lidar_min_y < row[BoxColumn.Y] < config.lidar_max_y
        and BOX_MIN_Z < box["position"][2] < BOX_MAX_Z
    )


def _relabel_scenario_car(box: dict, row: np.ndarray, meta: dict, scenario: str, obstacle_ids: set) -> None:
    """A standing scenario car: widened towards an opened door, or relabelled obstacle / parking by scenario."""
    if not parked_scenario_car(box):
        return
    in_scenario = box.get("id") in obstacle_ids
    if scenario == DOOR_SCENARIO and in_scenario:
        opened = meta.get("vehicle_opened_door")
        if opened:  # widen towards the door; LEAD compares the raw meta value with "left"
            row[BoxColumn.EY] += DOOR_HALF_WIDTH
            row[BoxColumn.Y] += DOOR_HALF_WIDTH * (1 if meta.get("vehicle_door_side") == "left" else -1)
        if row[BoxColumn.CLASS] != BoxClass.SPECIAL:
            row[BoxColumn.CLASS] = BoxClass.OBSTACLE if opened else BoxClass.PARKING
    elif row[BoxColumn.CLASS] != BoxClass.SPECIAL:
        if scenario in OBSTACLE_SCENARIOS and in_scenario:
            row[BoxColumn.CLASS] = BoxClass.OBSTACLE
        elif scenario in PARKING_SCENARIOS and box.get("lane_type_str") == "Parking":
            row[BoxColumn.CLASS] = BoxClass.PARKING


def _pixel_rows(rows: list[np.ndarray], config: DatasetConfig) -> tuple[np.ndarray, int]:
    """The kept rows in BEV pixels, inside the raster, first ``max_num_bbs`` of them, zero-padded; and their count."""
    out = np.zeros((config.max_num_bbs, len(BoxColumn)), np.float32)
    if not rows:
        return out, 0
    arr = np.stack(rows)
    arr[:, :2] = arr[:, :2] - np.array([config.lidar_min_x, config.lidar_min_y])
    arr[:, :4] = arr[:, :4] * config.pixels_per_meter
    x_ok = (arr[:, BoxColumn.X] >= 0) & (arr[:, BoxColumn.X] < config.bev_width)
    y_ok = (arr[:, BoxColumn.Y] >= 0) & (arr[:, BoxColumn.Y] < config.bev_height)
    arr = arr[x_ok & y_ok][: config.max_num_bbs]
    out[: len(arr)] = arr
    return out, len(arr)
