"""The batch a loader yields: which keys exist, what members they come from, their dtypes and shapes.

Every backend yields the same dict for the same plan (tested): a key per requested field, plus ``row``
(catalog row, int64), ``view`` (0 normal / 1 perturbated, uint8). Planning targets are unpacked from the
``targets`` record into named float32 tensors.

=================  ===============================  =======================================
key                dtype, shape per sample          note
=================  ===============================  =======================================
``rgb``            uint8 (3, H, W)                  CHW, RGB
``semantic``       uint8 (H, W)                     camera semantics (10 classes)
``depth``          uint8 (H/4, W/4)                 metres = v / 255 * 50
``lidar``          uint8 (1, 320, 384)              BEV counts; /5 -> LEAD's float BEV
``bev_semantic``   uint8 (320, 384)                 13 classes
``radar``          float16 (300, 5)
``boxes``          float32 (90, 9)                  CenterNet rows, ``num_boxes`` valid
``targets``        -> ``waypoints`` (8, 2), ``route`` (10, 2), ``target_point`` (2,), ... float32,
                   ``has_targets``: 0 for frames near a route end (fewer than 41 future positions), whose
                   ``waypoints`` and ``waypoint_yaws`` are NaN (``route`` too if it cannot be resampled; the
                   other fields are real, docs/format.md §4.8): mask them out of losses; ``num_boxes``,
                   ``scenario_type_id``, ``perturbation_translation`` / ``_rotation`` (`EXTRA_TARGETS`)
=================  ===============================  =======================================
"""

from __future__ import annotations

from leadio.preprocess import EXTRA_TARGETS, Member, member_layout
from leadio.targets import TARGET_LAYOUT

__all__ = ["DEFAULT_KEYS", "FIELD_MEMBER", "KEYS", "TARGET_FIELDS", "members_for_keys"]

#: user-facing key -> member name in the shard layout
FIELD_MEMBER = {"rgb": "rgb", "semantic": "semantic", "depth": "depth", "lidar": "lidar",
                "bev_semantic": "bev", "radar": "radar", "boxes": "boxes", "targets": "targets"}
KEYS = tuple(FIELD_MEMBER)
DEFAULT_KEYS = KEYS
TARGET_FIELDS = [(name, shape) for name, _, shape in TARGET_LAYOUT] + list(EXTRA_TARGETS)


def members_for_keys(keys, layout: dict[str, Member] | None = None, config=None) -> dict[str, Member]:
    """The members that the requested ``keys`` need (``boxes`` also needs ``targets`` for the count).

    Raises:
        ValueError: an unknown key (lists the valid ones).
    """
    unknown = [k for k in keys if k not in FIELD_MEMBER]
    if unknown:
        raise ValueError(f"unknown keys {unknown}; valid keys: {list(KEYS)}")
    layout = layout if layout is not None else member_layout(config)
    names = [FIELD_MEMBER[k] for k in keys]
    if "boxes" in names and "targets" not in names:
        names.append("targets")
    return {n: layout[n] for n in layout if n in names}
