"""The reference ways of loading a LEAD sample that the throughput benchmark puts beside leadio.

Each loader here yields, per sample, the dict a leadio batch holds for that sample (`leadio.schema`):
``rgb`` uint8 (3, 384, 1152), ``semantic``, ``depth`` uint8 (96, 288), ``lidar`` uint8 counts (1, 320, 384),
``bev_semantic``, ``radar`` float16 (300, 5), ``boxes`` float32 (90, 9), the planning targets split into named
float32 arrays, ``row`` (catalog row of the shard set) and ``view`` (always 0: the benchmark reads the normal
view). A torch DataLoader with the default collate turns them into the same batch tensors leadio yields.

- `ReferenceRawDataset`: LEAD's loader without caches. Per sample it reads the route's files through
  `leadio.format.read_frame` (PNG decodes, LAZ decompression, lzma-unpickled metas and boxes), decodes the
  JPEG with OpenCV as LEAD does, and builds every target with `leadio.targets` (LiDAR histogram, BEV semantic
  with the occupancy canvas, box rows, planning targets, radar input).
- `build_reference_cache` + `ReferenceCacheDataset`: LEAD's persistent cache (docs/format.md §6). The build
  writes one lzma pickle per sample holding what LEAD's ``CompressedSensorData`` holds, as a plain dict
  (builtins and bytes, so `leadio.format.load_lzma_pickle`'s restricted unpickler reads it): the original
  JPEG, ``lidar_bev`` as a uint16 PNG of value·65535 (value = counts / 5), the semantic and depth PNGs, the
  remapped 256² hdmap PNG (uncropped), the 1024² occupancy PNG (uncropped), the box rows, the box-waypoint
  arrays, the four radars as npz blobs with key ``arr``, and the planning-target record. The timed loader
  unpickles, decodes every PNG and the JPEG with OpenCV, and rebuilds the BEV and the radar input as LEAD does.
- `plain_webdataset`: how a user of plain ``webdataset`` reads our shards: ``WebDataset(urls)`` streams whole
  tars, ``select`` keeps the chosen keys, a map decodes the normal view's members (PIL for the JPEG, lz4 for
  the rasters, ``np.frombuffer`` for the raw ones).

Where these rows differ from LEAD, it is in LEAD's favour: depth stays uint8 at stored resolution (LEAD
upsamples it to float32 metres), no colour augmentation, no CenterNet targets, no metas re-read next to the
cache (LEAD's cache holds no planning targets; here the cache stores them), and the cache's occupancy canvas
holds the boxes inside the BEV crop only (rebuilt exactly from the final BEV: the cropped result is the same,
and a 1024² PNG decodes in about the same time whatever few boxes lie outside). Only the normal view is
cached (LEAD writes both on first load).
"""

from __future__ import annotations

import io
import lzma
import multiprocessing as mp
import os
import pickle
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import lz4.block
import numpy as np
import webdataset as wds
from PIL import Image
from torch.utils.data import Dataset

from leadio.decode.cpu import split_targets
from leadio.format.config import DatasetConfig
from leadio.format.frame import frame_file, read_frame
from leadio.format.pickles import load_lzma_pickle
from leadio.preprocess import targets_record as preprocess_targets_record
from leadio.schema import FIELD_MEMBER, Member, member_layout, member_name
from leadio.shard.shardset import ShardSet
from leadio.targets import (
    LIDAR_USED_TIME_STEPS,
    bev_semantic,
    box_rows,
    lidar_bev_histogram,
    radar_input,
)

__all__ = [
    "CACHE_FORMAT",
    "CacheBuildReport",
    "ReferenceCacheDataset",
    "ReferenceRawDataset",
    "SampleRef",
    "build_reference_cache",
    "cache_path",
    "plain_webdataset",
    "raw_file_paths",
    "sample_fields",
    "sample_refs",
    "targets_record",
]

CACHE_FORMAT = "leadio-bench-lead-cache-v1"
#: what LEAD's raw loader reads per sample: (folder, view-dependent)
RAW_FILES = (("rgb", True), ("semantics", True), ("depth", True), ("hdmap", True), ("radar", True),
             ("lidar", False), ("bboxes", False), ("metas", False))
_RAW_MODALITIES = ("rgb_jpeg", "semantics", "depth", "hdmap", "lidar", "radar", "boxes", "meta")
_HDMAP_LUT = np.zeros(256, np.uint8)
_HDMAP_LUT[:9] = (0, 1, 0, 2, 2, 3, 0, 0, 0)  # docs/format.md §4.5: ChauffeurNet id -> road, lane markers, stop signs
_OCC_OFFSET = 3  # bev = occupancy + 3 where a box is drawn (§4.5)
_OCC_SIZE_M = 256.0  # the occupancy canvas spans +-128 m
_BOX_WAYPOINTS = 8  # LEAD caches bboxes_waypoints (90, 8, 2) and bboxes_num_waypoints (90,)
_RADAR_DETECTIONS = 20


@dataclass(frozen=True)
class SampleRef:
    """One chosen sample: its catalog row in the shard set, its route (``data/<Scenario>/<Route>``), frame, key."""

    row: int
    route: str
    frame: int
    key: str


def sample_refs(shard_set: ShardSet, rows: Sequence[int]) -> list[SampleRef]:
    """The `SampleRef` of each catalog row, in the given order."""
    cat = shard_set.catalog
    return [SampleRef(int(r), str(cat["route"][r]), int(cat["frame"][r]), str(cat["sample_key"][r])) for r in rows]


# ----------------------------------------------------------------------------------------------- common
def _radar_points_per_sensor(config: DatasetConfig) -> int:
    return member_layout(config)["radar"].shape[0] // 4


def targets_record(meta: dict, num_boxes: int) -> np.ndarray:
    """The target record leadio stores for the normal view (`leadio.preprocess.targets_record`), as float32."""
    return np.frombuffer(preprocess_targets_record(meta, False, num_boxes), "<f4").astype(np.float32)


def sample_fields(arrays: dict[str, np.ndarray], row: int, view: int = 0) -> dict[str, np.ndarray]:
    """One sample's member arrays (shard-layout names: ``rgb`` as CHW, ``bev``, ``targets`` record, ...) ->
    the per-sample dict of a leadio batch (``bev_semantic``, the targets split into named arrays, row, view)."""
    out: dict[str, np.ndarray] = {"row": np.int64(row), "view": np.uint8(view)}
    for key, member in FIELD_MEMBER.items():
        if member == "targets":
            out.update({k: v[0] for k, v in split_targets(arrays["targets"][None]).items()})
        else:
            out[key] = arrays[member]
    return out


def _decode_jpeg_cv2(data: bytes) -> np.ndarray:
    """JPEG -> uint8 (3, H, W) RGB the way LEAD does it (OpenCV imdecode to BGR, cvtColor, transpose)."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("JPEG does not decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)


def _decode_png(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError("PNG does not decode")
    return image


def _encode_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"cannot PNG-encode an array of {image.dtype}{image.shape}")
    return buf.tobytes()


# ----------------------------------------------------------------------------------------------- raw
def raw_file_paths(root: Path, sample: SampleRef) -> list[Path]:
    """The files LEAD's raw loader reads for the normal view of one sample."""
    route_dir = Path(root) / sample.route
    return [frame_file(route_dir, base, sample.frame, "normal") for base, _ in RAW_FILES]


def _build_raw(root: Path, sample: SampleRef, config: DatasetConfig) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and build one sample from the route files: (the raw read, the member arrays)."""
    route_dir = Path(root) / sample.route
    raw = read_frame(route_dir, sample.frame, config, view="normal", modalities=_RAW_MODALITIES)
    meta, boxes = raw["meta"], raw["boxes"]
    rows, count = box_rows(boxes, meta, config, False)
    arrays = {
        "rgb": _decode_jpeg_cv2(raw["rgb_jpeg"]),
        "semantic": raw["semantics"],
        "depth": raw["depth"],
        "lidar": lidar_bev_histogram(raw["lidar"], raw["lidar_time"], meta, config, False),
        "bev": bev_semantic(raw["hdmap"], boxes, meta, config, False),
        "radar": radar_input(raw["radar"], config, _radar_points_per_sensor(config)),
        "boxes": rows,
        "targets": targets_record(meta, count),
    }
    return raw, arrays


class ReferenceRawDataset(Dataset):
    """LEAD's loader without caches: route files -> decoded, fully built sample (see the module docstring).

    Args:
        root: dataset root.
        samples: the samples, in order.
        config: the root's dataset config.
    """

    def __init__(self, root: str | Path, samples: Sequence[SampleRef], config: DatasetConfig):
        self.root, self.samples, self.config = Path(root), list(samples), config

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        sample = self.samples[i]
        _, arrays = _build_raw(self.root, sample, self.config)
        return sample_fields(arrays, sample.row)

    def storage_bytes(self) -> int:
        """Bytes of the route files one pass reads."""
        return sum(p.stat().st_size for s in self.samples for p in raw_file_paths(self.root, s))


# ----------------------------------------------------------------------------------------------- cache
def cache_path(cache_dir: str | Path, sample: SampleRef, config: DatasetConfig) -> Path:
    """LEAD's cache path layout (§6) under ``cache_dir``: <Scenario>/<Route>/<W>/<H>/<BEV range>/<flags>/
    <LiDAR steps>/normal/NNNN.pkl."""
    parts = [config.image_width, config.image_height] + [
        f"{v:g}" for v in (config.lidar_min_x, config.lidar_max_x, config.lidar_min_y, config.lidar_max_y)]
    parts += ["True", "True", "True", "True", "False", LIDAR_USED_TIME_STEPS, "normal"]
    return Path(cache_dir, sample.route.removeprefix("data/"), *map(str, parts), f"{sample.frame:04d}.pkl")


def _occupancy_canvas(bev: np.ndarray, config: DatasetConfig) -> np.ndarray:
    """The uncropped occupancy canvas (uint8, 1024² at 4 px/m) whose crop yields ``bev``'s box layer."""
    ppm = config.pixels_per_meter
    size = round(_OCC_SIZE_M * ppm)
    rows, cols = _crop(size, ppm, config)
    canvas = np.zeros((size, size), np.uint8)
    canvas[rows, cols] = np.where(bev > _OCC_OFFSET, bev - _OCC_OFFSET, 0)
    return canvas


def _crop(size: int, ppm: float, config: DatasetConfig) -> tuple[slice, slice]:
    """Rows (y) and columns (x) of the BEV range in a square raster of ``size`` px with the ego at the centre."""
    y0, y1 = (int(size / 2 + v * ppm) for v in (config.lidar_min_y, config.lidar_max_y))
    x0, x1 = (int(size / 2 + v * ppm) for v in (config.lidar_min_x, config.lidar_max_x))
    return slice(y0, y1), slice(x0, x1)


def _merge_bev(hdmap_remapped: np.ndarray, occupancy: np.ndarray, config: DatasetConfig) -> np.ndarray:
    """LEAD's BEV from its cache: crop and 2x2-repeat the remapped hdmap, crop the occupancy, merge (§4.5)."""
    zoom = round(config.pixels_per_meter / config.hdmap_pixels_per_meter)
    bev = hdmap_remapped[_crop(len(hdmap_remapped), config.hdmap_pixels_per_meter, config)]
    bev = bev.repeat(zoom, 0).repeat(zoom, 1)
    occ = occupancy[_crop(len(occupancy), config.pixels_per_meter, config)]
    return np.where(occ != 0, occ + _OCC_OFFSET, bev).astype(np.uint8)


def _npz_arr(points: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, arr=points)
    return buf.getvalue()


def _cache_entry(root: Path, sample: SampleRef, config: DatasetConfig) -> dict:
    raw, arrays = _build_raw(root, sample, config)
    cap = config.lidar_hist_max_per_pixel
    nbb = config.max_num_bbs
    return {
        "format": CACHE_FORMAT,
        "image": raw["rgb_jpeg"],
        # LEAD: uint16 PNG of the float BEV (counts / cap in [0, 1]) times 65535; exact for integer counts
        "lidar_bev": _encode_png((arrays["lidar"][0].astype(np.uint32) * (65535 // cap)).astype(np.uint16)),
        "semantic": _encode_png(raw["semantics"]),
        "bev_semantic": _encode_png(_HDMAP_LUT[raw["hdmap"]]),
        "depth": _encode_png(raw["depth"]),
        "bev_occupancy": _encode_png(_occupancy_canvas(arrays["bev"], config)),
        "bboxes": arrays["boxes"].astype("<f4").tobytes(),
        "bboxes_waypoints": np.zeros((nbb, _BOX_WAYPOINTS, 2), "<f4").tobytes(),
        "bboxes_num_waypoints": np.zeros(nbb, "<i4").tobytes(),
        "radars": [_npz_arr(raw["radar"][f"radar{i + 1}"]) for i in range(4)],
        "radar_detections": np.zeros((_RADAR_DETECTIONS, 4), "<f4").tobytes(),
        "bev_3rd_person_image": None,
        "targets": arrays["targets"].astype("<f4").tobytes(),
    }


def _write_cache_entry(args: tuple[str, SampleRef, DatasetConfig, str]) -> int:
    root, sample, config, path = args
    data = lzma.compress(pickle.dumps(_cache_entry(Path(root), sample, config), protocol=pickle.HIGHEST_PROTOCOL))
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, final)
    return len(data)


@dataclass
class CacheBuildReport:
    """What `build_reference_cache` did."""

    built: int
    reused: int
    bytes: int
    seconds: float


def build_reference_cache(root: str | Path, samples: Sequence[SampleRef], config: DatasetConfig,
                          cache_dir: str | Path, workers: int = 1) -> CacheBuildReport:
    """Write the LEAD-style cache file of every sample that lacks one (not timed by the benchmark).

    The files are built in fork-server processes, never in the caller: reading a LAZ file starts lazrs' thread
    pool, and DataLoader workers forked from a process holding it hang on their first LAZ read.

    Args:
        root: dataset root (the route files are read from here).
        samples: the samples to cache.
        config: the root's dataset config.
        cache_dir: where the cache tree goes (LEAD's layout below it, see `cache_path`).
        workers: processes.
    """
    t0 = time.perf_counter()
    todo = [s for s in samples if not cache_path(cache_dir, s, config).exists()]
    args = [(str(root), s, config, str(cache_path(cache_dir, s, config))) for s in todo]
    if args:  # never in this process: LAZ decoding starts lazrs' thread pool, and a later fork would hang on it
        with ProcessPoolExecutor(max(1, workers), mp_context=mp.get_context("forkserver")) as pool:
            list(pool.map(_write_cache_entry, args, chunksize=4))
    total = sum(cache_path(cache_dir, s, config).stat().st_size for s in samples)
    return CacheBuildReport(len(todo), len(samples) - len(todo), total, time.perf_counter() - t0)


class ReferenceCacheDataset(Dataset):
    """LEAD's loader over its persistent cache: lzma pickle -> decoded PNGs and JPEG -> the sample's tensors.

    Args:
        samples: the samples, in order (their cache files must exist: `build_reference_cache`).
        config: the root's dataset config.
        cache_dir: the cache tree.
    """

    def __init__(self, samples: Sequence[SampleRef], config: DatasetConfig, cache_dir: str | Path):
        self.samples, self.config, self.cache_dir = list(samples), config, Path(cache_dir)
        self.radar_points = _radar_points_per_sensor(config)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        sample = self.samples[i]
        path = cache_path(self.cache_dir, sample, self.config)
        entry = load_lzma_pickle(path)
        if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT:
            raise ValueError(f"{path} is not a {CACHE_FORMAT} cache entry; delete it and rebuild the reference cache")
        cfg = self.config
        step = 65535 // cfg.lidar_hist_max_per_pixel
        lidar16 = _decode_png(entry["lidar_bev"])
        radar = {f"radar{k + 1}": np.load(io.BytesIO(blob), allow_pickle=False)["arr"]
                 for k, blob in enumerate(entry["radars"])}
        arrays = {
            "rgb": _decode_jpeg_cv2(entry["image"]),
            "semantic": _decode_png(entry["semantic"]),
            "depth": _decode_png(entry["depth"]),
            "lidar": ((lidar16.astype(np.uint32) + step // 2) // step).astype(np.uint8)[None],
            "bev": _merge_bev(_decode_png(entry["bev_semantic"]), _decode_png(entry["bev_occupancy"]), cfg),
            "radar": radar_input(radar, cfg, self.radar_points),
            "boxes": np.frombuffer(entry["bboxes"], "<f4").reshape(cfg.max_num_bbs, 9).copy(),
            "targets": np.frombuffer(entry["targets"], "<f4").copy(),
        }
        return sample_fields(arrays, sample.row)

    def storage_bytes(self) -> int:
        """Bytes of the cache files one pass reads."""
        return sum(cache_path(self.cache_dir, s, self.config).stat().st_size for s in self.samples)


# ----------------------------------------------------------------------------------------------- webdataset
class _KeyIn:
    """``select`` predicate: the sample's key is one of the chosen (a class, not a lambda: picklable)."""

    def __init__(self, keys: set[str]):
        self.keys = keys

    def __call__(self, sample: dict) -> bool:
        return sample["__key__"] in self.keys


class _DecodeNormalView:
    """Decode the normal view's members of a webdataset sample: PIL for the JPEG, lz4 for rasters, raw views."""

    def __init__(self, layout: dict[str, Member], row_of_key: dict[str, int]):
        self.layout, self.row_of_key = layout, row_of_key

    def __call__(self, sample: dict) -> dict[str, np.ndarray]:
        arrays = {}
        for name, member in self.layout.items():
            data = sample[member_name(member, "normal")]
            if member.encoding == "jpeg":
                with Image.open(io.BytesIO(data)) as image:
                    arrays[name] = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
                continue
            if member.encoding == "lz4":
                data = lz4.block.decompress(data, uncompressed_size=member.nbytes, return_bytearray=True)
            else:
                data = bytearray(data)
            arrays[name] = np.frombuffer(data, np.dtype(member.dtype).newbyteorder("<")).reshape(member.shape)
        return sample_fields(arrays, self.row_of_key[sample["__key__"]])


def plain_webdataset(urls: Sequence[str], row_of_key: dict[str, int], layout: dict[str, Member]) -> wds.WebDataset:
    """Plain ``webdataset`` over our shards: stream ``urls`` (split by DataLoader worker, in order), keep the
    samples whose key is in ``row_of_key``, decode their normal view. Yields per-sample dicts."""
    dataset = wds.WebDataset(list(urls), shardshuffle=False, empty_check=False)
    decode: Callable[[dict], dict] = _DecodeNormalView(layout, row_of_key)
    return dataset.select(_KeyIn(set(row_of_key))).map(decode)
