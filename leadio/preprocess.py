"""One raw frame -> one training sample: the versioned preprocessing pipeline whose hash names a shard set.

Everything computable once is computed here; everything large stays compressed until decode. Per frame both
sensor views are stored (suffix ``_n`` normal, ``_p`` perturbated) so the epoch plan can pick a view per
sample and the reader fetches only that view's members. The members (`member_layout`), each with the dtype
and shape it decodes to:

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
``targets``      raw           float32 record (`leadio.targets.TARGET_LAYOUT`) + box count  metas + P
===============  ============  =========================================  ==============================

LZ4 members are raw blocks without a size prefix (the decoded size is fixed by the layout), which is what
DALI's GPU inflate operator takes. The ``targets`` record ends with `EXTRA_TARGETS`: ``has_targets``, the box
count, and the per-sample scalars of LEAD's batch (``scenario_type_id``, the meta's perturbation t and r).
Frames too close to the route end (fewer than 41 future positions) have NaN waypoints (and route, when it
cannot be resampled) with ``has_targets = 0``; their other targets are real (LEAD's pre-training batch has
them); the post-training buckets never draw such frames.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import lz4.block
import numpy as np

from leadio.format import DatasetConfig, frame_file, read_frame
from leadio.format.errors import FrameReadError
from leadio.targets import (
    LIDAR_USED_TIME_STEPS,
    TARGET_LAYOUT,
    bev_semantic,
    box_rows,
    lidar_bev_histogram,
    pack_targets,
    planning_targets,
    radar_input,
    scenario_type_id,
)

__all__ = [
    "EXTRA_TARGETS",
    "PIPELINE_VERSION",
    "VIEW_SUFFIX",
    "Member",
    "decode_member",
    "member_layout",
    "member_name",
    "pipeline_hash",
    "pipeline_params",
    "preprocess_frame",
    "targets_record",
]

#: Bump whenever the bytes a frame turns into change for the same input.
#: 2: short-future frames keep their non-waypoint targets; scenario_type_id and perturbation t, r stored.
PIPELINE_VERSION = 2
VIEW_SUFFIX = {"normal": "n", "perturbated": "p"}
RADAR_POINTS_PER_SENSOR = 75
#: Scalars appended to the planning record (float32): waypoints and route valid (0/1), kept box rows, LEAD's
#: scenario_type_id, and the meta's perturbation_translation (m) / _rotation (deg) for both views (LEAD's
#: batch carries the meta values even for the normal view).
EXTRA_TARGETS = (("has_targets", ()), ("num_boxes", ()), ("scenario_type_id", ()),
                 ("perturbation_translation", ()), ("perturbation_rotation", ()))  # fmt: skip


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
    target_len = sum(int(np.prod(s)) for _, _, s in TARGET_LAYOUT) + len(EXTRA_TARGETS)
    members = [
        Member("rgb", "jpg", "jpeg", "uint8", (h, w, 3)),
        Member("semantic", "lz4", "lz4", "uint8", (h, w)),
        Member("depth", "lz4", "lz4", "uint8", (config.depth_height, config.depth_width)),
        Member("lidar", "lz4", "lz4", "uint8", (1, config.bev_height, config.bev_width)),
        Member("bev", "lz4", "lz4", "uint8", (config.bev_height, config.bev_width)),
        Member("radar", "f16", "raw", "float16", (4 * RADAR_POINTS_PER_SENSOR, 5)),
        Member("boxes", "f32", "raw", "float32", (config.max_num_bbs, 9)),
        Member("targets", "f32", "raw", "float32", (target_len,)),
    ]
    return {m.name: m for m in members}


def member_name(member: Member, view: str) -> str:
    """The tar member suffix (after ``<key>.``) of a member in a view, e.g. ``rgb_n.jpg``."""
    return f"{member.name}_{VIEW_SUFFIX[view]}.{member.ext}"


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


def _lz4(array: np.ndarray) -> bytes:
    return lz4.block.compress(np.ascontiguousarray(array).tobytes(), store_size=False)


def targets_record(meta: dict, perturbated: bool, num_boxes: int) -> bytes:
    """The ``targets`` member: `TARGET_LAYOUT` fields then `EXTRA_TARGETS`, little-endian float32.

    Raises:
        ValueError: a target that every frame has cannot be computed (see `planning_targets`), or an unknown
            scenario type.
    """
    targets = planning_targets(meta, perturbated, require_future=False)
    has = float(np.isfinite(targets["waypoints"]).all() and np.isfinite(targets["route"]).all())
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
        except (ValueError, KeyError, TypeError) as e:
            raise FrameReadError(route_dir, frame, Path(route_dir) / "metas" / f"{frame:04d}.pkl",
                                 f"cannot build the {view} sample ({type(e).__name__}: {e})") from e
        for name, member in layout.items():
            out[member_name(member, view)] = arrays[name]
    return out


def decode_member(member: Member, data: bytes | memoryview) -> np.ndarray:
    """Decode one stored member to its declared dtype and shape (CPU; the reference for every backend).

    Raises:
        ValueError: the bytes do not decode to the declared size.
    """
    if member.encoding == "jpeg":
        import simplejpeg

        height, width, _, _ = simplejpeg.decode_jpeg_header(bytes(data))  # refuse a hostile size before allocating
        if (height, width) != member.shape[:2]:
            raise ValueError(f"{member.name}: JPEG header declares {width}x{height}, expected "
                             f"{member.shape[1]}x{member.shape[0]}")
        array = simplejpeg.decode_jpeg(bytes(data), colorspace="RGB")
        if array.shape != member.shape:
            raise ValueError(f"{member.name}: JPEG decodes to {array.shape}, expected {member.shape}")
        return array
    if member.encoding == "lz4":
        raw = lz4.block.decompress(bytes(data), uncompressed_size=member.nbytes)
    else:
        raw = data
    if len(raw) != member.nbytes:
        raise ValueError(f"{member.name}: {len(raw)} bytes, expected {member.nbytes} for {member.dtype}{member.shape}")
    return np.frombuffer(raw, dtype=np.dtype(member.dtype).newbyteorder("<")).reshape(member.shape)
