"""One raw LEAD frame -> the fixed-shape training arrays of docs/format.md §4 (pure numpy + OpenCV, no I/O).

Input is the dict of `leadio.format.read_frame`. With ``perturbated=True`` every geometric label gets
P(t, r) (§0) from meta's ``perturbation_translation`` (m) and ``perturbation_rotation`` (deg). The hdmap
and radar twins are already rendered from the shifted pose: for that view the caller passes
``hdmap_perturbated`` / ``radar_perturbated`` and they get no P here. Outputs: `lidar_bev_histogram` uint8
(1, 320, 384) counts (§4.2; /5 at decode), `bev_semantic` uint8 (320, 384) (§4.5), `box_rows` float32
(90, 9) + count (§3 filters, §4.6 rows), `planning_targets` -> `pack_targets` 292-byte record (§4.7),
`radar_input` float16 (300, 5).

Fidelity: the rules are LEAD's own code (kesai-labs/lead data_loader/carla_dataset[_utils].py,
tfv6/planning_decoder.py), not a simplification: relabelling uses LEAD's tables (emergency and biker
``type_id`` sets, the parked-vehicle ``mesh_path`` extent table, cone/warning sizes, scenario-type lists,
the opened-door widening), and the cone/warning, scenario-obstacle and traffic-light hulls are filled.
Deliberate differences:

- LiDAR BEV is stored as uint8 counts; `lidar_bev_to_float` gives LEAD's float32 bit for bit. LEAD reads
  LAS coordinates as float64; a float32 reader can move a point lying within one float32 ulp of an edge.
- ValueError where LEAD asserts, crashes or emits NaN: fewer than 41 future positions (LEAD silently drops
  the key), fewer than 2 distinct target points, a route with fewer than 2 distinct points or a zero-length
  step, a negative target speed, a missing meta key.
- The two-hot is computed in float64 -> float32 (LEAD encodes it on the device in the training dtype).
- Boxes: a missing ``num_points`` / ``visible_pixels`` means unknown (-1), a missing or None ``brake`` 0.
- ``previous_command`` is not stored: it always equals ``command`` (§9.4).
- The radar box filter is closed, [min, max], as in LEAD's code.
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Any

import cv2
import numpy as np

from leadio.format.config import DatasetConfig

__all__ = [
    "SCENARIO_TYPES", "TARGET_LAYOUT", "TARGET_RECORD_BYTES", "TARGET_SPEED_CLASSES", "BoxClass",
    "bev_semantic", "box_rows", "command_onehot", "lidar_bev_histogram", "lidar_bev_to_float", "pack_targets",
    "perturb_points", "perturb_yaw", "planning_targets", "radar_input", "resample_route", "scenario_type_id",
    "target_speed_twohot", "unpack_targets",
]  # fmt: skip

# LEAD training constants (lead/training/config_training.py): not sensor facts, so not in DatasetConfig.
LIDAR_USED_TIME_STEPS = 10  # training_used_lidar_steps: `time` < 10 keeps all LiDAR and radar-only sweeps
BOX_MIN_Z, BOX_MAX_Z = -4.0, 4.0  # min_z / max_z of the box range filter (raw z, m)
WAYPOINT_TICKS = tuple(range(5, 41, 5))  # 8 waypoints 0.25 s apart (20 Hz ticks)
ROUTE_INPUT_POINTS, ROUTE_RESAMPLED_POINTS, ROUTE_OUTPUT_POINTS = 20, 20, 10
ROUTE_FIRST_DISTANCE_M, ROUTE_SPACING_M = 2.5, 1.0
TARGET_POINT_POP_DISTANCE = "3.25"  # selects next_target_points_3.25 / next_commands_3.25
TARGET_SPEED_CLASSES = (0.0, 4.0, 8.0, 10.0, 13.88888888, 16.0, 17.77777777, 20.0)  # m/s, as LEAD
NUM_RADAR_SENSORS = 4
#: LEAD's SCENARIO_TYPES (lead/common/constants.py), in its order: `scenario_type_id` is the index.
SCENARIO_TYPES = (
    "Accident", "AccidentTwoWays", "BlockedIntersection", "ConstructionObstacle", "ConstructionObstacleTwoWays",
    "ControlLoss", "CrossJunctionDefectTrafficLight", "CrossingBicycleFlow", "DynamicObjectCrossing",
    "EnterActorFlow", "EnterActorFlowV2", "HardBreakRoute", "HazardAtSideLane", "HazardAtSideLaneTwoWays",
    "HighwayCutIn", "HighwayExit", "InterurbanActorFlow", "InterurbanAdvancedActorFlow", "InvadingTurn",
    "MergerIntoSlowTraffic", "MergerIntoSlowTrafficV2", "NonSignalizedJunctionLeftTurn",
    "NonSignalizedJunctionLeftTurnEnterFlow", "NonSignalizedJunctionRightTurn", "noScenarios",
    "OppositeVehicleRunningRedLight", "OppositeVehicleTakingPriority", "ParkedObstacle", "ParkedObstacleTwoWays",
    "ParkingCrossingPedestrian", "ParkingCutIn", "ParkingExit", "PedestrianCrossing", "PriorityAtJunction",
    "RedLightWithoutLeadVehicle", "SequentialLaneChange", "SignalizedJunctionLeftTurn",
    "SignalizedJunctionLeftTurnEnterFlow", "SignalizedJunctionRightTurn", "StaticCutIn", "T_Junction",
    "VanillaNonSignalizedTurn", "VanillaNonSignalizedTurnEncounterStopsign",
    "VanillaSignalizedTurnEncounterGreenLight", "VanillaSignalizedTurnEncounterRedLight",
    "VehicleOpensDoorTwoWays", "VehicleTurningRoute", "VehicleTurningRoutePedestrian", "YieldToEmergencyVehicle",
    "NA",
)  # fmt: skip


class BoxClass(IntEnum):
    """Column 7 of a box row (LEAD's TransfuserBoundingBoxClass)."""

    VEHICLE = 0
    WALKER = 1
    TRAFFIC_LIGHT = 2
    STOP_SIGN = 3
    SPECIAL = 4
    OBSTACLE = 5
    PARKING = 6
    BIKER = 7


# Occupancy labels (TransfuserBEVOccupancyClass); the BEV class is label + 3 (13 - 10 classes).
_VEHICLE, _WALKER, _OBSTACLE, _PARKING, _SPECIAL, _BIKER, _GREEN, _RED, _RED_NOT_NORMAL = range(1, 10)
_OCC_OFFSET = 3
_X, _Y, _EX, _EY, _YAW, _SPEED, _BRAKE, _CLASS, _RADAR = range(9)  # box row columns
_HDMAP_LUT = np.zeros(256, np.uint8)
_HDMAP_LUT[:9] = (0, 1, 0, 2, 2, 3, 0, 0, 0)  # ChauffeurNet id -> road 1, lane markers 2, stop signs 3
_OCC_HALF_RANGE_M = 128.0  # the occupancy canvas spans +-128 m (1024 px at 4 px/m)
_SMALL_SCALE, _SMALL_MIN_EXTENT = 2.5, 0.4  # walkers and bikers in the BEV
_DOOR_SCENARIO, _DOOR_HALF_WIDTH = "VehicleOpensDoorTwoWays", 0.6  # car_open_door_extra_width / 2
# (P, V): a box is occluded if 0 <= num_points < P and 0 <= visible_pixels < V.
_WALKER_MIN, _VEHICLE_MIN, _PARKED_MIN = (5, 15), (1, 1), (3, 5)
_OCC_CLASSES = {"car": _VEHICLE_MIN, "walker": _WALKER_MIN, "static": _PARKED_MIN,
                "static_prop_car": _PARKED_MIN, "traffic_light": None}  # fmt: skip
_CONE, _WARNING = "static.prop.constructioncone", "static.prop.trafficwarning"
_FIXED_EXTENT = {_CONE: (0.1720348298549652, 0.1720348298549652),
                 _WARNING: (1.186714768409729, 1.4352929592132568)}  # fmt: skip
_EMERGENCY = frozenset({"vehicle.dodge.charger_police_2020", "vehicle.dodge.charger_police",
                        "vehicle.ford.ambulance", "vehicle.carlamotors.firetruck"})  # fmt: skip
_BIKERS = frozenset({"vehicle.diamondback.century", "vehicle.gazelle.omafiets", "vehicle.bh.crossbike",
                     "vehicle.harley-davidson.low_rider", "vehicle.kawasaki.ninja", "vehicle.vespa.zx125",
                     "vehicle.yamaha.yzf"})  # fmt: skip
_OBSTACLE_SCENARIOS = frozenset({"Accident", "AccidentTwoWays", "BlockedIntersection", "ParkedObstacle",
                                 "ParkedObstacleTwoWays"})  # fmt: skip
_PARKING_SCENARIOS = frozenset({"ParkingCrossingPedestrian", "ParkingCutIn", "StaticCutIn",
                                "PedestrianCrossing", "ParkingExit"})  # fmt: skip
_P, _S = "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/", "/Game/Carla/Static/Dynamic/"
_MESH_EXTENT = {  # LEAD's LOOKUP_TABLE: mesh_path -> (ex, ey) half-extents, m
    _P + "Lincoln/SM_LincolnParked.SM_LincolnParked": (2.44619083404541, 1.115301489830017),
    _P + "Charger/SM_ChargerParked.SM_ChargerParked": (2.5039126873016357, 1.0485419034957886),
    _P + "VolkswagenT2/SM_VolkswagenT2_2021_Parked.SM_VolkswagenT2_2021_Parked":
        (2.2210919857025146, 0.9388753771781921),
    _P + "FordCrown/SM_FordCrown_parked.SM_FordCrown_parked": (2.6828393936157227, 0.9732309579849243),
    _P + "NissanPatrol2021/SM_NissanPatrol2021_parked.SM_NissanPatrol2021_parked":
        (2.782914400100708, 1.217571496963501),
    _P + "MercedesCCC/SM_MercedesCCC_Parked.SM_MercedesCCC_Parked": (2.3368194103240967, 1.0011461973190308),
    _P + "TeslaM3/SM_TeslaM3_parked.SM_TeslaM3_parked": (2.3958897590637207, 1.081725001335144),
    _P + "Mini2021/SM_Mini2021_parked.SM_Mini2021_parked": (2.2763495445251465, 1.0926425457000732),
    _S + "Garden/SM_PlasticTable.SM_PlasticTable": (1.241101622581482, 1.241101622581482),
    _S + "Garden/SM_PlasticChair.SM_PlasticChair": (0.36523768305778503, 0.37522444128990173),
    _S + "Construction/SM_ConstructionCone.SM_ConstructionCone": (0.1720348298549652, 0.1720348298549652),
}  # fmt: skip


def perturb_points(xy: Any, t: float, r_deg: float) -> np.ndarray:
    """P(t, r) of §0: p' = R(r)ᵀ(p − (0, t)).

    Args:
        xy: (..., 2) ego-frame points, m (x forward, y right).
        t: lateral shift of the perturbed ego along its y, m.
        r_deg: yaw of the perturbed ego, degrees (positive from +x towards +y).

    Returns:
        float64 (..., 2) points in the perturbed ego frame.
    """
    c, s = np.cos(np.deg2rad(r_deg)), np.sin(np.deg2rad(r_deg))
    return (np.asarray(xy, dtype=np.float64) - np.array([0.0, t])) @ np.array([[c, -s], [s, c]])  # (Rᵀp)ᵀ


def perturb_yaw(yaw: Any, r_deg: float) -> np.ndarray:
    """P on yaws (rad): normalize(yaw − rad(r)) with §0's normalize, in (−π, π]; float64, input's shape."""
    a = np.mod(np.asarray(yaw, dtype=np.float64) - np.deg2rad(r_deg), 2 * np.pi)
    return np.where(a > np.pi, a - 2 * np.pi, a)


def _normalize(a: float) -> float:
    a = a % (2 * math.pi)
    return a - 2 * math.pi if a > math.pi else a


def _require(meta: dict, key: str, why: str) -> Any:
    if key not in meta:
        raise ValueError(f"meta has no {key!r}, which {why} needs (docs/format.md §2)")
    return meta[key]


def _perturbation(meta: dict, perturbated: bool) -> tuple[float, float]:
    if not perturbated:
        return 0.0, 0.0
    t = _require(meta, "perturbation_translation", "the perturbated view")
    return float(t), float(_require(meta, "perturbation_rotation", "the perturbated view"))


def _inside(x: np.ndarray, y: np.ndarray, config: DatasetConfig) -> np.ndarray:
    """Closed BEV box test: min_x <= x <= max_x and min_y <= y <= max_y."""
    in_x = (x >= config.lidar_min_x) & (x <= config.lidar_max_x)
    return in_x & (y >= config.lidar_min_y) & (y <= config.lidar_max_y)


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
        t, r = _perturbation(meta, perturbated)
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
    pts = np.asarray(route, dtype=np.float64).reshape(-1, 2)
    pts = pts[np.sort(np.unique(pts, return_index=True, axis=0)[1])]
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
    points, commands = _require(meta, key_p, "the target points"), _require(meta, key_c, "the commands")
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
    theta = float(_require(meta, "theta", "the target points"))
    pos = np.asarray(_require(meta, "pos_global", "the target points"), dtype=np.float64)[:2]
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
    t, r = _perturbation(meta, perturbated)
    need, future = WAYPOINT_TICKS[-1] + 1, {}
    for key in ("future_positions", "future_yaws"):
        values = _require(meta, key, "the waypoints")
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
    route = np.asarray(_require(meta, "route", "the route target"), dtype=np.float64).reshape(-1, 2)
    try:
        route = resample_route(perturb_points(route[:ROUTE_INPUT_POINTS], t, r))[:ROUTE_OUTPUT_POINTS]
    except ValueError:
        if future is not None:
            raise
        route = np.full((ROUTE_OUTPUT_POINTS, 2), np.nan)
    brake = bool(_require(meta, "brake", "the target speed"))
    target_speed = float(_require(meta, "target_speed", "the target speed"))
    nan = np.full(len(WAYPOINT_TICKS), np.nan)
    targets = {
        "waypoints": perturb_points(future["future_positions"][:, :2], t, r) if future else np.stack([nan, nan], 1),
        "waypoint_yaws": perturb_yaw(future["future_yaws"], r) if future else nan,
        "route": route,
        **_target_points(meta, t, r),
        "target_speed": target_speed,
        "target_speed_twohot": target_speed_twohot(target_speed, brake),
        "speed": _require(meta, "speed", "the speed input"),
        "brake": brake,
    }
    return {name: np.asarray(targets[name], np.float32).reshape(shape) for name, _, shape in TARGET_LAYOUT}


#: The planning-target record: (name, dtype, shape) in storage order; all little-endian float32.
TARGET_LAYOUT: list[tuple[str, np.dtype, tuple[int, ...]]] = [
    (name, np.dtype("<f4"), shape)
    for name, shape in [
        ("waypoints", (len(WAYPOINT_TICKS), 2)), ("waypoint_yaws", (len(WAYPOINT_TICKS),)),
        ("route", (ROUTE_OUTPUT_POINTS, 2)), ("previous_target_point", (2,)), ("target_point", (2,)),
        ("next_target_point", (2,)), ("command", (6,)), ("next_command", (6,)), ("target_speed", ()),
        ("target_speed_twohot", (len(TARGET_SPEED_CLASSES),)), ("speed", ()), ("brake", ()),
    ]
]  # fmt: skip
_OFFSETS = np.cumsum([0] + [math.prod(shape) for _, _, shape in TARGET_LAYOUT]).tolist()
TARGET_RECORD_BYTES = _OFFSETS[-1] * 4


def pack_targets(targets: dict[str, Any]) -> bytes:
    """Planning targets (exactly `TARGET_LAYOUT`'s keys and shapes; cast to float32) -> one record of
    `TARGET_RECORD_BYTES` bytes, little-endian float32, fields in layout order."""
    names = [name for name, _, _ in TARGET_LAYOUT]
    if set(targets) != set(names):
        missing, unexpected = sorted(set(names) - set(targets)), sorted(set(targets) - set(names))
        raise ValueError(f"targets do not match TARGET_LAYOUT: missing {missing}, unexpected {unexpected}")
    parts = []
    for name, dtype, shape in TARGET_LAYOUT:
        value = np.asarray(targets[name], dtype=dtype)
        if value.shape != shape:
            raise ValueError(f"target {name!r} has shape {value.shape}, TARGET_LAYOUT says {shape}")
        parts.append(value.reshape(-1))
    return np.concatenate(parts).tobytes()


def unpack_targets(record: bytes | bytearray | memoryview) -> dict[str, np.ndarray]:
    """Inverse of `pack_targets`: writable native float32 arrays shaped as in `TARGET_LAYOUT`."""
    raw = np.frombuffer(record, dtype=np.uint8)
    if raw.size != TARGET_RECORD_BYTES:
        raise ValueError(f"target record has {raw.size} bytes, TARGET_LAYOUT needs {TARGET_RECORD_BYTES}")
    flat = raw.view("<f4").astype(np.float32)  # copy: native byte order, writable
    bounds = zip(_OFFSETS, _OFFSETS[1:], strict=False)
    fields = zip(TARGET_LAYOUT, bounds, strict=True)
    return {name: flat[a:b].reshape(shape) for (name, _, shape), (a, b) in fields}


def radar_input(
    radar: dict[str, np.ndarray], config: DatasetConfig, max_points_per_sensor: int = 75
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
