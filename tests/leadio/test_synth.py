"""leadio.synth: structure, encodings, determinism and self-consistency of the synthetic LEAD routes.

Files are read with plain libraries (simplejpeg, cv2, laspy, lzma + a plain-data unpickler), not with
leadio.format, so the generator is checked against the specification rather than against our own reader.
"""

from __future__ import annotations

import json
import lzma
import pickle
from pathlib import Path

import cv2
import laspy
import numpy as np
import pytest
import simplejpeg

from leadio import synth
from leadio.synth.world import SCENARIOS, TP_RADII, WEATHERS

SEED, ROUTES, FRAMES = 4, 6, 16  # seed 4: these 6 routes show every box class (checked below)
FOLDERS = {"rgb": "jpg", "rgb_perturbated": "jpg", "semantics": "png", "semantics_perturbated": "png",
           "depth": "png", "depth_perturbated": "png", "hdmap": "png", "hdmap_perturbated": "png", "lidar": "laz",
           "radar": "npz", "radar_perturbated": "npz", "bboxes": "pkl", "metas": "pkl"}
REQUIRED_META = (
    "pos_global", "theta", "ego_matrix", "speed", "target_speed", "brake", "throttle", "steer", "route",
    "future_positions", "future_yaws", "perturbation_translation", "perturbation_rotation", "dataset_information",
    "scenario_obstacles_ids", "vehicle_opened_door", "vehicle_door_side", "over_head_traffic_light",
    "europe_traffic_light", "current_active_scenario_type", "previous_active_scenario_type",
    "town", "weather_setting", "jpeg_storage_quality", "visual_visibility", "lane_type_str", "ego_lane_id",
    "changed_route", "is_intersection", "stop_sign_hazard", "walker_hazard", "light_hazard", "vehicle_hazard",
    "stop_sign_close", "does_emergency_brake_for_pedestrians", "construction_obstacle_two_ways_stuck",
    "accident_two_ways_stuck", "parked_obstacle_two_ways_stuck", "vehicle_opens_door_two_ways_stuck",
    "rear_danger_8", "rear_danger_16", "brake_cutin", "emergency_brake_for_special_vehicle",
    "num_parking_vehicles_in_proximity", "slower_bad_visibility", "slower_clutterness", "slower_occluded_junction",
    "num_dangerous_adversarial", "num_safe_adversarial", "num_ignored_adversarial", "rear_adversarial_id")
BOX_KEYS = {
    "car": ("position", "extent", "yaw", "speed", "brake", "num_points", "visible_pixels", "num_radar_points",
            "transfuser_semantics_id", "role_name", "type_id", "id", "lane_type_str", "mesh_path",
            "future_positions", "future_yaws"),
    "walker": ("position", "extent", "yaw", "speed", "num_points", "visible_pixels", "num_radar_points",
               "transfuser_semantics_id", "future_positions", "future_yaws"),
    "static": ("position", "extent", "yaw", "speed", "num_points", "visible_pixels", "transfuser_semantics_id",
               "role_name", "type_id", "id", "lane_type_str", "mesh_path"),
    "traffic_light": ("position", "extent", "yaw", "affects_ego", "state", "transfuser_semantics_id"),
    "stop_sign": ("position", "extent", "yaw", "affects_ego", "transfuser_semantics_id"),
    "ego_car": ("position", "extent", "yaw", "speed"),
}
PLAIN = (dict, list, str, float, int, bool, type(None), np.ndarray, np.generic)


class _PlainUnpickler(pickle.Unpickler):  # noqa: S301 - an allow-list unpickler
    """Admits builtins and numpy arrays/scalars only: a file with anything else fails to load."""

    def find_class(self, module: str, name: str):
        if module.startswith("numpy") and (name in {"_reconstruct", "scalar", "ndarray", "dtype", "_frombuffer"}
                                           or module == "numpy.dtypes"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"not plain data: {module}.{name}")


def load_pkl(path: Path):
    with lzma.open(path, "rb") as f:
        return _PlainUnpickler(f).load()


def read_png(path: Path) -> np.ndarray:
    return cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)


def lead_filter_keeps(res: dict) -> bool:
    """LEAD's route filter (docs/format.md §1.2), written from the specification."""
    inf, n = res["infractions"], res["num_infractions"]
    min_speed, outside = len(inf["min_speed_infractions"]), len(inf["outside_route_lanes"])
    score = res["scores"]["score_composed"]
    bad = not (score == 100 or (score < 100 and n == min_speed)
               or (res["status"] == "Completed" and n == min_speed + outside) or res["status"] == "Perfect")
    return not bad and res["status"] not in ("Failed", "Failed - Agent couldn't be set up",
                                             "Failed - Simulation crashed", "Failed - Agent crashed")


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> tuple[Path, synth.SynthSummary]:
    path = tmp_path_factory.mktemp("synth")
    return path, synth.generate_root(path, ROUTES, FRAMES, SEED, progress=False)


@pytest.fixture(scope="module")
def routes(root) -> list[Path]:
    path, summary = root
    return [path / r.spec.relpath for r in summary.routes]


def test_layout_matches_lead(root, routes):
    path, summary = root
    assert summary.routes_written == ROUTES and summary.frames == ROUTES * FRAMES and summary.bytes > 0
    assert not list(path.glob("data/*/.tmp-*"))
    expected = {f"{f:04d}" for f in range(FRAMES)}
    for route in routes:
        assert route.parent.parent == path / "data" and route.parent.name in SCENARIOS
        town, rep, *_ = route.name.split("_")
        assert town.startswith("Town") and rep == "Rep0" and "_route0_" in route.name
        assert {p.name for p in route.iterdir()} == set(FOLDERS) | {"results.json"}
        for folder, ext in FOLDERS.items():
            names = [p.name for p in (route / folder).iterdir()]
            assert {n.split(".")[0] for n in names} == expected and all(n.endswith("." + ext) for n in names)


def test_encodings(routes):
    for route in routes[:3]:
        for frame in ("0000", f"{FRAMES - 1:04d}"):
            for folder in ("rgb", "rgb_perturbated"):
                data = (route / folder / f"{frame}.jpg").read_bytes()
                assert simplejpeg.decode_jpeg_header(data)[:3] == (384, 1152, "YCbCr")
                assert simplejpeg.decode_jpeg(data).shape == (384, 1152, 3)
            for folder, shape, values in (("semantics", (384, 1152), range(10)), ("depth", (96, 288), range(256)),
                                          ("hdmap", (256, 256), (0, 1, 3, 4))):
                for suffix in ("", "_perturbated"):
                    img = read_png(route / f"{folder}{suffix}" / f"{frame}.png")
                    assert img.shape == shape and img.dtype == np.uint8
                    assert set(np.unique(img)) <= set(values)
            las = laspy.read(route / "lidar" / f"{frame}.laz")
            assert las.header.point_format.id == 0 and np.allclose(las.header.scales, 0.1)
            assert "time" in las.point_format.extra_dimension_names and las["time"].dtype == np.uint8
            assert set(np.unique(las["time"])) <= set(range(5)) and 0 in las["time"]
            xyz = np.stack([las.x, las.y, las.z], 1)
            assert 3_000 * len(np.unique(las["time"])) <= len(xyz) <= 60_000  # frame 0 has a single sweep
            assert np.all(np.abs(xyz.min(0) - las.header.offsets) < 0.051)  # offsets are the per-axis minimum
            crop = np.array([[-32, -40, -4], [64, 40, 10]])  # as cropped before the 0.1 m rounding
            assert np.all(xyz.min(0) >= crop[0] - 0.05) and np.all(xyz.max(0) <= crop[1] + 0.05)
            for suffix in ("", "_perturbated"):
                with np.load(route / f"radar{suffix}" / f"{frame}.npz") as radar:
                    assert sorted(radar.files) == ["radar1", "radar2", "radar3", "radar4"]
                    assert all(radar[k].dtype == np.float16 and radar[k].shape[1:] == (4,) for k in radar.files)
    assert min((r / "rgb" / "0000.jpg").stat().st_size for r in routes) > 15_000  # textured, not flat colour


def _plain(obj) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_plain(v) for v in obj)
    return isinstance(obj, PLAIN)


def test_pickles_are_plain_and_complete(routes):
    classes = set()
    for route in routes:
        for f in range(0, FRAMES, 5):
            meta, boxes = load_pkl(route / "metas" / f"{f:04d}.pkl"), load_pkl(route / "bboxes" / f"{f:04d}.pkl")
            assert _plain(meta) and _plain(boxes)
            assert set(REQUIRED_META) <= set(meta)
            for radius in TP_RADII:
                points, commands = meta[f"next_target_points_{radius}"], meta[f"next_commands_{radius}"]
                assert len(points) == len(commands) >= 2 and all(len(p) == 3 for p in points)
                assert all(isinstance(c, int) and c in (1, 2, 3, 4) for c in commands)
            info = meta["dataset_information"]
            assert (info["save_depth_resolution_ratio"], info["save_depth_bits"], info["data_save_freq"]) == (4, 8, 5)
            assert info["save_grouped_semantic"] is True and meta["jpeg_storage_quality"] == 30
            assert 0.1 <= abs(meta["perturbation_translation"]) <= 1.0
            assert 0.5 <= abs(meta["perturbation_rotation"]) <= 12.5
            assert meta["weather_setting"] in WEATHERS and meta["town"] in route.name
            assert meta["ego_matrix"].dtype == np.float32 and meta["route"].dtype == np.float32
            assert boxes[0]["class"] == "ego_car"
            distances = [b["distance"] for b in boxes[1:]]
            assert distances == sorted(distances) and max(distances, default=0) <= 96
            for box in boxes:
                assert set(BOX_KEYS[box["class"]]) <= set(box), box["class"]
                classes.add(box["class"])
                if "future_positions" in box:
                    assert box["future_positions"].dtype == np.float16 and box["future_positions"].shape[1:] == (2,)
                    assert len(box["future_positions"]) == len(box["future_yaws"]) <= 41
    assert {"car", "walker", "static", "traffic_light", "stop_sign"} <= classes


def test_ego_trajectory_is_consistent(routes):
    commands = set()
    for route in routes:
        metas = [load_pkl(route / "metas" / f"{f:04d}.pkl") for f in range(FRAMES)]
        for f, meta in enumerate(metas):
            c, s = np.cos(meta["theta"]), np.sin(meta["theta"])
            future = meta["future_positions"]
            assert future.dtype == np.float32 and future.shape[1] == 3 and len(future) <= 61
            assert len(future) == min(61, 5 * (FRAMES - 1 - f) + 1)  # shorter near the end of the route
            for k in range(1, FRAMES - f):
                if 5 * k >= len(future):
                    break
                other = metas[f + k]
                d = np.subtract(other["pos_global"][:2], meta["pos_global"][:2])
                np.testing.assert_allclose(future[5 * k, :2], [c * d[0] + s * d[1], -s * d[0] + c * d[1]], atol=1e-3)
                dyaw = (other["theta"] - meta["theta"] + np.pi) % (2 * np.pi) - np.pi
                assert abs(meta["future_yaws"][5 * k] - dyaw) < 1e-3
            route_pts = meta["route"]
            assert 2 <= len(route_pts) <= 50
            assert abs(np.linalg.norm(route_pts[0]) - 2.5) < 0.05 and route_pts[0][0] > 2.0
            assert np.allclose(np.linalg.norm(np.diff(route_pts, axis=0), axis=1), 1.0, atol=0.02)
            if meta["brake"]:
                assert meta["target_speed"] == 0.0
            commands.update(meta["next_commands_3.25"])
    assert commands & {1, 2}  # some routes turn at junctions


def test_lidar_and_cameras_agree_with_boxes(routes):
    checked = 0
    for route in routes:
        for f in range(0, FRAMES, 3):
            boxes = load_pkl(route / "bboxes" / f"{f:04d}.pkl")
            las = laspy.read(route / "lidar" / f"{f:04d}.laz")
            xyz = np.stack([las.x, las.y, las.z + 1.25], 1)  # LAZ z = vehicle z - 1.25; box z = vehicle frame
            semantics = read_png(route / "semantics" / f"{f:04d}.png")
            for box in boxes[1:]:
                if box["class"] not in ("car", "walker", "static"):
                    continue
                rel = xyz - box["position"]
                c, s = np.cos(box["yaw"]), np.sin(box["yaw"])
                local = np.stack([c * rel[:, 0] + s * rel[:, 1], c * rel[:, 1] - s * rel[:, 0], rel[:, 2]], 1)
                inside = int((np.abs(local) <= np.array(box["extent"]) + 1e-6).all(1).sum())
                assert inside >= box["num_points"] >= 0
                if box["class"] == "car" and box["distance"] < 20:
                    assert box["num_points"] > 0
                    checked += 1
            for cls, sem in (("car", 1), ("walker", 4)):  # every visible pixel of a box has its class
                visible = sum(b["visible_pixels"] for b in boxes if b["class"] == cls)
                assert (semantics == sem).sum() >= visible
            front = semantics[300:, 384 + 150:384 + 234]
            assert (front == 2).mean() > 0.3 or (front == 1).any()  # the road ahead, unless a car is there
            for suffix in ("", "_perturbated"):
                hdmap = read_png(route / f"hdmap{suffix}" / f"{f:04d}.png")
                assert hdmap[128, 128] == 1  # the ego stands on the road
    assert checked > 0


def test_perturbed_hdmap_is_the_view_under_p(routes):
    """hdmap_perturbated pixel p' shows what hdmap shows at p = R(r)p' + (0, t) (docs/format.md §0, P(t, r))."""
    for route in routes:
        meta = load_pkl(route / "metas" / "0004.pkl")
        t, r = meta["perturbation_translation"], np.deg2rad(meta["perturbation_rotation"])
        cols, rows = np.meshgrid(np.arange(256), np.arange(256))
        xp, yp = (cols + 0.5) / 2 - 64, (rows + 0.5) / 2 - 64
        x, y = np.cos(r) * xp - np.sin(r) * yp, np.sin(r) * xp + np.cos(r) * yp + t
        map_x, map_y = ((x + 64) * 2 - 0.5).astype(np.float32), ((y + 64) * 2 - 0.5).astype(np.float32)
        normal = read_png(route / "hdmap" / "0004.png") > 0
        warped = cv2.remap(normal.astype(np.uint8), map_x, map_y, cv2.INTER_NEAREST, borderValue=255)
        perturbed = read_png(route / "hdmap_perturbated" / "0004.png") > 0
        inside = warped != 255
        iou = (perturbed & (warped == 1))[inside].sum() / (perturbed | (warped == 1))[inside].sum()
        assert iou > 0.95


def test_results_mix_follows_lead_filter(root, routes):
    _, summary = root
    kept = [lead_filter_keeps(json.loads((r / "results.json").read_text())) for r in routes]
    assert kept == [r.spec.passes_filter for r in summary.routes]
    assert kept.count(False) == 1 and len(summary.passing) == ROUTES - 1
    specs = [synth.route_spec(SEED, i) for i in range(100)]
    assert sum(not s.passes_filter for s in specs) == 20
    assert len({s.outcome for s in specs if not s.passes_filter}) >= 4  # failures of several kinds
    assert len({s.scenario for s in specs}) == len(SCENARIOS) and len({s.town for s in specs}) > 3


def test_same_seed_same_bytes(tmp_path):
    a = synth.generate_root(tmp_path / "a", 2, 3, 11, progress=False)
    synth.generate_root(tmp_path / "b", 2, 3, 11, workers=2, progress=False)
    synth.generate_root(tmp_path / "c", 2, 3, 12, progress=False)
    files_a, files_b, files_c = (all_files(tmp_path / k) for k in "abc")
    assert files_a == files_b
    assert sum(len(v) for v in files_a.values()) == a.bytes
    common = set(files_a) & set(files_c)
    assert files_a.keys() != files_c.keys() or any(files_a[k] != files_c[k] for k in common)


def test_rerun_replaces_leftover_and_skips_complete(tmp_path):
    spec = synth.route_spec(5, 0)
    leftover = tmp_path / "data" / spec.scenario / f".tmp-{spec.name}"
    (leftover / "rgb").mkdir(parents=True)
    (leftover / "rgb" / "0000.jpg").write_bytes(b"half a route")
    assert synth.main(["--root", str(tmp_path), "--routes", "1", "--frames", "2", "--seed", "5", "--quiet"]) == 0
    route = tmp_path / spec.relpath
    assert not leftover.exists() and (route / "results.json").is_file()
    assert simplejpeg.decode_jpeg((route / "rgb" / "0000.jpg").read_bytes()).shape == (384, 1152, 3)
    before = all_files(tmp_path)
    again = synth.generate_root(tmp_path, 1, 2, 5, progress=False)
    assert (again.routes_written, again.routes_skipped) == (0, 1) and all_files(tmp_path) == before
