"""One raw frame -> one training sample: the preprocessing pipeline whose hash names a shard set.

Everything computable once is computed here; everything large stays compressed until decode. Per frame both
sensor views are stored so the epoch plan can pick a view per sample and the reader fetches only that view's
members. What the members are (names, encodings, dtypes, shapes) and the pipeline's identity
(`PIPELINE_VERSION`, `pipeline_hash`) live in `leadio.schema`, which the reading side imports too; this module
is the writer only.

Frames too close to the route end (fewer than 41 future positions) have NaN waypoints (and route, when it
cannot be resampled) with ``has_targets = 0``; their other targets are real (LEAD's pre-training batch has
them); the post-training buckets never draw such frames.
"""

from __future__ import annotations

from pathlib import Path

import lz4.block
import numpy as np

from leadio.format.config import DatasetConfig
from leadio.format.errors import FrameReadError
from leadio.format.frame import check_rgb_jpeg, frame_file, read_frame
from leadio.schema import (
    RADAR_POINTS_PER_SENSOR,
    member_layout,
    member_name,
    pack_targets,
    scenario_type_id,
)
from leadio.targets.bev import bev_semantic
from leadio.targets.boxes import box_rows
from leadio.targets.lidar import lidar_bev_histogram, radar_input
from leadio.targets.planning import has_planning_targets, planning_targets

__all__ = ["preprocess_frame", "targets_record"]


def _lz4(array: np.ndarray) -> bytes:
    return lz4.block.compress(np.ascontiguousarray(array).tobytes(), store_size=False)


def targets_record(meta: dict, perturbated: bool, num_boxes: int) -> bytes:
    """The ``targets`` member: `TARGET_LAYOUT` fields then `EXTRA_TARGETS`, little-endian float32.

    Raises:
        ValueError: a target that every frame has cannot be computed (see `planning_targets`), or an unknown
            scenario type.
    """
    targets = planning_targets(meta, perturbated, require_future=False)
    has = float(has_planning_targets(targets))
    extra = [has, num_boxes, scenario_type_id(meta)] + [
        float(meta[k]) if meta.get(k) is not None else np.nan
        for k in ("perturbation_translation", "perturbation_rotation")]  # fmt: skip
    return pack_targets(targets) + np.array(extra, "<f4").tobytes()


def preprocess_frame(route_dir: str | Path, frame: int, config: DatasetConfig) -> dict[str, bytes]:
    """Read one raw frame (both views) and turn it into the sample's tar members.

    Returns:
        member suffix (e.g. ``rgb_n.jpg``) -> bytes, both views, in `member_layout` order per view.

    Raises:
        FrameReadError: a file is missing or malformed, or a label cannot be computed (names the file).
    """
    layout = member_layout(config)
    shared = read_frame(route_dir, frame, config, modalities=("lidar", "boxes", "meta"))
    meta, boxes = shared["meta"], shared["boxes"]
    out: dict[str, bytes] = {}
    for view in ("normal", "perturbated"):
        p = view == "perturbated"
        raw = read_frame(route_dir, frame, config, view=view,
                         modalities=("rgb_jpeg", "semantics", "depth", "hdmap", "radar"))
        check_rgb_jpeg(route_dir, frame, raw["rgb_jpeg"], view)  # stored as is, so it must decode in training
        if raw["depth"].dtype != np.uint8:  # the member holds LEAD's 8-bit encoding (v/255*50 m) only
            raise FrameReadError(route_dir, frame, frame_file(route_dir, "depth", frame, view),
                                 f"depth PNG is {raw['depth'].dtype} (LEAD's optional 16-bit depth, "
                                 "save_depth_bits=16); leadio stores 8-bit depth only: record the route with "
                                 "8-bit depth")
        try:
            rows, count = box_rows(boxes, meta, config, p)
            arrays = {
                "rgb": raw["rgb_jpeg"],
                "semantic": _lz4(raw["semantics"]),
                "depth": _lz4(raw["depth"]),
                "lidar": _lz4(lidar_bev_histogram(shared["lidar"], shared["lidar_time"], meta, config, p)),
                "bev": _lz4(bev_semantic(raw["hdmap"], boxes, meta, config, p)),
                "radar": radar_input(raw["radar"], config, RADAR_POINTS_PER_SENSOR).astype("<f2").tobytes(),
                "boxes": rows.astype("<f4").tobytes(),
                "targets": targets_record(meta, p, count),
            }
        except (ValueError, KeyError, TypeError, IndexError, ArithmeticError) as e:
            raise FrameReadError(route_dir, frame, Path(route_dir) / "metas" / f"{frame:04d}.pkl",
                                 f"cannot build the {view} sample ({type(e).__name__}: {e})") from e
        for name, member in layout.items():
            out[member_name(member, view)] = arrays[name]
    return out
