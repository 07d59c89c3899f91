"""Readers for every modality of one LEAD frame (docs/format.md §1-§3).

Each reader takes a route folder and a frame number, reads one file and checks it against the dataset
config (image sizes, channels, dtypes, required keys). Whatever goes wrong, the error is a `FrameReadError`
naming the route, frame and file and saying what was expected. `read_frame` bundles the readers into the
dict that preprocessing consumes:

=================  ==========================================================  ==================
key                value                                                        source
=================  ==========================================================  ==================
``rgb``            uint8 (H, W, 3) RGB                                          rgb[_perturbated]
``rgb_jpeg``       the JPEG file's bytes, untouched                             rgb[_perturbated]
``semantics``      uint8 (H, W) class ids                                       semantics[_p]
``depth``          uint8 (H/r, W/r) (uint16 for 16-bit depth files)             depth[_p]
``hdmap``          uint8 (256, 256) ChauffeurNet ids                            hdmap[_p]
``lidar``          float64 (N, 3) x, y, z in the ego frame (as LEAD reads LAS)  lidar (no twin)
``lidar_time``     uint8 (N,) sweeps before the saved tick                      lidar
``radar``          dict radar1..radar4 -> float16 (N_i, 4) x, y, z, v          radar[_p]
``boxes``          list of dicts (docs/format.md §3)                            bboxes (no twin)
``meta``           dict (docs/format.md §2)                                     metas
=================  ==========================================================  ==================
"""

from __future__ import annotations

import io
import lzma
import pickle
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import laspy
import numpy as np
import simplejpeg

from leadio.format.config import DatasetConfig
from leadio.format.errors import FrameReadError, UnsafePickleError
from leadio.format.metas import meta_problems
from leadio.format.pickles import load_lzma_pickle
from leadio.schema import CAMERA_SEMANTIC_CLASSES, HDMAP_CLASSES

__all__ = [
    "MODALITIES",
    "REQUIRED_META_KEYS",
    "VIEWS",
    "check_rgb_jpeg",
    "decode_rgb_jpeg",
    "frame_file",
    "read_boxes",
    "read_depth",
    "read_frame",
    "read_hdmap",
    "read_lidar",
    "read_meta",
    "read_radar",
    "read_rgb",
    "read_rgb_jpeg",
    "read_semantics",
]

VIEWS = ("normal", "perturbated")
MODALITIES = ("rgb", "rgb_jpeg", "semantics", "depth", "hdmap", "lidar", "radar", "boxes", "meta")

#: Keys LEAD's loader reads from every meta unconditionally (docs/format.md §2), plus the pose/planning keys.
REQUIRED_META_KEYS: tuple[str, ...] = (
    "pos_global", "theta", "speed", "target_speed", "brake", "route", "future_positions", "future_yaws",
    "perturbation_translation", "perturbation_rotation", "dataset_information",
    "town", "weather_setting", "jpeg_storage_quality", "visual_visibility", "lane_type_str", "ego_lane_id",
    "changed_route", "is_intersection", "stop_sign_hazard", "walker_hazard", "light_hazard", "vehicle_hazard",
    "stop_sign_close", "does_emergency_brake_for_pedestrians", "construction_obstacle_two_ways_stuck",
    "accident_two_ways_stuck", "parked_obstacle_two_ways_stuck", "vehicle_opens_door_two_ways_stuck",
    "rear_danger_8", "rear_danger_16", "brake_cutin", "emergency_brake_for_special_vehicle",
    "num_parking_vehicles_in_proximity", "slower_bad_visibility", "slower_clutterness",
    "slower_occluded_junction", "num_dangerous_adversarial", "num_safe_adversarial",
    "num_ignored_adversarial", "rear_adversarial_id",
)

_EXT = {"rgb": "jpg", "semantics": "png", "depth": "png", "hdmap": "png", "lidar": "laz", "radar": "npz",
        "bboxes": "pkl", "metas": "pkl"}


def _folder(base: str, view: str) -> str:
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    return base if view == "normal" else f"{base}_perturbated"


def frame_file(route_dir: str | Path, base: str, frame: int, view: str = "normal") -> Path:
    """Path of one frame's file: ``<route>/<base>[_perturbated]/NNNN.<ext>``."""
    return Path(route_dir) / _folder(base, view) / f"{frame:04d}.{_EXT[base]}"


def _read_bytes(route_dir: Path, frame: int, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FrameReadError(route_dir, frame, path, "file is missing") from None
    except OSError as e:
        raise FrameReadError(route_dir, frame, path, f"cannot be read ({e})") from e


def _check_shape(route_dir, frame, path, array: np.ndarray, shape: tuple, what: str) -> np.ndarray:
    if array.shape != shape:
        raise FrameReadError(route_dir, frame, path, f"{what} has shape {array.shape}, expected {shape}")
    return array


#: A LAZ file declaring more points than this, or more than this many per byte of file, is refused unread.
MAX_LIDAR_POINTS = 20_000_000
MAX_LAZ_POINTS_PER_BYTE = 64


def read_rgb_jpeg(route_dir: str | Path, frame: int, view: str = "normal",
                  config: DatasetConfig | None = None) -> bytes:
    """The camera strip's JPEG bytes, untouched, checked without decoding the pixels: the start (SOI) and end
    (EOI) markers, so a truncated file is refused, and the header's size (against ``config`` when given), so a
    header declaring a huge image is refused before anything is allocated."""
    path = frame_file(route_dir, "rgb", frame, view)
    data = _read_bytes(Path(route_dir), frame, path)
    if not data.startswith(b"\xff\xd8"):
        raise FrameReadError(route_dir, frame, path, "is not a JPEG (no SOI marker); expected a 3-camera JPEG")
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise FrameReadError(route_dir, frame, path, f"JPEG is truncated (no EOI marker at the end of its "
                                                     f"{len(data)} bytes); copy the file again or re-record the frame")
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as e:
        raise FrameReadError(route_dir, frame, path, f"bad JPEG header ({e})") from e
    if config is not None and (height, width) != (config.image_height, config.image_width):
        raise FrameReadError(route_dir, frame, path, f"JPEG header declares {width}x{height}, expected "
                                                     f"{config.image_width}x{config.image_height} ({config.name})")
    return data


def _decode_jpeg(route_dir: str | Path, frame: int, data: bytes, view: str, colorspace: str) -> np.ndarray:
    try:
        return simplejpeg.decode_jpeg(data, colorspace=colorspace)  # strict: libjpeg's warnings are errors
    except ValueError as e:
        raise FrameReadError(route_dir, frame, frame_file(route_dir, "rgb", frame, view),
                             f"bad JPEG encoding ({e}); expected a JPEG that decodes without errors: copy the file "
                             f"again or re-record the frame") from e


def decode_rgb_jpeg(route_dir: str | Path, frame: int, data: bytes, config: DatasetConfig,
                    view: str = "normal") -> np.ndarray:
    """Decode the camera strip's JPEG bytes (from `read_rgb_jpeg`) as training does: uint8 (H, W, 3) RGB."""
    image = _decode_jpeg(route_dir, frame, data, view, "RGB")
    return _check_shape(route_dir, frame, frame_file(route_dir, "rgb", frame, view), image,
                        (config.image_height, config.image_width, 3), "image")


def check_rgb_jpeg(route_dir: str | Path, frame: int, data: bytes, view: str = "normal") -> None:
    """Refuse camera-strip JPEG bytes that training's decoder would refuse, e.g. corrupt scan data behind a valid
    header and end marker.

    Decodes every entropy-coded segment of every component strictly (libjpeg's warnings are errors, the loader's
    CPU decoder's setting) and reconstructs the luma plane only: libjpeg raises its errors while parsing the
    stream, never in the chroma upsampling and colour conversion skipped here, so the verdict is the RGB
    decode's (the same on 1800 random corruptions of synthetic strips) at about 60 % of its cost inside a build
    (0.9 against 1.5 ms per 1152x384 strip).

    Raises:
        FrameReadError: the JPEG does not decode, naming route, frame and file.
    """
    _decode_jpeg(route_dir, frame, data, view, "GRAY")


def read_rgb(route_dir: str | Path, frame: int, config: DatasetConfig, view: str = "normal") -> np.ndarray:
    """The camera strip decoded to uint8 (H, W, 3) RGB."""
    return decode_rgb_jpeg(route_dir, frame, read_rgb_jpeg(route_dir, frame, view, config), config, view)


def _read_png(route_dir: str | Path, frame: int, base: str, view: str, shape: tuple[int, int],
              dtypes: tuple[type, ...] = (np.uint8,)) -> np.ndarray:
    path = frame_file(route_dir, base, frame, view)
    data = _read_bytes(Path(route_dir), frame, path)
    if not data:
        raise FrameReadError(route_dir, frame, path, "PNG file is empty (0 bytes); copy the file again or re-record "
                                                     "the frame")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise FrameReadError(route_dir, frame, path, f"bad PNG encoding ({' '.join(str(e).split())})") from e
    if image is None:
        raise FrameReadError(route_dir, frame, path, "bad PNG encoding (cannot be decoded)")
    if image.dtype not in dtypes:
        raise FrameReadError(route_dir, frame, path,
                             f"PNG has dtype {image.dtype}, expected {' or '.join(np.dtype(d).name for d in dtypes)}")
    return _check_shape(route_dir, frame, path, image, shape, "single-channel PNG")


def _check_classes(route_dir, frame, base: str, view: str, image: np.ndarray, count: int, what: str,
                   fix: str = "copy the file again or re-record the frame") -> np.ndarray:
    top = int(image.max()) if image.size else 0
    if top >= count:
        path = frame_file(route_dir, base, frame, view)
        bad = int((image >= count).sum())
        raise FrameReadError(route_dir, frame, path, f"holds class id {top} ({bad} pixels >= {count}); expected "
                                                     f"{what} ids 0..{count - 1}; {fix}")
    return image


def read_semantics(route_dir: str | Path, frame: int, config: DatasetConfig, view: str = "normal") -> np.ndarray:
    """Camera semantics, uint8 (H, W) class ids, each below `leadio.schema.CAMERA_SEMANTIC_CLASSES`."""
    image = _read_png(route_dir, frame, "semantics", view, (config.image_height, config.image_width))
    return _check_classes(route_dir, frame, "semantics", view, image, CAMERA_SEMANTIC_CLASSES,
                          "LEAD's grouped (TransFuser) camera semantic",
                          "ids up to 31 are raw CARLA classes (recorded with save_grouped_semantic=False: "
                          "re-record the route grouped), others a damaged file")


def read_depth(route_dir: str | Path, frame: int, config: DatasetConfig, view: str = "normal") -> np.ndarray:
    """Stored depth, uint8 (H/r, W/r) (uint16 for LEAD's optional 16-bit files)."""
    return _read_png(route_dir, frame, "depth", view, (config.depth_height, config.depth_width),
                     (np.uint8, np.uint16))


def read_hdmap(route_dir: str | Path, frame: int, config: DatasetConfig, view: str = "normal") -> np.ndarray:
    """Ego-centred BEV map, uint8 (256, 256) ChauffeurNet ids, each below `leadio.schema.HDMAP_CLASSES`."""
    image = _read_png(route_dir, frame, "hdmap", view, (config.hdmap_size, config.hdmap_size))
    return _check_classes(route_dir, frame, "hdmap", view, image, HDMAP_CLASSES, "ChauffeurNet map")


def read_lidar(route_dir: str | Path, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """The LiDAR sweep: float64 (N, 3) points in the ego frame and uint8 (N,) ``time`` (sweeps ago).

    float64 as LEAD reads it: the scaled LAS integers are exact there, and a float32 copy could move a point
    lying within one ulp of a BEV bin edge into the neighbouring bin.
    """
    path = frame_file(route_dir, "lidar", frame)
    data = _read_bytes(Path(route_dir), frame, path)
    try:
        with laspy.open(io.BytesIO(data)) as reader:
            declared = int(reader.header.point_count)
    except Exception as e:  # laspy raises a handful of unrelated types for broken files
        raise FrameReadError(route_dir, frame, path,
                             f"bad LAZ encoding, unreadable header ({type(e).__name__}: {e})") from e
    if declared > min(MAX_LIDAR_POINTS, MAX_LAZ_POINTS_PER_BYTE * len(data)):
        raise FrameReadError(route_dir, frame, path, f"LAZ header declares {declared} points in a {len(data)}-byte "
                                                     f"file (at most {MAX_LIDAR_POINTS}, and {MAX_LAZ_POINTS_PER_BYTE} "
                                                     f"per byte); the file is damaged or not a LiDAR sweep")
    try:
        las = laspy.read(io.BytesIO(data))
    except Exception as e:  # laspy raises a handful of unrelated types for broken files
        raise FrameReadError(route_dir, frame, path, f"bad LAZ encoding ({type(e).__name__}: {e})") from e
    if "time" not in las.point_format.extra_dimension_names:
        raise FrameReadError(route_dir, frame, path,
                             "LAZ has no extra-bytes dimension 'time'; expected LEAD's uint8 sweep index")
    points = np.stack([las.x, las.y, las.z], axis=1).astype(np.float64)
    return points, np.asarray(las["time"], dtype=np.uint8)


def read_radar(route_dir: str | Path, frame: int, view: str = "normal") -> dict[str, np.ndarray]:
    """The four radars: ``radar1``..``radar4`` -> float16 (N_i, 4) x, y, z, v."""
    path = frame_file(route_dir, "radar", frame, view)
    data = _read_bytes(Path(route_dir), frame, path)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            radar = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise FrameReadError(route_dir, frame, path, f"bad npz encoding ({e})") from e
    for i in range(1, 5):
        key = f"radar{i}"
        if key not in radar:
            raise FrameReadError(route_dir, frame, path, f"npz lacks {key!r}; expected keys radar1..radar4")
        if radar[key].ndim != 2 or radar[key].shape[1] != 4:
            raise FrameReadError(route_dir, frame, path,
                                 f"{key} has shape {radar[key].shape}, expected (N, 4) x, y, z, v")
        if radar[key].dtype.kind != "f" or not np.isfinite(radar[key]).all():
            raise FrameReadError(route_dir, frame, path, f"{key} ({radar[key].dtype}) holds non-finite or "
                                                         f"non-float values, expected finite float x, y, z, v")
    return radar


def _read_pickle(route_dir: str | Path, frame: int, base: str) -> Any:
    path = frame_file(route_dir, base, frame)
    if not path.exists():
        raise FrameReadError(route_dir, frame, path, "file is missing")
    try:
        return load_lzma_pickle(path)
    except UnsafePickleError as e:
        raise FrameReadError(route_dir, frame, path, str(e)) from e
    except OSError as e:  # permission denied, a folder in its place, an I/O error
        raise FrameReadError(route_dir, frame, path, f"cannot be read ({e.strerror or e}); make it readable, or "
                                                     f"leave the route out with --skip-bad-routes") from e
    except (lzma.LZMAError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise FrameReadError(route_dir, frame, path,
                             f"bad encoding, expected an lzma pickle ({type(e).__name__}: {e})") from e


def read_meta(route_dir: str | Path, frame: int) -> dict:
    """The frame's meta dict, checked for the keys LEAD's loader reads unconditionally and for the types and
    finiteness of the values leadio reads (`leadio.format.metas`)."""
    meta = _read_pickle(route_dir, frame, "metas")
    path = frame_file(route_dir, "metas", frame)
    if not isinstance(meta, dict):
        raise FrameReadError(route_dir, frame, path, f"holds a {type(meta).__name__}, expected a dict")
    missing = [k for k in REQUIRED_META_KEYS if k not in meta]
    if missing:
        raise FrameReadError(route_dir, frame, path, f"meta lacks required keys {missing}")
    problems = meta_problems(meta)
    if problems:
        raise FrameReadError(route_dir, frame, path, f"meta {'; '.join(problems)} (docs/format.md §2); fix or "
                                                     f"re-record the frame, or leave the route out with "
                                                     f"--skip-bad-routes")
    return meta


def read_boxes(route_dir: str | Path, frame: int) -> list[dict]:
    """The frame's box list (ego first, sorted by distance)."""
    boxes = _read_pickle(route_dir, frame, "bboxes")
    path = frame_file(route_dir, "bboxes", frame)
    if not isinstance(boxes, list) or not all(isinstance(b, dict) for b in boxes):
        raise FrameReadError(route_dir, frame, path, "expected a list of dicts")
    for i, box in enumerate(boxes):
        missing = [k for k in ("class", "position", "extent", "yaw") if k not in box]
        if missing:
            raise FrameReadError(route_dir, frame, path, f"box {i} ({box.get('class')!r}) lacks keys {missing}")
    return boxes


def read_frame(route_dir: str | Path, frame: int, config: DatasetConfig, *, view: str = "normal",
               modalities: Iterable[str] = MODALITIES) -> dict[str, Any]:
    """Read the requested modalities of one frame (see the module docstring for keys and types).

    Args:
        route_dir: the route folder ``<root>/data/<Scenario>/<RouteDir>``.
        frame: frame number (the ``NNNN`` of the file names).
        config: the dataset config the files are checked against.
        view: ``"normal"`` or ``"perturbated"``; LiDAR, boxes and metas have no twin and are the same.
        modalities: subset of `MODALITIES`.

    Raises:
        FrameReadError: a file is missing, undecodable or not what the config expects.
    """
    wanted = set(modalities)
    unknown = wanted - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; expected a subset of {MODALITIES}")
    out: dict[str, Any] = {}
    if "rgb_jpeg" in wanted:
        out["rgb_jpeg"] = read_rgb_jpeg(route_dir, frame, view, config)
    if "rgb" in wanted:
        out["rgb"] = read_rgb(route_dir, frame, config, view)
    if "semantics" in wanted:
        out["semantics"] = read_semantics(route_dir, frame, config, view)
    if "depth" in wanted:
        out["depth"] = read_depth(route_dir, frame, config, view)
    if "hdmap" in wanted:
        out["hdmap"] = read_hdmap(route_dir, frame, config, view)
    if "lidar" in wanted:
        out["lidar"], out["lidar_time"] = read_lidar(route_dir, frame)
    if "radar" in wanted:
        out["radar"] = read_radar(route_dir, frame, view)
    if "boxes" in wanted:
        out["boxes"] = read_boxes(route_dir, frame)
    if "meta" in wanted:
        out["meta"] = read_meta(route_dir, frame)
    return out
