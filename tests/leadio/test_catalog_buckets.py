"""leadio.catalog and leadio.buckets on hand-written routes: rows, rescans, membership, skips, staleness."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from lead_fixtures import FAILED, write_light_route, write_lzma_pickle

from leadio.buckets.builders import load_or_build
from leadio.buckets.collection import Bucket, BucketCollection, BucketFileError, rate_at
from leadio.catalog import build_catalog
from leadio.catalog_store import load_catalog
from leadio.format.errors import FrameReadError, RouteError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "data" / "carla_leaderboard2"
    write_light_route(root, "Accident", "Town12_Rep0_1_route0", 20, town="Town12", weather="ClearNoon")
    write_light_route(root, "Accident", "Town12_Rep0_2_route0", 12, results=FAILED)
    write_light_route(root, "noScenarios", "Town13_Rep0_3_route0", 10, town="Town13", weather="HardRainSunset",
                      speed=8.0, is_intersection=True)
    write_light_route(root, "noScenarios", "Town13_Rep0_4_route0", 5, town="Town13", weather="ClearNoon")
    return root


def test_catalog_rows_and_columns(root):
    report = build_catalog(root, workers=1, progress=False)
    assert report.rewritten and report.rows == 20 + 10 + 5 and report.routes_found == 4
    assert report.routes_trainable == 3
    g = zarr.open_group(root / "catalog.zarr", mode="r")  # plain zarr, no leadio
    assert g.attrs["format"] == "leadio-catalog"
    route = g["route"][:]
    assert list(route[:1]) == ["data/Accident/Town12_Rep0_1_route0"] and len(route) == 35
    assert list(g["frame"][:20]) == list(range(20))
    assert set(g["town"][20:35]) == {"Town13"} and g["weather"][20] == "HardRainSunset"
    np.testing.assert_allclose(g["speed"][20:30], 8.0)
    assert g["is_intersection"][20:30].all() and not g["is_intersection"][:20].any()
    # distance along the route: 4 m/s * 0.25 s per frame
    np.testing.assert_allclose(g["dist_from_start_m"][:20], np.arange(20) * 1.0, atol=1e-5)
    np.testing.assert_allclose(g["dist_to_end_m"][:20], 19.0 - np.arange(20), atol=1e-5)
    np.testing.assert_allclose(g["route_length_m"][0], 19.0)
    np.testing.assert_allclose(g["curvature"][:], 0.0, atol=1e-6)
    # waypoints every 5 ticks: straight ahead at 4 m/s -> x = 1, 2, ..., 8 m; none within 40 ticks of the end
    np.testing.assert_allclose(g["waypoints"][0, :, 0], np.arange(1, 9) * 1.0, atol=1e-5)
    assert g["has_waypoints"][:12].all() and not g["has_waypoints"][12:20].any()
    routes = g["routes"]
    assert list(routes["trainable"][:]) == [True, False, True, True]
    assert routes["filter_reason"][1] == "status 'Failed - Agent crashed'"
    assert list(routes["row_start"][:]) == [0, 20, 20, 30] and list(routes["row_stop"][:]) == [20, 20, 30, 35]


def test_catalog_rescan_is_noop_and_incremental(root):
    build_catalog(root, progress=False)
    mtime = (root / "catalog.zarr" / "zarr.json").stat().st_mtime_ns
    again = build_catalog(root, progress=False)
    assert not again.rewritten and again.routes_scanned == 0 and again.rows == 35
    assert (root / "catalog.zarr" / "zarr.json").stat().st_mtime_ns == mtime
    write_light_route(root, "noScenarios", "Town13_Rep0_5_route0", 6)
    third = build_catalog(root, workers=2, progress=False)
    assert third.rewritten and third.routes_scanned == 1 and third.routes_reused == 3 and third.rows == 41
    cat = load_catalog(root)
    assert cat.route_rows()["data/noScenarios/Town13_Rep0_5_route0"] == (35, 41)


def test_catalog_bad_route_raises_or_is_skipped_and_counted(root):
    bad = root / "data" / "noScenarios" / "Town13_Rep0_3_route0"
    (bad / "depth" / "0004.png").unlink()
    with pytest.raises(RouteError, match=r"Town13_Rep0_3_route0: depth/ does not match bboxes/: missing frames \[4\]"):
        build_catalog(root, progress=False)
    report = build_catalog(root, on_error="skip", progress=False)
    assert list(report.routes_skipped) == ["data/noScenarios/Town13_Rep0_3_route0"] and report.rows == 25
    assert "SKIPPED 1 bad routes" in report.summary()
    (bad / "depth" / "0004.png").touch()
    (bad / "metas" / "0002.pkl").write_bytes(b"\x00broken")
    with pytest.raises(FrameReadError, match=r"frame 0002, file .*metas/0002\.pkl: bad encoding"):
        build_catalog(root, workers=2, progress=False)


def _frames(collection: BucketCollection, bucket: int = 0) -> dict[str, list[int]]:
    return {r: f.tolist() for r, f in collection.buckets[bucket].members.items()}


def test_shipped_collections_membership_and_skips(root):
    pre, path = load_or_build(root, "full_pretrain")
    assert path == root / "buckets" / "full_pretrain_buckets.gz"
    assert _frames(pre) == {"data/Accident/Town12_Rep0_1_route0": list(range(1, 19)),
                            "data/noScenarios/Town13_Rep0_3_route0": list(range(1, 9)),
                            "data/noScenarios/Town13_Rep0_4_route0": [1, 2, 3]}
    assert pre.totals == {"total_routes": 4, "trainable_routes": 3, "all_frames": 47, "trainable_frames": 29}
    post, path = load_or_build(root, "full_posttrain")
    assert path.name == "full_posttrain_buckets_8_8_8_5.gz"
    # skip 8 first and 8 last: a 20-frame route keeps 8..11, a 10-frame route keeps nothing (8 < 10-8 is false)
    assert _frames(post) == {"data/Accident/Town12_Rep0_1_route0": [8, 9, 10, 11]}
    rows = post.rows(load_catalog(root).route_rows())
    assert rows[0].tolist() == [8, 9, 10, 11]
    assert pre.rates_at(0) == [1.0] and len(pre) == 29


def test_bucket_file_is_reused_checked_and_rebuilt(root, caplog):
    first, path = load_or_build(root, "full_pretrain")
    stamp = path.stat().st_mtime_ns
    again, _ = load_or_build(root, "full_pretrain")
    assert path.stat().st_mtime_ns == stamp and _frames(again) == _frames(first)
    write_light_route(root, "noScenarios", "Town13_Rep0_9_route0", 4)
    with caplog.at_level(logging.WARNING, logger="leadio.buckets.builders"):
        added, _ = load_or_build(root, "full_pretrain")
    assert "stale" in caplog.text and "1 added (data/noScenarios/Town13_Rep0_9_route0)" in caplog.text
    assert _frames(added)["data/noScenarios/Town13_Rep0_9_route0"] == [1, 2]
    caplog.clear()
    shutil.rmtree(root / "data" / "Accident" / "Town12_Rep0_1_route0")
    with caplog.at_level(logging.WARNING, logger="leadio.buckets.builders"):
        removed, _ = load_or_build(root, "full_pretrain")
    assert "1 removed (data/Accident/Town12_Rep0_1_route0)" in caplog.text
    assert "data/Accident/Town12_Rep0_1_route0" not in removed.buckets[0].members


def test_moved_root_still_loads_its_buckets(root, tmp_path, caplog):
    built, _ = load_or_build(root, "full_pretrain")
    moved = tmp_path / "elsewhere" / "carla_leaderboard2"
    shutil.copytree(root, moved)
    shutil.rmtree(root)
    with caplog.at_level(logging.WARNING):
        loaded, path = load_or_build(moved, "full_pretrain")
    assert path.parent == moved / "buckets" and caplog.text == ""
    assert _frames(loaded) == _frames(built)
    assert loaded.rows(load_catalog(moved).route_rows())[0].tolist() == built.rows(
        load_catalog(moved).route_rows())[0].tolist()


def test_property_collection_groups_and_rates(root, tmp_path, caplog):
    spec = {"name": "by_town_curv", "group_by": ["town", {"column": "speed", "bins": [6.0]}],
            "rates": {"town=Town13/*": {0: 2.0, 3: 0.5}, "*": 1.0}}
    col, path = load_or_build(root, spec)
    assert path.name == "by_town_curv_buckets.gz"
    assert [b.name for b in col.buckets] == ["town=Town12/speed=<6", "town=Town13/speed=<6", "town=Town13/speed=>=6"]
    assert [len(b) for b in col.buckets] == [18, 3, 8]
    assert col.rates_at(0) == [1.0, 2.0, 2.0] and col.rates_at(5) == [1.0, 0.5, 0.5]
    spec_file = tmp_path / "spec.json"
    spec_file.write_text('{"name": "by_town_curv", "group_by": ["town", {"column": "speed", "bins": [6.0]}],'
                         ' "rates": {"town=Town13/*": {"0": 2.0, "3": 0.5}, "*": 1.0}}')
    with caplog.at_level(logging.WARNING, logger="leadio.buckets.builders"):
        from_file, _ = load_or_build(root, spec_file)
    assert caplog.text == ""  # the stored file matches the spec: reused, not rebuilt
    assert [b.name for b in from_file.buckets] == [b.name for b in col.buckets]
    assert from_file.rates_at(3) == [1.0, 0.5, 0.5]


def test_rate_schedule_rules():
    assert rate_at({0: 1.0, 5: 0.0, 10: 2.5}, 4) == 1.0
    assert rate_at({0: 1.0, 5: 0.0, 10: 2.5}, 7) == 0.0 and rate_at({0: 1.0, 10: 2.5}, 99) == 2.5
    with pytest.raises(ValueError, match="must define epoch 0"):
        Bucket("b", {}, {3: 1.0})
    with pytest.raises(ValueError, match="finite and >= 0"):
        Bucket("b", {}, -1.0)


def test_unreadable_bucket_files_are_clear_errors(root):
    _, path = load_or_build(root, "full_pretrain")
    path.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(BucketFileError, match=r"cannot read bucket file .*full_pretrain_buckets\.gz"):
        load_or_build(root, "full_pretrain")
    write_lzma_pickle(path, {"buckets": []})  # LEAD's own format is refused, never unpickled
    with pytest.raises(BucketFileError, match="looks like LEAD's own lzma-pickled bucket file"):
        BucketCollection.load(path)
    rebuilt, _ = load_or_build(root, "full_pretrain", force_rebuild=True)
    assert len(rebuilt) == 29
