"""leadio.inspect (PNG, raw vs shard, gallery in a browser), leadio.report (counts vs catalog and plan) and the
benchmark plot's caveats."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from leadio.buckets.builders import load_or_build
from leadio.catalog import build_catalog
from leadio.catalog_store import load_catalog
from leadio.inspect import (
    IMAGE_SIZE,
    PANELS,
    caption_lines,
    from_raw,
    from_shard_set,
    render_array,
    render_png,
    write_gallery,
)
from leadio.inspect.__main__ import main as inspect_main
from leadio.inspect.gallery import browser_dom, browser_screenshot, find_browser
from leadio.plan import global_sequence
from leadio.report import build_report, format_report
from leadio.report import main as report_main
from leadio.shard.build import build_shard_set
from leadio.shard.shardset import open_shard_set

BY_TOWN = {"builder": "property", "name": "test_by_town", "group_by": ["town"],
           "rates": {"town=Town13": {"0": 2.0, "2": 0.5}, "*": 0.3}}


@pytest.fixture(scope="module")
def built(synth_root_template, tmp_path_factory):
    """A copy of the template root (4 routes, 1 dropped) with catalog and the full_pretrain shard set."""
    root = tmp_path_factory.mktemp("inspect") / "data" / "carla_leaderboard2"
    shutil.copytree(synth_root_template, root)
    build_catalog(root, progress=False)
    report = build_shard_set(root, "full_pretrain", workers=1, progress=False)
    return root, open_shard_set(report.set_dir)


def _rows(ss, has_targets: bool) -> list[int]:
    return [int(i) for i in np.flatnonzero(ss.catalog["has_waypoints"] == has_targets)]


def _png(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.size == IMAGE_SIZE
    return np.asarray(image.convert("RGB"))


def _crop(image: np.ndarray, panel: str) -> np.ndarray:
    x0, y0, x1, y1 = PANELS[panel]
    return image[y0:y1, x0:x1]


def test_inspect_png_has_its_size_and_every_panel_shows_data(built):
    _, ss = built
    sample = from_shard_set(ss, index=_rows(ss, True)[3])
    image = _png(render_png(sample, ss.config))
    blank = dataclasses.replace(sample, arrays={**sample.arrays, **{
        k: np.zeros_like(sample.arrays[k]) for k in ("rgb", "semantic", "depth", "lidar", "bev_semantic")},
        "boxes": sample.arrays["boxes"][:0]})
    empty = render_array(blank, ss.config)
    for panel in PANELS:
        crop = _crop(image, panel).reshape(-1, 3)
        colours, counts = np.unique(crop, axis=0, return_counts=True)
        assert len(colours) >= 8 and 1 - counts.max() / len(crop) > 0.03, f"panel {panel} is blank"
        if panel != "caption":  # the same caption; the data panels must differ from a sample without data
            changed = (_crop(image, panel) != _crop(empty, panel)).any(axis=2).mean()
            assert changed > 0.02, f"panel {panel} does not show the sample's data ({changed:.3f} changed)"


@pytest.mark.parametrize("view", ["normal", "perturbated"])
def test_inspect_from_shard_sample_and_raw_frame_agree(built, view):
    root, ss = built
    for row in (_rows(ss, True)[0], _rows(ss, False)[0]):
        shard = from_shard_set(ss, key=str(ss.catalog["sample_key"][row]), view=view)
        raw = from_raw(root, shard.route, shard.frame, view=view)
        assert (raw.key, raw.route, raw.frame, raw.num_frames, raw.info) == \
               (shard.key, shard.route, shard.frame, shard.num_frames, shard.info)
        assert raw.arrays.keys() == shard.arrays.keys()
        for k in shard.arrays:
            assert np.array_equal(raw.arrays[k], shard.arrays[k], equal_nan=True), k
        # the drawings agree pixel for pixel once the source line and bucket (known only to the set) match
        raw = dataclasses.replace(raw, bucket=shard.bucket, source=shard.source)
        assert np.array_equal(render_array(raw, ss.config), render_array(shard, ss.config))


def test_caption_says_when_a_frame_has_no_planning_targets(built):
    _, ss = built
    without = from_shard_set(ss, index=_rows(ss, False)[0])
    with_ = from_shard_set(ss, index=_rows(ss, True)[0])
    assert not without.has_targets and with_.has_targets
    assert any(t.startswith("NO PLANNING TARGETS") for t, _ in caption_lines(without))
    assert not any(t.startswith("NO PLANNING TARGETS") for t, _ in caption_lines(with_))
    assert f"command {with_.command()}" in caption_lines(with_)[1][0] and with_.command() != "-"


def test_inspect_cli_writes_png_and_prints_one_line_errors(built, tmp_path, capsys):
    root, ss = built
    out = tmp_path / "one.png"
    assert inspect_main(["--root", str(root), "--index", "2", "--out", str(out)]) == 0
    assert Image.open(out).size == IMAGE_SIZE
    route, n = str(ss.catalog["route"][0]), int(ss.catalog["route_num_frames"][0])
    no_sets = tmp_path / "empty" / "data" / "carla_leaderboard2"
    (no_sets / "data").mkdir(parents=True)
    capsys.readouterr()
    cases = [
        (["--root", str(root), "--key", "Nope/Route/0001"], "sample key 'Nope/Route/0001' is not in shard set"),
        (["--root", str(root), "--index", "9999"], f"index 9999 is outside shard set {ss.path}: it has {len(ss)}"),
        (["--root", str(root), "--route", "NoSuchRoute", "--frame", "0"], "route 'NoSuchRoute' not found under"),
        (["--root", str(root), "--route", route, "--frame", str(n)],
         f"frame {n} is out of range: route {route} has {n} frames (0..{n - 1})"),
        (["--root", str(no_sets), "--collection", "full_posttrain"], "no shard set"),
        (["--root", str(root), "--route", route], f"--route {route} needs --frame N"),
    ]
    for argv, expected in cases:
        assert inspect_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("python -m leadio.inspect: error: ") and expected in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit):
        inspect_main(["--help"])
    assert "(default: full_pretrain)" in capsys.readouterr().out


# issue 22, item 12: training plans full_posttrain over the pretrain set, so inspect shows that set
def test_inspect_of_a_collection_without_its_own_set_shows_the_set_training_plans_it_over(built, tmp_path, capsys):
    root, ss = built
    assert not list((root / "shards").glob("full_posttrain-*"))
    out = tmp_path / "post.png"
    assert inspect_main(["--root", str(root), "--collection", "full_posttrain", "--index", "2", "--out", str(out)]) == 0
    assert Image.open(out).size == IMAGE_SIZE
    captured = capsys.readouterr()
    assert captured.out == f"{out}\n"
    assert captured.err == (f"note: collection 'full_posttrain' has no shard set of its own; showing {ss.path.name}, "
                            f"the set training plans it over (its rows, keys and buckets)\n")


def test_gallery_filters_by_bucket_and_renders_in_a_browser(built, tmp_path):
    _, ss = built
    report = write_gallery(ss, tmp_path / "gallery", samples=3, progress=False)
    page = report.index.read_text()
    assert len(report.images) == 3 and all(p.exists() for p in report.images)
    assert page.count('<figure data-bucket="all"') == 3 and 'data-bucket="all">all (3)</button>' in page
    if find_browser() is None:
        pytest.skip("no headless Chromium installed (apt-get install chromium): the HTML was checked, not rendered")
    shot = np.asarray(Image.open(browser_screenshot(report.index, tmp_path / "shot.png")).convert("RGB"))
    colours = len(np.unique(shot.reshape(-1, 3), axis=0))
    dark = (shot.max(axis=2) < 40).mean()  # the LiDAR/BEV panels of the loaded PNGs; broken images stay white
    assert colours > 500 and dark > 0.02, (colours, dark)
    shown = re.search(r'<span id="count">([^<]*)</span>', browser_dom(report.index, fragment="bucket=all"))
    hidden = re.search(r'<span id="count">([^<]*)</span>', browser_dom(report.index, fragment="bucket=other"))
    assert (shown.group(1), hidden.group(1)) == ("3 of 3 shown", "0 of 3 shown")


def test_report_counts_equal_the_catalog_and_the_plan(built):
    root, _ = built
    doc = build_report(root, ["full_pretrain", BY_TOWN], epochs=3)
    catalog = load_catalog(root)
    assert doc["catalog"]["frames"] == len(catalog)
    for col in ("scenario", "town", "weather"):
        assert {k: v["frames"] for k, v in doc["frames_by"][col].items()} == dict(Counter(map(str, catalog[col])))
    has = catalog["has_waypoints"].astype(bool)
    for spec, got in zip(["full_pretrain", BY_TOWN], doc["collections"], strict=True):
        coll, _ = load_or_build(root, spec)
        bucket_rows = coll.rows(catalog.route_rows())
        rows = np.unique(np.concatenate(bucket_rows))
        assert got["name"] == coll.name and got["frames"] == len(rows)
        for col in ("scenario", "town", "weather"):
            counts = Counter(map(str, catalog[col][rows]))
            assert {k: v[coll.name] for k, v in doc["frames_by"][col].items()} == \
                   {k: counts.get(k, 0) for k in doc["frames_by"][col]}
        assert [b["frames"] for b in got["buckets"]] == [len(b) for b in coll.buckets]
        assert got["no_targets"]["frames"] == int((~has[rows]).sum()) > 0
        assert got["no_targets"]["checked"] == got["no_targets"]["frames"]
        assert [r["reason"] for r in got["no_targets"]["reasons"]] == \
               ["fewer than 41 future positions: the frame is too close to the end of its route"]
        for e in range(4):
            seq, _ = global_sequence(bucket_rows, coll.rates_at(e), np.zeros(len(catalog), np.int64), epoch=e,
                                     seed=0)
            assert got["planned"][e] == len(seq)
            assert [b["planned"][e] for b in got["buckets"]] == [int(np.isin(seq, r).sum()) for r in bucket_rows]
    by_town = doc["collections"][1]
    assert [b["rates"] for b in by_town["buckets"] if b["name"] == "town=Town13"] == [[2.0, 2.0, 0.5, 0.5]]
    assert "rate e0-1" in format_report(doc) and "rate e2-3" in format_report(doc)


def test_report_names_each_dropped_route_with_its_reason(built, tmp_path, capsys):
    root, _ = built
    routes = load_catalog(root).routes
    dropped = {str(p): str(r) for p, r in zip(routes["rel_path"], routes["filter_reason"], strict=True) if r}
    assert dropped  # the template holds a failed route
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    assert report_main(["--root", str(root), "--json", str(out_json), "--png", str(out_png)]) == 0
    text = capsys.readouterr().out
    for route, reason in dropped.items():
        assert re.search(rf"^{re.escape(route)}\s+\d+\s+{re.escape(reason)}$", text, re.M), (route, reason)
    doc = json.loads(out_json.read_text())
    assert {r["route"]: r["reason"] for r in doc["routes"]["dropped"]} == dropped
    assert doc["catalog"]["routes_kept"] + len(dropped) == len(routes["rel_path"])
    assert Image.open(out_png).size[0] > 1000
    assert report_main(["--root", str(root), "--collection", "no_such_collection"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m leadio.report: error: unknown collection 'no_such_collection'")
    assert err.count("\n") == 1


# issue 22, item 12
def test_report_of_a_root_where_every_route_is_dropped_lists_why(synth_root_template, tmp_path, capsys):
    root = tmp_path / "data" / "carla_leaderboard2"
    shutil.copytree(synth_root_template, root, ignore=shutil.ignore_patterns("catalog.zarr", "buckets", "shards"))
    for results in sorted(root.glob("data/*/*/results.json")):
        doc = json.loads(results.read_text())
        results.write_text(json.dumps({**doc, "status": "Failed - Agent crashed"}))
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    assert report_main(["--root", str(root), "--json", str(out_json), "--png", str(out_png)]) == 0
    text = capsys.readouterr().out
    routes = sorted(p.relative_to(root).as_posix() for p in root.glob("data/*/*"))
    assert f"routes: {len(routes)} found, 0 kept, {len(routes)} dropped by LEAD's failed-route filter; no catalog, " \
           f"no collection: there is nothing to train on" in text
    for route in routes:
        assert re.search(rf"^{re.escape(route)}\s+\d+\s+status 'Failed - Agent crashed'$", text, re.M), route
    doc = json.loads(out_json.read_text())
    assert [r["route"] for r in doc["routes"]["dropped"]] == routes and doc["collections"] == []
    assert doc["routes"]["dropped_by_reason"] == {"status 'Failed - Agent crashed'": len(routes)}
    assert Image.open(out_png).size[0] > 1000 and not (root / "catalog.zarr").exists()


def test_benchmark_plot_caveats_and_png(tmp_path):
    from benchmarks.plot import caveats, plot_results

    rows = [{"loader": name, "workers": w, "samples_per_s": v, "notes": []}
            for name, w, v in (("leadio cpu", 1, 100.0), ("plain webdataset", 1, 50.0), ("leadio cpu", 2, 180.0),
                               ("plain webdataset", 2, 60.0))]
    doc = {"meta": {"shards": 1, "workers": [1, 2], "samples": 32, "passes": 1, "cache_mode": "warm",
                    "cache_why": "not root", "cpu_count": 2, "cpu_model": "Test CPU"}, "rows": rows}
    assert caveats(doc) == [
        "a set of only 1 shard for up to 2 worker(s): plain webdataset, which hands whole shards to workers, "
        "cannot use them all",
        "warm page cache (not root): reads cost little",
        "only 32 samples per pass: start-up costs weigh in",
        "one timed pass (no median)",
    ]
    assert caveats({"meta": {"shards": 8, "workers": [2], "samples": 256, "passes": 3, "cache_mode": "cold"},
                    "rows": rows}) == []
    path = plot_results(doc, tmp_path / "plot.png", date="2026-01-02")
    assert Image.open(path).size == (1320, 672)
