"""Box rows (§3 filters, §4.6 rows): LEAD's relabelling, occlusion and range filters over ``bboxes``, and the
scenario type id.
"""

from __future__ import annotations

import numpy as np

from leadio.format.config import DatasetConfig
from leadio.targets.common import (
    _BIKERS,
    _BRAKE,
    _CLASS,
    _DOOR_HALF_WIDTH,
    _DOOR_SCENARIO,
    _EMERGENCY,
    _EX,
    _EY,
    _FIXED_EXTENT,
    _MESH_EXTENT,
    _OBSTACLE_SCENARIOS,
    _PARKED_MIN,
    _PARKING_SCENARIOS,
    _SPEED,
    _VEHICLE_MIN,
    _WALKER_MIN,
    _X,
    _Y,
    _YAW,
    BOX_MAX_Z,
    BOX_MIN_Z,
    SCENARIO_TYPES,
    BoxClass,
    _normalize,
    _perturbation,
    perturb_points,
)


def _scenario_type(meta: dict) -> str:
    for key in ("current_active_scenario_type", "previous_active_scenario_type"):
        if meta.get(key) not in (None, "NA"):
            return meta[key]
    return "NA"


def scenario_type_id(meta: dict) -> int:
    """LEAD's ``scenario_type_id``: the index in `SCENARIO_TYPES` of the current active scenario type, else the
    previous one, else "NA" (§2).

    Raises:
        ValueError: a type LEAD does not know (LEAD's loader would crash on it).
    """
    name = _scenario_type(meta)
    if name not in SCENARIO_TYPES:
        raise ValueError(f"meta scenario type {name!r} is not one of LEAD's SCENARIO_TYPES (docs/format.md §2)")
    return SCENARIO_TYPES.index(name)


def _box_xy(boxes: list[dict], t: float, r: float) -> list[list[float]]:
    pos = np.array([b["position"][:2] for b in boxes], dtype=np.float64).reshape(-1, 2)
    return perturb_points(pos, t, r).tolist()


def _occluded(box: dict, limits: tuple[int, int]) -> bool:
    n, v = box.get("num_points", -1), box.get("visible_pixels", -1)
    return 0 <= n < limits[0] and 0 <= v < limits[1]


def _parked_scenario_car(box: dict) -> bool:
    return box["class"] == "car" and "scenario" in (box.get("role_name") or "") and box["speed"] < 0.1


def _parked_mesh(box: dict) -> bool:
    return "ParkedVehicles" in (box.get("mesh_path") or "")


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
    t, r = _perturbation(meta, perturbated)
    yaw_off = np.deg2rad(r)
    scenario, obstacle_ids = _scenario_type(meta), set(meta.get("scenario_obstacles_ids") or ())
    rows = []
    for box, (x, y) in zip(boxes, _box_xy(boxes, t, r), strict=True):
        cls, type_id = box["class"], box.get("type_id")
        if cls == "ego_car":
            continue
        ext = box["extent"]
        row = np.array([x, y, ext[0], ext[1], 0, 0, 0, 0, box.get("num_radar_points", -1)], np.float32)
        row[_YAW] = _normalize(box["yaw"] - yaw_off)
        if cls == "car":
            brake = box.get("brake")
            row[_SPEED], row[_BRAKE] = box["speed"], 0.0 if brake is None or np.isnan(brake) else brake
            special = "scenario" in (box.get("role_name") or "") and type_id in _EMERGENCY
            row[_CLASS] = BoxClass.SPECIAL if special else BoxClass.VEHICLE
        elif cls == "walker":
            row[_SPEED], row[_CLASS] = box["speed"], BoxClass.WALKER
        elif cls in ("traffic_light", "stop_sign", "static"):
            row[_CLASS] = {"traffic_light": 2, "stop_sign": 3}.get(cls, 6)  # LIGHT, STOP_SIGN, PARKING
        semantics = box.get("transfuser_semantics_id")  # occlusion by semantics: 1 vehicle, 4 pedestrian
        if "num_points" in box and (
            (semantics == 4 and _occluded(box, _WALKER_MIN))
            or (semantics == 1 and cls == "static" and _occluded(box, _PARKED_MIN))
            or (semantics == 1 and _occluded(box, _VEHICLE_MIN))
        ):
            continue
        green_light = cls == "traffic_light" and box.get("state") == "Green"
        if cls in ("traffic_light", "stop_sign") and (not box.get("affects_ego") or green_light):
            continue  # only lights that affect the ego and are not green, only stop signs that affect it
        if not (
            config.lidar_min_x < row[_X] < config.lidar_max_x
            and config.lidar_min_y < row[_Y] < config.lidar_max_y
            and BOX_MIN_Z < box["position"][2] < BOX_MAX_Z
        ):
            continue
        parked = cls == "static_prop_car" or (cls == "static" and _parked_mesh(box))
        if cls == "static" and "type_id" in box and type_id not in _FIXED_EXTENT and not parked:
            continue  # statics survive only as cones, traffic warnings or parked cars
        if type_id in _FIXED_EXTENT:
            row[_EX], row[_EY] = _FIXED_EXTENT[type_id]
            row[_CLASS] = BoxClass.OBSTACLE
        if "mesh_path" in box:
            if box["mesh_path"] in _MESH_EXTENT:
                row[_EX], row[_EY] = _MESH_EXTENT[box["mesh_path"]]
            if parked:
                row[_CLASS] = BoxClass.PARKING
        if cls == "static_prop_car":
            row[_CLASS] = BoxClass.PARKING
        if _parked_scenario_car(box):
            in_scenario = box.get("id") in obstacle_ids
            if scenario == _DOOR_SCENARIO and in_scenario:
                opened = meta.get("vehicle_opened_door")
                if opened:  # widen towards the door; LEAD compares the raw meta value with "left"
                    row[_EY] += _DOOR_HALF_WIDTH
                    row[_Y] += _DOOR_HALF_WIDTH * (1 if meta.get("vehicle_door_side") == "left" else -1)
                if row[_CLASS] != BoxClass.SPECIAL:
                    row[_CLASS] = BoxClass.OBSTACLE if opened else BoxClass.PARKING
            elif row[_CLASS] != BoxClass.SPECIAL:
                if scenario in _OBSTACLE_SCENARIOS and in_scenario:
                    row[_CLASS] = BoxClass.OBSTACLE
                elif scenario in _PARKING_SCENARIOS and box.get("lane_type_str") == "Parking":
                    row[_CLASS] = BoxClass.PARKING
        if type_id in _BIKERS:
            row[_CLASS] = BoxClass.BIKER
        rows.append(row)

    out = np.zeros((config.max_num_bbs, 9), np.float32)
    if not rows:
        return out, 0
    arr = np.stack(rows)
    arr[:, :2] = arr[:, :2] - np.array([config.lidar_min_x, config.lidar_min_y])
    arr[:, :4] = arr[:, :4] * config.pixels_per_meter
    x_ok = (arr[:, _X] >= 0) & (arr[:, _X] < config.bev_width)
    arr = arr[x_ok & (arr[:, _Y] >= 0) & (arr[:, _Y] < config.bev_height)][: config.max_num_bbs]
    out[: len(arr)] = arr
    return out, len(arr)
