"""The values of a meta (``metas/NNNN.pkl``), checked against the types docs/format.md §2 gives them.

The catalog and the training targets read these keys; a value of the wrong type or a non-finite number would
otherwise pass silently (``bool("False")`` is True, a NaN speed becomes a NaN target, a NaN ``pos_global``
makes a whole route's length NaN) or fail later with an error that names no file. `meta_problems` lists what
is wrong with one meta, key by key; `leadio.format.frame.read_meta` raises them as a `FrameReadError` naming
route, frame, file and key, so every reader of metas (catalog scan, shard build, report, inspect) refuses the
same frames the same way.

Only what LEAD's loader and leadio read is checked: the pose and speeds, the route and future arrays, the
target points and commands, the perturbation, town and weather, the scenario types and the boolean flags the
catalog copies. The other required keys may hold any value (docs/format.md §2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["FLAG_META_KEYS", "meta_problems"]

#: Boolean flags of a meta (docs/format.md §2): the catalog's ``FLAG_KEYS`` (copied into its columns) and the two
#: traffic-light flags the BEV target reads.
FLAG_META_KEYS = (
    "is_intersection", "changed_route", "vehicle_hazard", "walker_hazard", "light_hazard", "stop_sign_hazard",
    "stop_sign_close", "does_emergency_brake_for_pedestrians", "rear_danger_8", "rear_danger_16", "brake_cutin",
    "emergency_brake_for_special_vehicle", "construction_obstacle_two_ways_stuck", "accident_two_ways_stuck",
    "parked_obstacle_two_ways_stuck", "vehicle_opens_door_two_ways_stuck", "slower_bad_visibility",
    "slower_clutterness", "slower_occluded_junction", "over_head_traffic_light", "europe_traffic_light",
)  # fmt: skip


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_real(value: Any) -> bool:
    """A Python or numpy int or float (a 0-d numeric array too), not a bool, not a string."""
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and value.dtype.kind in "iuf"
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _number(value: Any) -> str | None:
    if not _is_real(value):
        return f"is {_shown(value)} ({type(value).__name__}); expected a number"
    if not np.isfinite(float(value)):
        return f"is {float(value)}; expected a finite number"
    return None


def _bool(value: Any) -> str | None:
    if isinstance(value, (bool, np.bool_)) or (_is_real(value) and float(value) in (0.0, 1.0)):
        return None
    return f"is {_shown(value)} ({type(value).__name__}); expected a bool (True/False)"


def _flag(value: Any) -> str | None:
    return None if value is None else _bool(value)


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else f"is {_shown(value)} ({type(value).__name__}); expected a string"


def _optional_string(value: Any) -> str | None:
    return None if value is None else _string(value)


def _array(value: Any, columns: tuple[int, ...] | None, what: str, none_ok: bool = False) -> str | None:
    """A numeric array of shape (N,) (``columns`` None) or (N, c) with c in ``columns``, every value finite."""
    if value is None and none_ok:
        return None
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as e:
        return f"is not an array ({type(e).__name__}: {e}); expected {what}"
    if array.dtype.kind not in "iuf" or isinstance(value, (str, bytes)):
        return f"is {_shown(value)} (dtype {array.dtype}); expected {what}"
    ok = array.ndim == 1 if columns is None else (array.ndim == 2 and array.shape[1] in columns)
    if not ok:
        return f"has shape {array.shape}; expected {what}"
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        where = f"entry {int(bad[0])}" if columns is None else f"row {int(bad[0])}"
        return f"holds {array[tuple(bad)]} at {where} ({int((~finite).sum())} non-finite values); expected {what}"
    return None


def _point(value: Any) -> str | None:
    return _array(value, None, "[x, y, z] finite floats (m)") or (
        None if 2 <= len(value) <= 3 else f"has {len(value)} coordinates; expected [x, y, z] (m)")


def _points(value: Any) -> str | None:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return f"is {_shown(value)} ({type(value).__name__}); expected a list of [x, y, z] world points (m)"
    for i, point in enumerate(value):
        problem = _point(point)
        if problem:
            return f"point {i} {problem}"
    return None


def _commands(value: Any) -> str | None:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return f"is {_shown(value)} ({type(value).__name__}); expected a list of RoadOption ints"
    for i, command in enumerate(value):
        if not (_is_real(command) and float(command).is_integer()):
            return f"entry {i} is {_shown(command)}; expected a RoadOption int (-1, 1..6)"
    return None


def _dict(value: Any) -> str | None:
    return None if isinstance(value, dict) else f"is {_shown(value)} ({type(value).__name__}); expected a dict"


#: key -> check (None when the value is fine, else what is wrong with it); keys marked optional may be missing.
_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "pos_global": _point,
    "theta": _number,
    "speed": _number,
    "target_speed": _number,
    "brake": _bool,
    "route": lambda v: _array(v, (2,), "a float array (N, 2) of ego-frame route points (m)"),
    "future_positions": lambda v: _array(v, (2, 3), "None or a float array (N, 3) of future ego positions (m)",
                                         none_ok=True),
    "future_yaws": lambda v: _array(v, None, "None or a float array (N,) of future yaws (rad)", none_ok=True),
    "perturbation_translation": _number,
    "perturbation_rotation": _number,
    "dataset_information": _dict,
    "town": _string,
    "weather_setting": _string,
}
_OPTIONAL_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "next_target_points_3.25": _points,
    "next_commands_3.25": _commands,
    "current_active_scenario_type": _optional_string,
    "previous_active_scenario_type": _optional_string,
    **dict.fromkeys(FLAG_META_KEYS, _flag),
}


def meta_problems(meta: dict) -> list[str]:
    """What is wrong with the values of one meta, one ``"key 'k' <problem>"`` line per bad key (empty: none).

    Missing required keys are `leadio.format.frame.read_meta`'s to report; a missing key here is skipped.
    """
    problems = []
    for checks in (_CHECKS, _OPTIONAL_CHECKS):
        for key, check in checks.items():
            if key in meta:
                problem = check(meta[key])
                if problem:
                    problems.append(f"key {key!r} {problem}")
    return problems
