"""What every target shares: LEAD's training constants and tables (box classes, relabelling sets, mesh
extents, scenario types) and the perturbation P(t, r) of docs/format.md §0 with the meta lookups it needs.
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Any

import numpy as np

from leadio.format.config import DatasetConfig

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
