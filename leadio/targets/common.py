"""What the training targets share: LEAD's training constants and relabelling tables (emergency and biker
type sets, mesh extents, cone/warning sizes, scenario lists, occlusion limits), the box helpers that both box
rows and the BEV occupancy use, and the perturbation P(t, r) of docs/format.md §0 with the meta lookups it
needs.

Format facts that the reader needs too (box classes and columns, the planning-record layout, scenario types,
waypoint ticks, speed classes, radar sizes) live in `leadio.schema`, not here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# LEAD training constants (lead/training/config_training.py): not sensor facts, so not in DatasetConfig.
LIDAR_USED_TIME_STEPS = 10  # training_used_lidar_steps: `time` < 10 keeps all LiDAR and radar-only sweeps
BOX_MIN_Z, BOX_MAX_Z = -4.0, 4.0  # min_z / max_z of the box range filter (raw z, m)
ROUTE_INPUT_POINTS, ROUTE_RESAMPLED_POINTS = 20, 20  # the output keeps `leadio.schema.ROUTE_OUTPUT_POINTS`
ROUTE_FIRST_DISTANCE_M, ROUTE_SPACING_M = 2.5, 1.0
TARGET_POINT_POP_DISTANCE = "3.25"  # selects next_target_points_3.25 / next_commands_3.25

DOOR_SCENARIO, DOOR_HALF_WIDTH = "VehicleOpensDoorTwoWays", 0.6  # car_open_door_extra_width / 2
# (P, V): a box is occluded if 0 <= num_points < P and 0 <= visible_pixels < V (see `occluded`).
WALKER_MIN, VEHICLE_MIN, PARKED_MIN = (5, 15), (1, 1), (3, 5)
CONE, WARNING = "static.prop.constructioncone", "static.prop.trafficwarning"
FIXED_EXTENT = {CONE: (0.1720348298549652, 0.1720348298549652),
                WARNING: (1.186714768409729, 1.4352929592132568)}  # fmt: skip
EMERGENCY = frozenset({"vehicle.dodge.charger_police_2020", "vehicle.dodge.charger_police",
                       "vehicle.ford.ambulance", "vehicle.carlamotors.firetruck"})  # fmt: skip
BIKERS = frozenset({"vehicle.diamondback.century", "vehicle.gazelle.omafiets", "vehicle.bh.crossbike",
                    "vehicle.harley-davidson.low_rider", "vehicle.kawasaki.ninja", "vehicle.vespa.zx125",
                    "vehicle.yamaha.yzf"})  # fmt: skip
OBSTACLE_SCENARIOS = frozenset({"Accident", "AccidentTwoWays", "BlockedIntersection", "ParkedObstacle",
                                "ParkedObstacleTwoWays"})  # fmt: skip
PARKING_SCENARIOS = frozenset({"ParkingCrossingPedestrian", "ParkingCutIn", "StaticCutIn",
                               "PedestrianCrossing", "ParkingExit"})  # fmt: skip
_P, _S = "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/", "/Game/Carla/Static/Dynamic/"
MESH_EXTENT = {  # LEAD's LOOKUP_TABLE: mesh_path -> (ex, ey) half-extents, m
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


def normalize_angle(a: float) -> float:
    """An angle (rad) in (−π, π], §0's normalize."""
    a = a % (2 * math.pi)
    return a - 2 * math.pi if a > math.pi else a


def require_meta(meta: dict, key: str, why: str) -> Any:
    """``meta[key]``, or a ValueError naming the key and what needs it."""
    if key not in meta:
        raise ValueError(f"meta has no {key!r}, which {why} needs (docs/format.md §2)")
    return meta[key]


def perturbation(meta: dict, perturbated: bool) -> tuple[float, float]:
    """P's (t m, r deg) for a view: the meta's perturbation_translation / _rotation, or (0, 0) for normal."""
    if not perturbated:
        return 0.0, 0.0
    t = require_meta(meta, "perturbation_translation", "the perturbated view")
    return float(t), float(require_meta(meta, "perturbation_rotation", "the perturbated view"))


# ---- box helpers shared by `leadio.targets.boxes` and `leadio.targets.bev` ----------------------------------
def box_xy(boxes: list[dict], t: float, r: float) -> list[list[float]]:
    """Each box's ego-frame x, y under P(t, r), as Python floats."""
    pos = np.array([b["position"][:2] for b in boxes], dtype=np.float64).reshape(-1, 2)
    return perturb_points(pos, t, r).tolist()


def occluded(box: dict, limits: tuple[int, int]) -> bool:
    """LEAD's occlusion test; ``limits`` (P, V) is one of WALKER_MIN, VEHICLE_MIN, PARKED_MIN."""
    n, v = box.get("num_points", -1), box.get("visible_pixels", -1)
    return 0 <= n < limits[0] and 0 <= v < limits[1]


def parked_scenario_car(box: dict) -> bool:
    """A standing car spawned by a scenario (its role_name says so)."""
    return box["class"] == "car" and "scenario" in (box.get("role_name") or "") and box["speed"] < 0.1


def parked_mesh(box: dict) -> bool:
    """A static whose mesh is one of CARLA's parked vehicles."""
    return "ParkedVehicles" in (box.get("mesh_path") or "")
