"""benchmarks.control_plane kept honest without timing: the fabricated roots are LEAD roots leadio accepts, every
step of the harness reports a time and a peak RSS, and the growth fit is exact on synthetic numbers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `benchmarks` is a folder of the repo, not installed

from benchmarks.control_plane.bench import BUDGETS, LABELS, ORDER, Options, markdown, run, summarise
from benchmarks.control_plane.fabricate import fabricate_root, route_plan
from benchmarks.control_plane.fit import crossing, exponent, last_exponent, project
from benchmarks.control_plane.reference import full_bucket_build, property_bucket_build
from benchmarks.control_plane.steps import STEPS
from leadio.catalog import build_catalog
from leadio.catalog_store import load_catalog
from leadio.format.frame import read_boxes, read_meta
from leadio.format.routes import FRAME_FOLDERS, discover_routes

SUBSTEPS = [s for step in ORDER for s in STEPS[step][0]]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cp") / "carla_leaderboard2"
    fab = fabricate_root(root, 60, frames_per_route=20, workers=1, progress=False)
    assert (fab.frames, fab.routes) == (60, 3)
    return root


def test_route_plan_sums_to_the_frames():
    assert route_plan(1000, 100) == [100] * 10
    assert route_plan(250, 100) == [125, 125]
    assert route_plan(20, 100) == [20]
    assert sum(route_plan(100_001, 100)) == 100_001
    with pytest.raises(ValueError, match="frames >= 1"):
        route_plan(0, 100)


def test_the_fabricated_root_passes_leadios_catalog_scan(root):
    routes = discover_routes(root)
    assert len(routes) == 3 and all(r.trainable and r.num_frames == 20 for r in routes)
    assert len({r.scenario for r in routes}) == 3  # spread over LEAD's scenario folders
    report = build_catalog(root, workers=1, progress=False)
    assert (report.rows, report.routes_found, report.routes_trainable) == (60, 3, 3)
    cat = load_catalog(root)
    assert sorted(set(cat["route"])) == sorted(r.rel_path for r in routes)
    assert cat["has_waypoints"].sum() >= 30  # the frames near a route's end have no 2 s of future
    assert len(set(np.round(cat["speed"], 3))) > 20  # varied values, not one frame repeated
    route = root / routes[0].rel_path
    assert sorted(p.name for p in route.iterdir() if p.is_dir()) == sorted(FRAME_FOLDERS)
    meta, boxes = read_meta(route, 5), read_boxes(route, 5)  # the checked readers accept them
    assert meta["future_positions"].shape[1] == 3 and boxes[0]["class"] == "ego_car"
    assert any(b["class"] in ("car", "walker") and "future_positions" in b for b in boxes)


def test_the_reference_builds_count_the_bucket_frames(root, tmp_path):
    assert full_bucket_build(root, tmp_path) == 3 * 18  # skip 1 first, 1 last frame per route
    assert (tmp_path / "full_pretrain_buckets.gz").stat().st_size > 0
    assert property_bucket_build(root, tmp_path) == 3 * 18


def test_the_exponent_fit_is_exact_on_a_power_law():
    ns = [1e3, 1e4, 1e5]
    ys = [3.0 * n**1.5 for n in ns]
    assert exponent(ns, ys) == pytest.approx(1.5, abs=1e-12)
    assert last_exponent(ns, ys) == pytest.approx(1.5, abs=1e-12)
    assert project(ns, ys, 1e6) == pytest.approx(3.0 * 1e9, rel=1e-12)
    assert crossing(ns, ys, 3.0 * 1e9) == pytest.approx(1e6, rel=1e-9)
    assert exponent([1e3, 1e4], [5.0, 5.0]) == 0.0
    assert exponent([1e3], [1.0]) is None and project([1e3], [1.0], 1e6) is None


def test_the_projection_keeps_a_fixed_base_plus_a_per_frame_cost():
    ns = [1e3, 1e4, 1e5]
    ys = [200.0 + 0.001 * n for n in ns]  # MiB: a base plus a per-frame cost; a power law underestimates it
    assert project(ns, ys, 1e6) == pytest.approx(200.0 + 1000.0, rel=1e-12)
    assert crossing(ns, ys, 2200.0) == pytest.approx(2e6, rel=1e-9)
    assert crossing(ns, ys, 100.0) is None  # already above the budget


@pytest.fixture(scope="module")
def doc(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("cp-run")
    opts = Options(frames=[20, 60], out=tmp / "out", scratch=tmp / "scratch", frames_per_route=20, world_size=1,
                   batch_size=2, fabricate_workers=1, shard_workers=1, progress=False, command="test")
    doc = run(opts)
    assert not (tmp / "scratch" / "frames-20").exists()  # roots removed after their steps
    return doc | {"out": str(tmp / "out")}


def test_every_step_reports_a_time_and_a_peak_rss(doc):
    assert [s["frames"] for s in doc["sizes"]] == [20, 60]
    assert [s["routes"] for s in doc["sizes"]] == [1, 3]
    for size in doc["sizes"]:
        assert list(size["steps"]) == SUBSTEPS
        for name, r in size["steps"].items():
            assert r["seconds"] >= 0 and r["process_seconds"] >= r["seconds"], name
            assert r["peak_rss_mib"] > 0 and r["process_peak_rss_mib"] > 0, name
            assert r["peak_rss_mib"] >= r["base_rss_mib"] - 1, name
        assert size["steps"]["ref_full"]["frames"] == size["routes"] * 18
        assert size["steps"]["state_dict"]["samples"] == size["routes"] * 18


def test_the_projection_and_markdown_carry_every_step(doc):
    summary = doc["summary"]
    assert set(summary["fit"]) == set(SUBSTEPS) | {"open+plan"}
    for name, f in summary["fit"].items():
        assert f["time_exponent"] is not None and f["seconds_1m"] is not None, name
        assert f["rss_exponent"] is not None and f["peak_rss_mib_1m"] > 0, name
    assert set(summary["budgets"]) == set(BUDGETS)
    assert summary["first_to_hurt"] in BUDGETS
    on_disk = json.loads((Path(doc["out"]) / "control_plane.json").read_text())
    assert on_disk["summary"]["fit"].keys() == summary["fit"].keys()
    md = (Path(doc["out"]) / "control_plane.md").read_text()
    assert md == markdown(on_disk)
    for name in SUBSTEPS:
        assert md.count(LABELS[name]) >= 2, name  # in the measured table and the projection table
    assert "| 20 frames: s | MiB | 60 frames: s | MiB |" in md and "First to hurt" in md
    assert summarise(doc["sizes"])["fit"]["open+plan"]["seconds_1m"] == summary["fit"]["open+plan"]["seconds_1m"]
