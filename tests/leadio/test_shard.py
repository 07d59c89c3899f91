"""leadio.shard: samples equal the raw frames, crash-safe and partitioned builds, verify, staleness, readers."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import laspy
import numpy as np
import pytest

from leadio import schema
from leadio.decode.cpu import decode_member
from leadio.format.config import DATASET_CONFIGS
from leadio.format.pickles import load_lzma_pickle
from leadio.schema import SCENARIO_TYPES, TARGET_RECORD_BYTES, VIEW_SUFFIX, member_name, unpack_targets
from leadio.shard.build import build_shard_set, merge_shard_set, shard_set_dir
from leadio.shard.shardset import StaleShardSetError, open_shard_set
from leadio.shard.verify import verify_shard_set

CONFIG = DATASET_CONFIGS["carla_leaderboard2"]


def _set_fingerprint(set_dir: Path) -> tuple:
    """What makes two builds 'the same set': every shard's path, size and hash, and the sample keys."""
    manifest = json.loads((set_dir / "manifest.json").read_text())
    ss = open_shard_set(set_dir, check_routes=False)
    shards = [(s["path"], s["bytes"], s["xxh3_128"], s["samples"]) for s in manifest["shards"]]
    return shards, list(ss.catalog["sample_key"])


@pytest.fixture(scope="module")
def built(tmp_path_factory, synth_root_template) -> Path:
    root = tmp_path_factory.mktemp("built") / "data" / "carla_leaderboard2"
    shutil.copytree(synth_root_template, root)
    report = build_shard_set(root, "full_pretrain", workers=2, samples_per_shard=5, progress=False)
    assert report.merged and report.shards_written == report.shards_total
    return report.set_dir


def _independent_histogram(points: np.ndarray, t: float, r_deg: float, perturbated: bool) -> np.ndarray:
    xy = points[:, :2].astype(np.float64)
    if perturbated:
        r = np.deg2rad(r_deg)
        c, s = np.cos(r), np.sin(r)
        shifted = xy - np.array([0.0, t])
        xy = np.stack([c * shifted[:, 0] + s * shifted[:, 1], -s * shifted[:, 0] + c * shifted[:, 1]], 1)
    keep = (points[:, 2] >= -4) & (points[:, 2] <= 10)
    hist, _ = np.histogramdd(xy[keep], bins=(np.linspace(-32, 64, 385), np.linspace(-40, 40, 321)))
    return np.minimum(hist, 5).T[None].astype(np.uint8)


def test_sample_from_shard_equals_raw_frame(built):
    ss = open_shard_set(built)
    root = built.parent.parent
    from leadio.buckets.builders import load_or_build

    assert len(ss) == len(load_or_build(root, "full_pretrain")[0]) > 0
    for row in (0, len(ss) // 2, len(ss) - 1):
        route, frame = str(ss.catalog["route"][row]), int(ss.catalog["frame"][row])
        rdir = root / route
        meta = load_lzma_pickle(rdir / "metas" / f"{frame:04d}.pkl")
        las = laspy.read(rdir / "lidar" / f"{frame:04d}.laz")
        points = np.stack([las.x, las.y, las.z], 1)
        t, r = float(meta["perturbation_translation"]), float(meta["perturbation_rotation"])
        for view, suffix in (("normal", ""), ("perturbated", "_perturbated")):
            v = VIEW_SUFFIX[view]
            # rgb: the original JPEG bytes, never re-encoded
            raw_jpeg = (rdir / f"rgb{suffix}" / f"{frame:04d}.jpg").read_bytes()
            assert ss.read_member_bytes(row, f"rgb_{v}.jpg") == raw_jpeg
            sample = {name: decode_member(m, ss.read_member_bytes(row, member_name(m, view)))
                      for name, m in ss.layout.items()}
            np.testing.assert_array_equal(sample["lidar"], _independent_histogram(points, t, r, view != "normal"))
            import cv2
            sem = cv2.imread(str(rdir / f"semantics{suffix}" / f"{frame:04d}.png"), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(sample["semantic"], sem)
            depth = cv2.imread(str(rdir / f"depth{suffix}" / f"{frame:04d}.png"), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(sample["depth"], depth)
            assert sample["bev"].shape == (320, 384) and sample["radar"].shape == (300, 5)
            # waypoints: future_positions[5k] with P, by the formula
            targets = sample["targets"]
            n = TARGET_RECORD_BYTES // 4  # then has_targets, num_boxes, ... (schema.EXTRA_TARGETS)
            has = targets[n]
            fut = np.asarray(meta["future_positions"], np.float64)
            if len(fut) >= 41:
                assert has == 1.0
                wp = fut[5:41:5, :2]
                if view != "normal":
                    rad = np.deg2rad(r)
                    d = wp - np.array([0.0, t])
                    wp = np.stack([np.cos(rad) * d[:, 0] + np.sin(rad) * d[:, 1],
                                   -np.sin(rad) * d[:, 0] + np.cos(rad) * d[:, 1]], 1)
                named = unpack_targets(targets[:n])
                np.testing.assert_allclose(named["waypoints"], wp, atol=1e-5)
                np.testing.assert_allclose(named["speed"], meta["speed"], atol=1e-5)
                assert named["brake"] == float(bool(meta["brake"]))
                np.testing.assert_allclose(named["target_speed"], meta["target_speed"], atol=1e-5)
            else:
                assert has == 0.0 and np.isnan(targets[:16]).all()  # waypoints and yaws; the rest is real
                assert np.isfinite(targets[44:n]).all()  # target points, commands, speeds, brake
            kind = meta["current_active_scenario_type"] or meta["previous_active_scenario_type"] or "NA"
            assert targets[n + 2] == SCENARIO_TYPES.index(kind) and targets[n + 3] == np.float32(t)


def test_shard_is_plain_tar_webdataset_and_dali(built):
    ss = open_shard_set(built)
    shard0 = ss.shard_path(0)
    keys0 = [k for k, s in zip(ss.catalog["sample_key"], ss.catalog["shard"], strict=True) if s == 0]
    with tarfile.open(shard0) as tar:
        names = tar.getnames()
    assert names[:len(ss.members)] == [f"{keys0[0]}.{m}" for m in ss.members]
    import webdataset as wds

    seen = [s["__key__"] for s in wds.WebDataset(str(shard0), shardshuffle=False)]
    assert seen == keys0
    sample = next(iter(wds.WebDataset(str(shard0), shardshuffle=False)))
    assert sample["rgb_n.jpg"] == ss.read_member_bytes(0, "rgb_n.jpg")

    from nvidia.dali import fn, pipeline_def

    @pipeline_def(batch_size=len(keys0), num_threads=1, device_id=None)
    def pipe():
        jpg, info = fn.readers.webdataset(paths=[str(shard0)], index_paths=[str(shard0.with_suffix(".idx"))],
                                          ext=["rgb_n.jpg", "json"], missing_component_behavior="error")
        return fn.decoders.image(jpg, device="cpu"), info

    p = pipe()
    p.build()
    images, infos = p.run()
    dali_keys = []
    for i in range(len(keys0)):
        info = json.loads(bytes(np.asarray(infos.at(i))).decode())
        dali_keys.append(f"{info['route'].removeprefix('data/')}/{info['frame']:04d}")
        assert np.asarray(images.at(i)).shape == (384, 1152, 3)
    assert dali_keys == keys0


def _run_build(root: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "leadio.shard", "--root", str(root), "--workers", "1",
                             "--samples-per-shard", "5", "--quiet", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_kill9_then_rerun_equals_uninterrupted_build(built, synth_root):
    proc = _run_build(synth_root)
    set_dir = shard_set_dir(synth_root, "full_pretrain", CONFIG)
    deadline = time.time() + 120
    while time.time() < deadline and not list(set_dir.glob("all/000001.tar")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (set_dir / "manifest.json").exists()
    rerun = _run_build(synth_root)
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out.decode()
    assert "already complete" in out.decode()
    assert not list(set_dir.glob("all/.*.tmp-*"))
    assert _set_fingerprint(set_dir) == _set_fingerprint(built)


def test_parts_then_merge_equal_one_build(built, synth_root):
    for i in range(3):
        proc = _run_build(synth_root, "--part", f"{i}/3")
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out.decode()
    set_dir = shard_set_dir(synth_root, "full_pretrain", CONFIG)
    assert not (set_dir / "manifest.json").exists()
    proc = _run_build(synth_root, "--merge")
    assert proc.wait(timeout=120) == 0
    assert _set_fingerprint(set_dir) == _set_fingerprint(built)


def test_merge_refuses_missing_parts(synth_root):
    report = build_shard_set(synth_root, workers=1, samples_per_shard=5, part="0/3", progress=False)
    with pytest.raises(ValueError, match=r"cannot merge .*: \d+ of \d+ shards are not complete"):
        merge_shard_set(synth_root, report.set_dir)


def _copy_set(built: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy" / built.name
    shutil.copytree(built, dst)
    return dst


def test_verify_reports_flipped_byte_and_truncation(built, tmp_path):
    set_dir = _copy_set(built, tmp_path)
    ss = open_shard_set(set_dir, check_routes=False)
    assert verify_shard_set(ss, deep=True, progress=False).ok
    row = 7
    shard, key = int(ss.catalog["shard"][row]), ss.catalog["sample_key"][row]
    col = ss.members.index("semantic_n.lz4")
    offset = int(ss.catalog["member_offset"][row, col]) + 10
    path = ss.shard_path(shard)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    report = verify_shard_set(ss, progress=False)
    rel = ss.manifest["shards"][shard]["path"]
    assert not report.ok
    assert f"shard {rel}: checksum mismatch (xxh3-128)" in report.problems
    assert (f"shard {rel}, sample {key}: content differs from its recorded hash (member semantic_n.lz4)"
            in report.problems)
    other = (shard + 1) % len(ss.manifest["shards"])
    other_path = ss.shard_path(other)
    other_rows = np.flatnonzero(ss.catalog["shard"] == other)
    cut = int(ss.catalog["member_offset"][other_rows[-1], 0])
    with open(other_path, "r+b") as f:
        f.truncate(cut)
    report = verify_shard_set(ss, progress=False)
    orel = ss.manifest["shards"][other]["path"]
    assert any(p.startswith(f"shard {orel}: {cut} bytes, manifest says") and "(truncated)" in p
               for p in report.problems)
    last_key = ss.catalog["sample_key"][other_rows[-1]]
    assert f"shard {orel}, sample {last_key}: data missing past the end of the file" in report.problems
    cli = subprocess.run([sys.executable, "-m", "leadio.shard", "verify", str(set_dir)], capture_output=True,
                         text=True)
    assert cli.returncode == 1 and f"sample {key}" in cli.stdout


def test_changed_pipeline_parameter_makes_the_set_stale(built, monkeypatch):
    monkeypatch.setattr(schema, "RADAR_POINTS_PER_SENSOR", 50)
    with pytest.raises(StaleShardSetError, match=r"is stale: built by preprocessing pipeline [0-9a-f]{12} .*"
                                                 r"changed: members, radar_points_per_sensor; rebuild it with "
                                                 r"`python -m leadio.shard --root .* --collection full_pretrain`"):
        open_shard_set(built)


def test_the_quick_route_check_lists_each_routes_frames_once(built, monkeypatch):
    import leadio.format.routes as routes_mod

    listed: list[str] = []
    real = routes_mod.os.listdir

    def listdir(path):
        if Path(path).name == "bboxes":
            listed.append(str(Path(path).parent))
        return real(path)

    monkeypatch.setattr(routes_mod.os, "listdir", listdir)
    ss = open_shard_set(built)
    root = built.parent.parent
    rel = [str(Path(p).relative_to(root)) for p in listed]
    assert len(rel) == len(set(rel))  # each route's frames listed once (it was twice for the set's routes)
    assert ss.manifest["routes"] and set(ss.manifest["routes"]) <= set(rel)
    assert set(rel) == {str(p.relative_to(root)) for p in (root / "data").glob("*/*") if p.is_dir()}


def test_an_opened_set_reads_only_the_loaders_columns_until_others_are_used(built):
    import pickle

    from leadio.catalog_store import LazyColumns, load_catalog
    from leadio.shard.shardset import READ_COLUMNS

    eager = load_catalog(built / "catalog.zarr")
    cat = open_shard_set(built).catalog
    assert isinstance(cat.columns, LazyColumns) and sorted(cat.columns) == sorted(eager.columns)
    assert set(cat.columns._read) == set(READ_COLUMNS)
    for name in eager.columns:  # every column, on first use, equals the eager load
        a, b = cat[name], eager[name]
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name
    copy = pickle.loads(pickle.dumps(open_shard_set(built).catalog.columns))  # noqa: S301  (our own object)
    assert set(copy._read) == set(READ_COLUMNS) and np.array_equal(copy["town"], eager["town"])
    with pytest.raises(KeyError):
        cat["no_such_column"]


def test_a_damaged_column_read_later_names_the_array_and_the_rebuild(built, tmp_path):
    from leadio.catalog_store import CatalogError

    root = tmp_path / "data" / "carla_leaderboard2"
    shutil.copytree(built.parent.parent, root)
    set_dir = root / "shards" / built.name
    (set_dir / "catalog.zarr" / "town" / "c" / "0").write_bytes(b"\x28\xb5\x2f\xfd garbage")
    ss = open_shard_set(set_dir)  # a column the loader does not read is not read at open
    with pytest.raises(CatalogError, match=r"catalog .*catalog\.zarr: array town is damaged .*; rerun "
                                           r"`python -m leadio\.shard .*\(it rewrites the set's catalog\)"):
        ss.catalog["town"]


def test_changed_routes_make_the_set_stale(built, tmp_path):
    root = tmp_path / "data" / "carla_leaderboard2"
    shutil.copytree(built.parent.parent, root)
    set_dir = root / "shards" / built.name
    open_shard_set(set_dir)  # a copied root is still current
    victim = sorted((root / "data").glob("*/*"))[0]
    rel = f"data/{victim.parent.name}/{victim.name}"
    (victim / "depth" / "0000.png").write_bytes(b"different size")  # frame 0 is in no sample (skip_first=1)
    open_shard_set(set_dir, check_routes="full")
    (victim / "depth" / "0001.png").write_bytes(b"different size")
    open_shard_set(set_dir)  # the quick check (every open, every rank) looks at frame counts only
    with pytest.raises(StaleShardSetError, match=rf"route {rel} changed on disk \(file contents\);"):
        open_shard_set(set_dir, check_routes="full")
    last = sorted((victim / "bboxes").iterdir())[-1]
    last.unlink()
    with pytest.raises(StaleShardSetError, match=rf"route {rel} changed on disk \(\d+ frames, built with \d+\)"):
        open_shard_set(set_dir)
    shutil.rmtree(victim)
    with pytest.raises(StaleShardSetError, match="was removed"):
        open_shard_set(set_dir)
