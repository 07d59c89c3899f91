"""Dirty raw data caught at build time (issue 22, items 6, 7 and part of 12): non-finite or mistyped meta
values, frames that do not decode or hold class ids the model has no class for, unreadable files, duplicate
frame files; and the build's command line: Ctrl-C, a no-op rerun, verify on a stale set, synth into a used root.

Each dirty frame is a `FrameReadError` (or `RouteError`) naming route, frame, file and what was expected, raised
by the catalog scan and by the shard build alike, and ``--skip-bad-routes`` leaves its route out, counted and
named. The data is the suite's own synthetic roots, edited in place.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import simplejpeg
from faultlib import REPO, SPS, build, diff, snapshot
from lead_fixtures import write_light_route, write_lzma_pickle

from leadio.catalog import build_catalog
from leadio.format.config import DATASET_CONFIGS
from leadio.format.errors import FrameReadError, RouteError
from leadio.format.pickles import load_lzma_pickle
from leadio.format.routes import discover_routes
from leadio.preprocess import preprocess_frame
from leadio.shard.build import build_shard_set
from leadio.shard.shardset import StaleShardSetError, open_shard_set

CONFIG = DATASET_CONFIGS["carla_leaderboard2"]
FRAME = 2  # of a 20-frame route: 61 future positions, so it has planning targets


def _kept(root: Path) -> list[str]:
    return [r.rel_path for r in discover_routes(root) if r.trainable]


def _edit_meta(root: Path, route: str, frame: int, key: str, value) -> None:
    path = root / route / "metas" / f"{frame:04d}.pkl"
    meta = load_lzma_pickle(path)
    meta[key] = value(meta[key]) if callable(value) else value
    write_lzma_pickle(path, meta)


def _set_dir(root: Path) -> Path:
    return next((root / "shards").glob("*/manifest.json")).parent


def _nan_at(index: int):
    def edit(array):
        array = np.array(array, copy=True)
        array[index] = np.nan
        return array
    return edit


# key, new value (or a function of the old one), what the error says about it
DIRTY_METAS = {
    "nan-speed": ("speed", math.nan, r"key 'speed' is nan; expected a finite number"),
    "inf-target-speed": ("target_speed", math.inf, r"key 'target_speed' is inf; expected a finite number"),
    "nan-pos-global": ("pos_global", _nan_at(0), r"key 'pos_global' holds nan at entry 0 .*expected \[x, y, z\]"),
    "nan-future-row": ("future_positions", _nan_at(10), r"key 'future_positions' holds nan at row 10"),
    "string-speed": ("speed", "fast", r"key 'speed' is 'fast' \(str\); expected a number"),
    "none-pos-global": ("pos_global", None, r"key 'pos_global' is None .*expected \[x, y, z\]"),
    "string-brake": ("brake", "False", r"key 'brake' is 'False' \(str\); expected a bool"),
}


@pytest.mark.parametrize("case", list(DIRTY_METAS))
def test_a_dirty_meta_value_is_a_frame_error_naming_route_frame_and_key_in_the_scan_and_the_build(case, synth_root):
    key, value, says = DIRTY_METAS[case]
    route = _kept(synth_root)[0]
    _edit_meta(synth_root, route, FRAME, key, value)
    where = rf"route {synth_root / route}, frame {FRAME:04d}, file .*{route}/metas/{FRAME:04d}\.pkl: meta {says}"
    with pytest.raises(FrameReadError, match=where):
        build_catalog(synth_root, progress=False)
    with pytest.raises(FrameReadError, match=where):
        preprocess_frame(synth_root / route, FRAME, CONFIG)
    with pytest.raises(FrameReadError, match=where):
        build_shard_set(synth_root, workers=1, samples_per_shard=16, progress=False)


def test_skip_bad_routes_leaves_out_every_dirty_route_counted_and_named(synth_root):
    kept = _kept(synth_root)
    _edit_meta(synth_root, kept[0], FRAME, "pos_global", None)  # was a raw IndexError
    _edit_meta(synth_root, kept[1], 5, "brake", "False")  # was stored as True
    report = build_shard_set(synth_root, workers=1, samples_per_shard=16, progress=False, on_error="skip")
    assert set(report.catalog_skipped) == set(kept[:2])
    summary = report.summary()
    assert "the catalog scan SKIPPED 2 more (--skip-bad-routes)" in summary
    assert "frame 0002" in summary and "key 'pos_global'" in summary and "key 'brake'" in summary
    ss = open_shard_set(_set_dir(synth_root))
    assert {str(r) for r in ss.catalog["route"]} == {kept[2]}
    assert set(ss.manifest["skipped_routes"]) >= set(kept[:2])


def test_skip_bad_routes_also_skips_the_route_whose_frame_sizes_the_shards(tiny_root):
    """Without --samples-per-shard the first sample is built to size the shards: a bad one is skipped too."""
    route = _kept(tiny_root)[0]
    path = tiny_root / route / "rgb" / "0001.jpg"  # the collection's first frame (LEAD skips frame 0)
    path.write_bytes(path.read_bytes()[:5000])
    report = build_shard_set(tiny_root, workers=1, progress=False, on_error="skip")
    assert list(report.skipped_routes) == [route] and "rgb/0001.jpg: JPEG is truncated" in report.summary()
    assert {str(r) for r in open_shard_set(_set_dir(tiny_root)).catalog["route"]} == set(_kept(tiny_root)[1:])


def _run_unprivileged(argv: list[str], **kw) -> subprocess.CompletedProcess:
    """Run ``argv`` so that file permissions apply (as root: without the capabilities that bypass them)."""
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: a chmod 000 file stays readable")
        argv = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO, **kw)


def test_a_permission_denied_file_is_a_route_error_and_skip_bad_routes_leaves_its_route_out(synth_root):
    kept = _kept(synth_root)
    jpeg = synth_root / kept[0] / "rgb" / "0004.jpg"  # read by the build only
    meta = synth_root / kept[1] / "metas" / "0006.pkl"  # read by the catalog scan too
    jpeg.chmod(0)
    meta.chmod(0)
    cmd = [sys.executable, "-m", "leadio.shard", "--root", str(synth_root), "--workers", "1", "--quiet",
           "--samples-per-shard", "16"]
    strict = _run_unprivileged(cmd)
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert f"{kept[1]}: metas/0006.pkl cannot be read (Permission denied)" in strict.stderr
    out = _run_unprivileged([*cmd, "--skip-bad-routes"])
    assert out.returncode == 0, out.stderr
    assert "SKIPPED 1 bad routes (--skip-bad-routes)" in out.stdout and "rgb/0004.jpg cannot be read" in out.stdout
    assert "the catalog scan SKIPPED 1 more" in out.stdout and "metas/0006.pkl cannot be read" in out.stdout
    jpeg.chmod(0o644)
    meta.chmod(0o644)
    used = {str(r) for r in open_shard_set(_set_dir(synth_root)).catalog["route"]}
    assert used == {kept[2]}


def _corrupt_scan(data: bytes) -> bytes:
    """``data`` with 200 bytes in the middle of its entropy-coded scan replaced: header, SOI and EOI intact."""
    start = data.index(b"\xff\xda") + 2 + int.from_bytes(data[data.index(b"\xff\xda") + 2:][:2], "big")
    rng = np.random.default_rng(0)
    for _ in range(20):
        bad = bytearray(data)
        middle = start + (len(data) - start) // 2
        bad[middle:middle + 200] = rng.integers(0, 255, 200, dtype=np.uint8).tobytes().replace(b"\xff", b"\x00")
        try:
            simplejpeg.decode_jpeg(bytes(bad), colorspace="RGB")
        except ValueError:
            return bytes(bad)
    raise AssertionError("no corruption that the decoder finds")


@pytest.mark.parametrize("folder", ["rgb", "rgb_perturbated"])
def test_a_jpeg_with_corrupt_scan_data_is_refused_at_build_naming_the_file(folder, tiny_root):
    route = _kept(tiny_root)[0]
    path = tiny_root / route / folder / "0003.jpg"
    bad = _corrupt_scan(path.read_bytes())
    assert bad.startswith(b"\xff\xd8") and bad.endswith(b"\xff\xd9")
    simplejpeg.decode_jpeg_header(bad)  # the header still reads
    path.write_bytes(bad)
    with pytest.raises(FrameReadError, match=rf"frame 0003, file .*{route}/{folder}/0003\.jpg: bad JPEG encoding "
                                             r"\(Corrupt JPEG data.*expected a JPEG that decodes without errors"):
        build(tiny_root)


@pytest.mark.parametrize(("folder", "value", "says"), [
    ("semantics", 200, r"holds class id 200 \(1 pixels >= 10\); expected LEAD's grouped \(TransFuser\) camera "
                       r"semantic ids 0\.\.9"),
    ("semantics_perturbated", 10, r"holds class id 10 \(1 pixels >= 10\)"),
    ("hdmap", 9, r"holds class id 9 \(1 pixels >= 9\); expected ChauffeurNet map ids 0\.\.8"),
])
def test_a_class_id_outside_the_sensor_setup_is_refused_at_build_naming_the_file(folder, value, says, tiny_root):
    route = _kept(tiny_root)[0]
    path = tiny_root / route / folder / "0002.png"
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    image[17, 33] = value
    path.write_bytes(cv2.imencode(".png", image)[1].tobytes())
    with pytest.raises(FrameReadError, match=rf"frame 0002, file .*{route}/{folder}/0002\.png: {says}"):
        build(tiny_root)


def test_duplicate_frame_files_name_the_stray_file(tiny_root):
    route = tiny_root / _kept(tiny_root)[0]
    shutil.copy(route / "rgb" / "0005.jpg", route / "rgb" / "005.jpg")
    with pytest.raises(RouteError, match=r"rgb/ holds 005\.jpg beside 0005\.jpg: two files for frame 5 .*remove the "
                                         r"stray file"):
        build_catalog(tiny_root, progress=False)
    (route / "rgb" / "0005.jpg").unlink()  # only the unpadded name: the reader would not find it
    with pytest.raises(RouteError, match=r"rgb/005\.jpg should be named 0005\.jpg"):
        build_catalog(tiny_root, progress=False)


# ---------------------------------------------------------------------------------------- the build's CLI
def test_ctrl_c_during_a_build_prints_one_line_exits_130_and_the_rerun_resumes(tiny_root, reference):
    cmd = [sys.executable, "-m", "leadio.shard", "--root", str(tiny_root), "--workers", "2", "--quiet",
           "--samples-per-shard", str(SPS)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            start_new_session=True)
    deadline = time.time() + 120
    while not list((tiny_root / "shards").glob("*/all/.*.tar.tmp-*")) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.005)  # until the first shard is being written
    assert proc.poll() is None, "the build finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("INFO ")]
    assert proc.returncode == 130, err
    assert lines == ["python -m leadio.shard: interrupted; rerun the same command to resume (nothing written is "
                     "lost)"], err
    rerun = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "already complete" in rerun.stdout and " 0 of " not in rerun.stdout  # it resumed
    assert diff(snapshot(tiny_root), reference[1]) == []


@pytest.mark.parametrize(("module", "target"), [("leadio.catalog", "build_catalog"),
                                                ("leadio.buckets.__main__", "load_or_build")])
def test_ctrl_c_in_the_catalog_and_buckets_commands_prints_one_line(module, target, tiny_root, monkeypatch, capsys):
    import importlib

    mod = importlib.import_module(module)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mod, target, interrupted)
    assert mod.main(["--root", str(tiny_root), "--workers", "1"], prog="leadio x") == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "leadio x: interrupted; rerun the same command to resume (nothing written " \
                                           "is lost)"
    assert "Traceback" not in err


def test_a_no_op_shard_rerun_rewrites_nothing_and_says_up_to_date(reference, tmp_path):
    root = tmp_path / "data" / "carla_leaderboard2"
    shutil.copytree(reference[0], root)
    set_dir = _set_dir(root)
    files = [p for p in set_dir.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    before = {p: p.stat().st_mtime_ns for p in files}
    time.sleep(0.01)
    out = subprocess.run([sys.executable, "-m", "leadio.shard", "--root", str(root), "--workers", "1", "--quiet"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "up to date, nothing rewritten" in out.stdout and "samples/s" not in out.stdout
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert diff(snapshot(root), reference[1]) == []


def test_verify_reports_a_set_that_open_dataset_refuses_as_stale(reference, tmp_path):
    root = tmp_path / "data" / "carla_leaderboard2"
    shutil.copytree(reference[0], root)
    src = root / _kept(root)[0]
    shutil.copytree(src, src.with_name(src.name + "_new"))  # a route added since the build
    with pytest.raises(StaleShardSetError, match="1 route"):
        open_shard_set(_set_dir(root))
    out = subprocess.run([sys.executable, "-m", "leadio.shard", "verify", str(_set_dir(root))], capture_output=True,
                         text=True, timeout=300, cwd=REPO)
    assert out.returncode == 1 and "1 problem(s)" in out.stdout
    assert "is stale: 1 route(s) added" in out.stdout and "python -m leadio.shard --root" in out.stdout


def test_synth_refuses_a_root_holding_other_routes_unless_forced(tmp_path, capsys):
    from leadio.synth import main as synth_main

    root = tmp_path / "data" / "carla_leaderboard2"
    write_light_route(root, "Accident", "Town12_Rep0_7_0_route0_real", 3)
    argv = ["--root", str(root), "--routes", "1", "--frames", "2", "--quiet"]
    assert synth_main(argv) == 2
    err = capsys.readouterr().err
    assert "already holds 1 route(s)" in err and "data/Accident/Town12_Rep0_7_0_route0_real" in err
    assert "pass --force" in err
    assert [p.name for p in (root / "data").glob("*/*")] == ["Town12_Rep0_7_0_route0_real"]
    assert synth_main([*argv, "--force"]) == 0
    assert len(list((root / "data").glob("*/*"))) == 2
    assert synth_main([*argv, "--force"]) == 0  # a rerun of the same command finds its own route complete
    fresh = tmp_path / "fresh"
    assert synth_main(["--root", str(fresh), "--routes", "1", "--frames", "2", "--quiet"]) == 0
    assert synth_main(["--root", str(fresh), "--routes", "2", "--frames", "2", "--quiet"]) == 0  # a superset is fine


def test_the_build_keeps_its_shard_count_when_a_dirty_route_is_fixed(tiny_root, reference):
    """A dirty meta fixed in place: the rerun's set equals a clean build (the refusal wrote nothing wrong)."""
    route = _kept(tiny_root)[0]
    path = tiny_root / route / "metas" / "0001.pkl"
    good = path.read_bytes()
    _edit_meta(tiny_root, route, 1, "speed", math.nan)
    with pytest.raises(FrameReadError, match="key 'speed' is nan"):
        build(tiny_root)
    path.write_bytes(good)
    report = build(tiny_root)
    assert report.shards_total == len(list((_set_dir(tiny_root) / "all").glob("*.tar")))
    assert diff(snapshot(tiny_root), reference[1]) == [], SPS
