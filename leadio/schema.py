"""Every format fact the writer and the reader share, in one home: the members of a stored sample, their
names in the tar, the keys of a decoded batch, the planning-target record, the box-row columns, the
depth / LiDAR / ego constants and LEAD's scenario-type rule.

Both sides import this module and nothing heavier: it needs numpy only, so the reading side (plan, read,
decode, engine, dataset, lead) never loads the building side (catalog scanning, buckets builders,
preprocess, shard build, cv2, laspy).

The members of one view of a sample (`member_layout`), each with the dtype and shape it decodes to:

===============  ============  =========================================  ==============================
member           encoding      decoded                                    from
===============  ============  =========================================  ==============================
``rgb``          JPEG bytes    uint8 (384, 1152, 3) RGB                   rgb[_perturbated], untouched
``semantic``     lz4 block     uint8 (384, 1152) class ids                semantics[_perturbated]
``depth``        lz4 block     uint8 (96, 288); metres = v/255*50         depth[_perturbated]
``lidar``        lz4 block     uint8 (1, 320, 384) BEV counts (<= 5)      lidar + P
``bev``          lz4 block     uint8 (320, 384) BEV semantic classes      hdmap[_p] + boxes + P
``radar``        raw           float16 (300, 5)                           radar[_perturbated]
``boxes``        raw           float32 (90, 9) CenterNet rows (zero-pad)  bboxes + P
``targets``      raw           float32 record (`TARGET_LAYOUT`) + `EXTRA_TARGETS`  metas + P
===============  ============  =========================================  ==============================

LZ4 members are raw blocks without a size prefix (the decoded size is fixed by the layout), which is what
DALI's GPU inflate operator takes. Per frame both sensor views are stored, suffix ``_n`` normal and ``_p``
perturbated (`VIEW_SUFFIX`), so the plan picks a view per sample and the reader fetches only its members.

The batch a loader yields (`FIELD_MEMBER`): a key per requested field, plus ``row`` (catalog row, int64) and
``view`` (0 normal / 1 perturbated, uint8); every backend yields the same dict for the same plan:

=================  ===============================  =======================================
key                dtype, shape per sample          note
=================  ===============================  =======================================
``rgb``            uint8 (3, H, W)                  CHW, RGB
``semantic``       uint8 (H, W)                     camera semantics (10 classes)
``depth``          uint8 (H/4, W/4)                 metres = v / 255 * 50 (`DEPTH_MAX_M`)
``lidar``          uint8 (1, 320, 384)              BEV counts; / `LIDAR_HIST_MAX` -> LEAD's float BEV
``bev_semantic``   uint8 (320, 384)                 13 classes
``radar``          float16 (300, 5)
``boxes``          float32 (90, 9)                  CenterNet rows (`BOX_COLUMNS`), ``num_boxes`` valid
``targets``        -> ``waypoints`` (8, 2), ``route`` (10, 2), ``target_point`` (2,), ... float32,
                   ``has_targets``: 0 for frames near a route end (fewer than 41 future positions), whose
                   ``waypoints`` and ``waypoint_yaws`` are NaN (``route`` too if it cannot be resampled; the
                   other fields are real): mask them out of losses; ``num_boxes``, ``scenario_type_id``,
                   ``perturbation_translation`` / ``_rotation`` (`EXTRA_TARGETS`)
=================  ===============================  =======================================
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from leadio.format.config import DatasetConfig

__all__ = [
    "BEV_SEMANTIC_CLASSES", "BOX_COLUMNS", "CAMERA_SEMANTIC_CLASSES", "DEFAULT_KEYS", "DEPTH_MAX_M", "EGO_EXTENT",
    "EXTRA_TARGETS", "FIELD_MEMBER", "HDMAP_CLASSES", "KEYS", "LIDAR_HIST_MAX", "LIDAR_USED_TIME_STEPS",
    "PIPELINE_VERSION", "SCENARIO_TYPES", "TARGET_FIELDS", "TARGET_LAYOUT", "TARGET_RECORD_BYTES", "VIEW_SUFFIX",
    "BoxClass", "BoxColumn", "Member", "member_layout", "member_name", "members_for_keys", "pack_targets",
    "pipeline_hash", "pipeline_params", "scenario_type", "scenario_type_id", "unpack_targets",
]  # fmt: skip

# ---- sensor and label constants ------------------------------------------------------------------------------
#: 8-bit depth spans 0..50 m: metres = v / 255 * DEPTH_MAX_M (LEAD's decode_depth_8bit).
DEPTH_MAX_M = 50.0
#: LEAD's lidar_hist_max_per_pixel: stored counts are capped at it; the float BEV is counts / LIDAR_HIST_MAX.
LIDAR_HIST_MAX = 5
#: Half length, half width (m) of the ego, a Lincoln MKZ as in CARLA's leaderboard.
EGO_EXTENT = (2.45, 1.05)
#: LEAD's training_used_lidar_steps: LiDAR points with `time` < 10 are kept (all LiDAR and radar-only sweeps).
LIDAR_USED_TIME_STEPS = 10
NUM_RADAR_SENSORS = 4
RADAR_POINTS_PER_SENSOR = 75
WAYPOINT_TICKS = tuple(range(5, 41, 5))  # 8 waypoints 0.25 s apart (20 Hz ticks)
ROUTE_OUTPUT_POINTS = 10
TARGET_SPEED_CLASSES = (0.0, 4.0, 8.0, 10.0, 13.88888888, 16.0, 17.77777777, 20.0)  # m/s, as LEAD
VIEW_SUFFIX = {"normal": "n", "perturbated": "p"}
#: Class ids of the camera semantics (LEAD's grouped TransFuser ids 0-9, docs/format.md §4.3): the ``semantic``
#: member and the semantic head. The build refuses a semantics PNG holding an id >= this.
CAMERA_SEMANTIC_CLASSES = 10
#: Class ids of the BEV semantic target (0-12, docs/format.md §4.5): the ``bev`` member and the BEV head.
BEV_SEMANTIC_CLASSES = 13
#: ChauffeurNet ids a raw hdmap PNG may hold (0-8: LEAD remaps them through a 9-entry table, §4.5); the build
#: refuses an hdmap holding an id >= this.
HDMAP_CLASSES = 9


class BoxColumn(IntEnum):
    """The 9 float32 columns of a stored box row (LEAD's CenterNet rows, docs/format.md §4.6)."""

    X = 0  # BEV raster column of the centre (px)
    Y = 1  # BEV raster row of the centre (px)
    EX = 2  # half extent along the box's x (px)
    EY = 3  # half extent along the box's y (px)
    YAW = 4  # rad
    SPEED = 5  # m/s
    BRAKE = 6  # 0/1
    CLASS = 7  # `BoxClass`
    RADAR = 8  # radar points inside the box (-1 unknown)


BOX_COLUMNS = tuple(c.name.lower() for c in BoxColumn)


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


# ---- scenario types ------------------------------------------------------------------------------------------
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


def scenario_type(meta: Mapping[str, Any]) -> str:
    """A frame's scenario type, LEAD's rule: the meta's ``current_active_scenario_type`` unless it is missing,
    None or "NA"; else ``previous_active_scenario_type`` under the same rule; else "NA"."""
    for key in ("current_active_scenario_type", "previous_active_scenario_type"):
        if meta.get(key) not in (None, "NA"):
            return meta[key]
    return "NA"


def scenario_type_id(meta: Mapping[str, Any]) -> int:
    """LEAD's ``scenario_type_id``: the index of `scenario_type` in `SCENARIO_TYPES`.

    Raises:
        ValueError: a type LEAD does not know (LEAD's loader would crash on it).
    """
    name = scenario_type(meta)
    if name not in SCENARIO_TYPES:
        raise ValueError(f"meta scenario type {name!r} is not one of LEAD's SCENARIO_TYPES (docs/format.md §2)")
    return SCENARIO_TYPES.index(name)


# ---- the planning-target record ------------------------------------------------------------------------------
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
#: Scalars appended to the planning record (float32): waypoints and route valid (0/1), kept box rows, LEAD's
#: scenario_type_id, and the meta's perturbation_translation (m) / _rotation (deg) for both views (LEAD's
#: batch carries the meta values even for the normal view).
EXTRA_TARGETS = (("has_targets", ()), ("num_boxes", ()), ("scenario_type_id", ()),
                 ("perturbation_translation", ()), ("perturbation_rotation", ()))  # fmt: skip
#: (name, shape) of every float32 field of the ``targets`` member, in storage order.
TARGET_FIELDS = [(name, shape) for name, _, shape in TARGET_LAYOUT] + list(EXTRA_TARGETS)


def pack_targets(targets: Mapping[str, Any]) -> bytes:
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


# ---- members and keys ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    """One per-view member of a sample: how it is stored in the tar and what it decodes to."""

    name: str
    ext: str
    encoding: str  # "jpeg" | "lz4" | "raw"
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


def member_layout(config: DatasetConfig) -> dict[str, Member]:
    """The members of one view of a sample, in storage order."""
    h, w = config.image_height, config.image_width
    target_len = sum(math.prod(shape) for _, shape in TARGET_FIELDS)
    members = [
        Member("rgb", "jpg", "jpeg", "uint8", (h, w, 3)),
        Member("semantic", "lz4", "lz4", "uint8", (h, w)),
        Member("depth", "lz4", "lz4", "uint8", (config.depth_height, config.depth_width)),
        Member("lidar", "lz4", "lz4", "uint8", (1, config.bev_height, config.bev_width)),
        Member("bev", "lz4", "lz4", "uint8", (config.bev_height, config.bev_width)),
        Member("radar", "f16", "raw", "float16", (NUM_RADAR_SENSORS * RADAR_POINTS_PER_SENSOR, 5)),
        Member("boxes", "f32", "raw", "float32", (config.max_num_bbs, len(BoxColumn))),
        Member("targets", "f32", "raw", "float32", (target_len,)),
    ]
    return {m.name: m for m in members}


def member_name(member: Member, view: str) -> str:
    """The tar member suffix (after ``<key>.``) of a member in a view, e.g. ``rgb_n.jpg``."""
    return f"{member.name}_{VIEW_SUFFIX[view]}.{member.ext}"


#: user-facing key -> member name in the shard layout
FIELD_MEMBER = {"rgb": "rgb", "semantic": "semantic", "depth": "depth", "lidar": "lidar",
                "bev_semantic": "bev", "radar": "radar", "boxes": "boxes", "targets": "targets"}
KEYS = tuple(FIELD_MEMBER)
DEFAULT_KEYS = KEYS


def members_for_keys(keys: Iterable[str], layout: dict[str, Member] | None = None,
                     config: DatasetConfig | None = None) -> dict[str, Member]:
    """The members that the requested ``keys`` need (``boxes`` also needs ``targets`` for the count).

    Raises:
        ValueError: an unknown key (lists the valid ones).
    """
    keys = list(keys)
    unknown = [k for k in keys if k not in FIELD_MEMBER]
    if unknown:
        raise ValueError(f"unknown keys {unknown}; valid keys: {list(KEYS)}")
    layout = layout if layout is not None else member_layout(config)
    names = [FIELD_MEMBER[k] for k in keys]
    if "boxes" in names and "targets" not in names:
        names.append("targets")
    return {n: layout[n] for n in layout if n in names}


# ---- the pipeline's identity ---------------------------------------------------------------------------------
#: Bump whenever the bytes a frame turns into change for the same input.
#: 2: short-future frames keep their non-waypoint targets; scenario_type_id and perturbation t, r stored.
PIPELINE_VERSION = 2


def pipeline_params(config: DatasetConfig) -> dict:
    """Everything that determines a sample's bytes; its hash names the shard set."""
    return {
        "pipeline_version": PIPELINE_VERSION,
        "dataset_config": config.to_dict(),
        "lidar_used_time_steps": LIDAR_USED_TIME_STEPS,
        "radar_points_per_sensor": RADAR_POINTS_PER_SENSOR,
        "target_layout": [(n, np.dtype(d).str, list(s)) for n, d, s in TARGET_LAYOUT] + [
            (n, "<f4", list(s)) for n, s in EXTRA_TARGETS],
        "members": {k: [m.ext, m.encoding, m.dtype, list(m.shape)] for k, m in member_layout(config).items()},
    }


def pipeline_hash(config: DatasetConfig) -> str:
    """12 hex digits of sha256 over `pipeline_params` (canonical JSON)."""
    raw = json.dumps(pipeline_params(config), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:12]
