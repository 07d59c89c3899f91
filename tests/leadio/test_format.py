"""leadio.format: reading hand-written LEAD frames, the restricted unpickler, the route filter, errors."""

from __future__ import annotations

import json
import lzma
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from lead_fixtures import FAILED, PASSED, frame_content, write_frame, write_light_route, write_lzma_pickle

from leadio.format.config import DATASET_CONFIGS, UnknownDatasetError, dataset_config_for_root
from leadio.format.errors import FrameReadError, UnsafePickleError
from leadio.format.frame import read_frame
from leadio.format.pickles import load_lzma_pickle
from leadio.format.routes import discover_routes, route_filter_reason

CONFIG = DATASET_CONFIGS["carla_leaderboard2"]


@pytest.fixture
def hand_route(tmp_path: Path) -> tuple[Path, dict, dict]:
    route = tmp_path / "carla_leaderboard2" / "data" / "Accident" / "Town12_Rep0_1_route0_01_01_00_00_00"
    normal, perturbed = frame_content(1), frame_content(2)
    write_frame(route, 0, 1, normal)
    write_frame(route, 0, 1, perturbed, view_suffix="_perturbated")
    (route / "results.json").write_text(json.dumps(PASSED))
    return route, normal, perturbed


def test_hand_written_frame_reads_back_exactly(hand_route):
    route, normal, perturbed = hand_route
    for view, content in (("normal", normal), ("perturbated", perturbed)):
        got = read_frame(route, 0, CONFIG, view=view)
        assert got["rgb"].shape == (384, 1152, 3) and got["rgb"].dtype == np.uint8
        # JPEG q30 is lossy: flat regions come back within a few levels, the red block stays red
        assert np.abs(got["rgb"][20:180, 20:1100].astype(int) - content["rgb"][20:180, 20:1100]).max() <= 3
        assert got["rgb"][230, 570, 0] > 150 and got["rgb"][230, 570, 1] < 80
        assert got["rgb_jpeg"] == (route / ("rgb" if view == "normal" else "rgb_perturbated") / "0000.jpg").read_bytes()
        for key in ("semantics", "depth", "hdmap"):
            assert got[key].dtype == np.uint8
            np.testing.assert_array_equal(got[key], content[key])
        for key in content["radar"]:
            np.testing.assert_array_equal(got["radar"][key], content["radar"][key])
            assert got["radar"][key].dtype == np.float16
        # LiDAR and boxes have no twin: the perturbated view returns the normal files
        np.testing.assert_allclose(got["lidar"], normal["lidar"], atol=1e-4)
        np.testing.assert_array_equal(got["lidar_time"], normal["lidar_time"])
        assert got["boxes"][1]["position"] == [12.0, -3.5, 0.0] and got["boxes"][0]["class"] == "ego_car"
        assert got["meta"]["town"] == "Town12" and got["meta"]["route"].dtype == np.float32


def test_read_subset_of_modalities(hand_route):
    route, _, _ = hand_route
    got = read_frame(route, 0, CONFIG, modalities=["meta", "lidar"])
    assert set(got) == {"meta", "lidar", "lidar_time"}
    with pytest.raises(ValueError, match="unknown modalities"):
        read_frame(route, 0, CONFIG, modalities=["rgb", "thermal"])


def test_errors_name_route_frame_file_and_expectation(hand_route):
    route, _, _ = hand_route
    (route / "depth" / "0000.png").unlink()
    with pytest.raises(FrameReadError, match=r"frame 0000, file .*depth/0000\.png: file is missing"):
        read_frame(route, 0, CONFIG, modalities=["depth"])
    (route / "semantics" / "0000.png").write_bytes(b"not a png at all")
    with pytest.raises(FrameReadError, match=r"semantics/0000\.png: bad PNG encoding"):
        read_frame(route, 0, CONFIG, modalities=["semantics"])
    import cv2
    ok, png = cv2.imencode(".png", np.zeros((100, 100), np.uint8))
    (route / "hdmap" / "0000.png").write_bytes(png.tobytes())
    with pytest.raises(FrameReadError, match=r"hdmap/0000\.png: single-channel PNG has shape \(100, 100\), "
                                             r"expected \(256, 256\)"):
        read_frame(route, 0, CONFIG, modalities=["hdmap"])
    (route / "rgb" / "0000.jpg").write_bytes(b"\x89PNG....")
    with pytest.raises(FrameReadError, match=r"rgb/0000\.jpg: is not a JPEG"):
        read_frame(route, 0, CONFIG, modalities=["rgb"])
    (route / "lidar" / "0000.laz").write_bytes(b"LASF" + b"\0" * 50)
    with pytest.raises(FrameReadError, match=r"lidar/0000\.laz: bad LAZ encoding"):
        read_frame(route, 0, CONFIG, modalities=["lidar"])
    write_lzma_pickle(route / "metas" / "0000.pkl", {"town": "Town12"})
    with pytest.raises(FrameReadError, match=r"metas/0000\.pkl: meta lacks required keys \['pos_global'"):
        read_frame(route, 0, CONFIG, modalities=["meta"])
    (route / "bboxes" / "0000.pkl").write_bytes(b"garbage")
    with pytest.raises(FrameReadError, match=r"bboxes/0000\.pkl: bad encoding, expected an lzma pickle"):
        read_frame(route, 0, CONFIG, modalities=["boxes"])


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    with lzma.open(path, "wb") as f:
        pickle.dump({"speed": 1.0, "x": _Evil()}, f)
    with pytest.raises(UnsafePickleError, match=r"posix\.system|os\.system"):
        load_lzma_pickle(path)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()
    # through the frame reader the error also names the file
    route = tmp_path / "r"
    write_lzma_pickle(route / "metas" / "0003.pkl", [_Evil()])
    with pytest.raises(FrameReadError, match=r"frame 0003, file .*metas/0003\.pkl: pickle references"):
        read_frame(route, 3, CONFIG, modalities=["meta"])
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_plain_data_pickles_of_every_protocol_load(tmp_path):
    obj = {"a": np.arange(6, dtype=np.float32).reshape(3, 2), "b": np.float64(1.5), "c": [1, "x", None, (2, 3)],
           "d": np.int64(7), "e": np.ones(3, np.float16), "f": True}
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"p{protocol}.pkl"
        with lzma.open(path, "wb") as f:
            pickle.dump(obj, f, protocol=protocol)
        got = load_lzma_pickle(path)
        np.testing.assert_array_equal(got["a"], obj["a"])
        assert got["a"].dtype == np.float32 and got["c"] == obj["c"] and got["d"] == 7


def _results(status="Completed", n=0, score=100.0, min_speed=0, outside=0):
    return {"status": status, "num_infractions": n, "scores": {"score_composed": score},
            "infractions": {"min_speed_infractions": [{}] * min_speed, "outside_route_lanes": [{}] * outside}}


@pytest.mark.parametrize(("results", "kept"), [
    (_results(score=100.0), True),                                            # (a) perfect score
    (_results(status="Failed", score=100.0), False),                          # hard failure wins over (a)
    (_results(status="Failed - Agent crashed", score=100.0), False),
    (_results(status="Failed - Simulation crashed", score=100.0), False),
    (_results(status="Failed - Agent couldn't be set up", score=100.0), False),
    (_results(status="Failed - TickRuntime", score=40.0, n=2, min_speed=2), True),  # (b), not a listed failure
    (_results(status="Completed", score=60.0, n=2, min_speed=2), True),       # (b)
    (_results(status="Completed", score=60.0, n=3, min_speed=1, outside=2), True),  # (c)
    (_results(status="Started", score=60.0, n=3, min_speed=1, outside=2), False),   # (c) needs Completed
    (_results(status="Perfect", score=10.0, n=5), True),                      # (d)
    (_results(status="Completed", score=60.0, n=1), False),                   # a real infraction
])
def test_failed_route_filter_case_by_case(results, kept):
    assert (route_filter_reason(results) is None) is kept


def test_filter_needs_results_and_first_meta():
    assert route_filter_reason(None) == "results.json missing"
    assert route_filter_reason(_results(), has_first_meta=False) == "metas/0000.pkl missing"


def test_discover_routes_order_and_filter(tmp_path):
    root = tmp_path / "carla_leaderboard2"
    write_light_route(root, "noScenarios", "Town13_Rep0_2_route0", 3)
    write_light_route(root, "Accident", "Town12_Rep0_9_route0", 4)
    write_light_route(root, "Accident", "Town12_Rep0_1_route0", 5, results=FAILED)
    write_light_route(root, "Accident", "Town12_Rep0_5_route0", 2, results=None)
    (root / "data" / "Accident" / ".tmp-Town12_Rep0_7_route0").mkdir()  # in-progress write: ignored
    routes = discover_routes(root)
    assert [r.rel_path for r in routes] == [
        "data/Accident/Town12_Rep0_1_route0", "data/Accident/Town12_Rep0_5_route0",
        "data/Accident/Town12_Rep0_9_route0", "data/noScenarios/Town13_Rep0_2_route0"]
    assert [r.trainable for r in routes] == [False, False, True, True]
    assert [r.num_frames for r in routes] == [5, 2, 4, 3]
    assert routes[0].filter_reason == "status 'Failed - Agent crashed'"
    assert routes[1].filter_reason == "results.json missing"


def test_dataset_config_from_root(tmp_path):
    assert dataset_config_for_root(tmp_path / "data" / "carla_leaderboard2").name == "carla_leaderboard2"
    assert dataset_config_for_root(tmp_path / "elsewhere", name="carla_leaderboard2").image_width == 1152
    with pytest.raises(UnknownDatasetError, match=r"contains none of the known config names "
                                                  r"\(carla_leaderboard2\).*add a DatasetConfig"):
        dataset_config_for_root(tmp_path / "my_data")
    with pytest.raises(UnknownDatasetError, match="unknown dataset config 'nuscenes'; known configs: "
                                                  "carla_leaderboard2"):
        dataset_config_for_root(tmp_path, name="nuscenes")
    assert CONFIG.bev_height == 320 and CONFIG.bev_width == 384 and CONFIG.depth_width == 288


def test_a_16_bit_depth_png_is_refused_at_build_naming_the_file(hand_route):
    """LEAD's optional 16-bit depth decodes (read_depth gives uint16) but the shards store 8-bit depth: the
    build refuses it naming the file, instead of writing a member that cannot be decoded."""
    import cv2

    from leadio.preprocess import preprocess_frame

    route, _, _ = hand_route
    assert set(preprocess_frame(route, 0, CONFIG))  # the 8-bit route builds
    ok, png = cv2.imencode(".png", np.full((CONFIG.depth_height, CONFIG.depth_width), 40000, np.uint16))
    (route / "depth_perturbated" / "0000.png").write_bytes(png.tobytes())
    assert read_frame(route, 0, CONFIG, view="perturbated", modalities=["depth"])["depth"].dtype == np.uint16
    with pytest.raises(FrameReadError, match=r"frame 0000, file .*depth_perturbated/0000\.png: depth PNG is "
                                             r"uint16 \(LEAD's optional 16-bit depth"):
        preprocess_frame(route, 0, CONFIG)


def test_meta_values_of_leads_types_pass_and_wrong_ones_name_the_key():
    """What LEAD writes (numpy scalars and arrays, lists, None futures near a route end) passes; a wrong type or
    a non-finite value is named by key, with what was expected (docs/format.md §2)."""
    from lead_fixtures import straight_meta

    from leadio.format.metas import meta_problems

    meta = straight_meta(3, 10)
    assert meta_problems(meta) == []
    lead_types = {**meta, "speed": np.float32(3.5), "target_speed": np.float64(4.0), "theta": np.array(0.1),
                  "brake": np.bool_(True), "pos_global": np.array([1.0, 2.0, 0.5]), "future_positions": None,
                  "future_yaws": None, "next_commands_3.25": [np.int64(4), 4], "is_intersection": np.bool_(False),
                  "changed_route": 0, "current_active_scenario_type": "Accident"}
    assert meta_problems(lead_types) == []
    bad = {**meta, "speed": "4.0", "theta": np.nan, "brake": 0.5, "route": np.zeros((50, 3)), "town": 12,
           "next_target_points_3.25": [[1.0, np.inf, 0.0]], "next_commands_3.25": [4.5], "light_hazard": "False",
           "future_yaws": np.array([[0.0]]), "perturbation_rotation": None}
    problems = meta_problems(bad)
    assert [p.split("'")[1] for p in problems] == [
        "theta", "speed", "brake", "route", "future_yaws", "perturbation_rotation", "town",
        "next_target_points_3.25", "next_commands_3.25", "light_hazard"]
    assert "key 'route' has shape (50, 3); expected a float array (N, 2)" in problems[3]
    assert "key 'next_target_points_3.25' point 0 holds inf at entry 1" in problems[7]
