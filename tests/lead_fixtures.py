"""Hand-written LEAD-format files for tests, written with plain libraries (never with leadio.synth).

`write_frame` writes every modality of one frame exactly as docs/format.md §1-§3 describes; `write_light_route`
writes a route whose metas are real but whose image/LiDAR files are empty placeholders, for tests that only
exercise discovery, the catalog and buckets (which read metas and file listings only).
"""

from __future__ import annotations

import io
import json
import lzma
import pickle
from pathlib import Path

import cv2
import laspy
import numpy as np
import simplejpeg

PASSED = {"status": "Completed", "num_infractions": 0, "scores": {"score_composed": 100.0},
          "infractions": {"min_speed_infractions": [], "outside_route_lanes": []}}
FAILED = {"status": "Failed - Agent crashed", "num_infractions": 0, "scores": {"score_composed": 0.0},
          "infractions": {"min_speed_infractions": [], "outside_route_lanes": []}}

FLAG_DEFAULTS = dict.fromkeys((
    "visual_visibility", "changed_route", "is_intersection", "stop_sign_hazard", "walker_hazard",
    "light_hazard", "vehicle_hazard", "stop_sign_close", "does_emergency_brake_for_pedestrians",
    "construction_obstacle_two_ways_stuck", "accident_two_ways_stuck", "parked_obstacle_two_ways_stuck",
    "vehicle_opens_door_two_ways_stuck", "rear_danger_8", "rear_danger_16", "brake_cutin",
    "emergency_brake_for_special_vehicle", "slower_bad_visibility", "slower_clutterness",
    "slower_occluded_junction", "over_head_traffic_light", "europe_traffic_light"), False)


def write_lzma_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def straight_meta(frame: int, n: int, speed: float = 4.0, town: str = "Town12", weather: str = "ClearNoon",
                  **overrides) -> dict:
    """A meta of an ego driving straight along world +x at ``speed`` m/s; frame k is at tick 5k (20 Hz)."""
    x0 = frame * 5 * speed / 20
    ticks_left = (n - 1 - frame) * 5
    k = np.arange(min(61, ticks_left + 1))
    future = np.stack([k * speed / 20, np.zeros_like(k, float), np.zeros_like(k, float)], 1).astype(np.float32)
    route = np.stack([2.5 + np.arange(50.0), np.zeros(50)], 1).astype(np.float32)
    meta = {
        "pos_global": [x0, 0.0, 0.0], "theta": 0.0, "ego_matrix": np.eye(4, dtype=np.float32),
        "speed": speed, "target_speed": speed, "brake": False, "throttle": 0.5, "steer": 0.0,
        "route": route, "future_positions": future, "future_yaws": np.zeros(len(k), np.float32),
        "next_target_points_3.25": [[x0 + 30.0, 0.0, 0.0], [x0 + 60.0, 0.0, 0.0]],
        "next_commands_3.25": [4, 4],
        "perturbation_translation": 0.5, "perturbation_rotation": 5.0,
        "dataset_information": {"save_depth_resolution_ratio": 4, "save_depth_bits": 8,
                                "save_grouped_semantic": True, "data_save_freq": 5},
        "scenario_obstacles_ids": [], "vehicle_opened_door": False, "vehicle_door_side": None,
        "current_active_scenario_type": None, "previous_active_scenario_type": None,
        "town": town, "weather_setting": weather, "jpeg_storage_quality": 30, "lane_type_str": "Driving",
        "ego_lane_id": -1, "num_parking_vehicles_in_proximity": 0, "num_dangerous_adversarial": 0,
        "num_safe_adversarial": 0, "num_ignored_adversarial": 0, "rear_adversarial_id": -1,
        **FLAG_DEFAULTS,
    }
    meta.update(overrides)
    return meta


FOLDERS = {"rgb": "jpg", "rgb_perturbated": "jpg", "semantics": "png", "semantics_perturbated": "png",
           "depth": "png", "depth_perturbated": "png", "hdmap": "png", "hdmap_perturbated": "png",
           "lidar": "laz", "radar": "npz", "radar_perturbated": "npz", "bboxes": "pkl", "metas": "pkl"}


def write_light_route(root: Path, scenario: str, name: str, n: int, results: dict | None = PASSED,
                      **meta_overrides) -> Path:
    route = root / "data" / scenario / name
    for folder, ext in FOLDERS.items():
        (route / folder).mkdir(parents=True, exist_ok=True)
        for f in range(n):
            if folder == "metas":
                write_lzma_pickle(route / folder / f"{f:04d}.pkl", straight_meta(f, n, **meta_overrides))
            elif folder == "bboxes":
                write_lzma_pickle(route / folder / f"{f:04d}.pkl", [])
            else:
                (route / folder / f"{f:04d}.{ext}").touch()
    if results is not None:
        (route / "results.json").write_text(json.dumps(results))
    return route


def frame_content(seed: int) -> dict:
    """Deterministic content of every modality of one frame, as the reader should return it."""
    rng = np.random.default_rng(seed)
    rgb = np.zeros((384, 1152, 3), np.uint8)
    rgb[:192] = (90, 140, 200)
    rgb[192:] = (70, 70, 70)
    rgb[200:260, 500:640] = (200, 20, 20)
    points = np.round(rng.uniform([-30, -38, -2], [60, 38, 8], (3000, 3)), 1)
    return {
        "rgb": rgb,
        "semantics": rng.integers(0, 10, (384, 1152), dtype=np.uint8),
        "depth": rng.integers(0, 256, (96, 288), dtype=np.uint8),
        "hdmap": rng.choice(np.array([0, 1, 3, 4], np.uint8), (256, 256)),
        "lidar": points.astype(np.float32),
        "lidar_time": rng.integers(0, 5, 3000).astype(np.uint8),
        "radar": {f"radar{i}": rng.normal(size=(5 + i, 4)).astype(np.float16) for i in range(1, 5)},
        "boxes": [{"class": "ego_car", "position": [0.0, 0.0, 0.0], "extent": [2.4, 1.0, 0.8], "yaw": 0.0,
                   "id": 1},
                  {"class": "car", "position": [12.0, -3.5, 0.0], "extent": [2.2, 0.9, 0.7], "yaw": 0.1,
                   "speed": 3.0, "brake": 0.0, "num_points": 40, "visible_pixels": 300, "num_radar_points": 2,
                   "transfuser_semantics_id": 1, "id": 7, "type_id": "vehicle.lincoln.mkz",
                   "role_name": "background", "lane_type_str": "Driving", "mesh_path": "Car",
                   "future_positions": np.zeros((41, 2), np.float16), "future_yaws": np.zeros(41, np.float16)}],
    }


def write_frame(route: Path, frame: int, n: int, content: dict, view_suffix: str = "") -> None:
    """Write one frame in LEAD's encodings (JPEG q30, PNG level 6, LAZ with `time`, npz, lzma pickles)."""
    def put(folder: str, name: str, data: bytes) -> None:
        (route / folder).mkdir(parents=True, exist_ok=True)
        (route / folder / name).write_bytes(data)

    stem = f"{frame:04d}"
    put("rgb" + view_suffix, stem + ".jpg", simplejpeg.encode_jpeg(content["rgb"], quality=30, colorspace="RGB"))
    for key, folder in (("semantics", "semantics"), ("depth", "depth"), ("hdmap", "hdmap")):
        ok, png = cv2.imencode(".png", content[key], [cv2.IMWRITE_PNG_COMPRESSION, 6])
        assert ok
        put(folder + view_suffix, stem + ".png", png.tobytes())
    buf = io.BytesIO()
    np.savez_compressed(buf, **content["radar"])
    put("radar" + view_suffix, stem + ".npz", buf.getvalue())
    if view_suffix:
        return
    header = laspy.LasHeader(point_format=0, version="1.2")
    header.add_extra_dim(laspy.ExtraBytesParams(name="time", type=np.uint8))
    header.offsets = content["lidar"].min(axis=0)
    header.scales = np.array([0.1, 0.1, 0.1])
    las = laspy.LasData(header)
    las.x, las.y, las.z = content["lidar"][:, 0], content["lidar"][:, 1], content["lidar"][:, 2]
    las["time"] = content["lidar_time"]
    (route / "lidar").mkdir(parents=True, exist_ok=True)
    las.write(route / "lidar" / f"{stem}.laz", laz_backend=laspy.LazBackend.Lazrs)
    write_lzma_pickle(route / "bboxes" / f"{stem}.pkl", content["boxes"])
    write_lzma_pickle(route / "metas" / f"{stem}.pkl", straight_meta(frame, n))
