"""The fixed 292-byte float32 record of the planning targets (`TARGET_LAYOUT`): `pack_targets` and
`unpack_targets`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from leadio.targets.common import ROUTE_OUTPUT_POINTS, TARGET_SPEED_CLASSES, WAYPOINT_TICKS

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
