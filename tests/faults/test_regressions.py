"""Regression tests for the numbered items of issue 15 (each failed before its fix), named for the behaviour
they check; the comment above each gives its item. Items covered elsewhere in this suite: 12 (leftovers after
kill -9) in test_kill, 10's full disk in test_disk_full."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
from faultlib import REPO, build, diff, snapshot

from leadio.format.errors import FrameReadError
from leadio.shard.shardset import ShardSetError, StaleShardSetError, open_shard_set


def _set_dir(root: Path) -> Path:
    return next((root / "shards").glob("*/manifest.json")).parent


def _row(ss, route: str, frame: int) -> int:
    return next(i for i, (r, f) in enumerate(zip(ss.catalog["route"], ss.catalog["frame"], strict=True))
                if r == route and f == frame)


@pytest.fixture
def built(reference, tmp_path) -> Path:
    root = tmp_path / "built" / "data" / "carla_leaderboard2"
    shutil.copytree(reference[0], root)
    return root


# issue 15, item 1
@pytest.mark.parametrize("edit", ["other-size", "same-size"])
def test_an_edited_raw_jpeg_makes_the_set_stale_and_a_rebuild_rewrites_its_shard(edit, built):
    ss = open_shard_set(_set_dir(built))
    route = str(ss.catalog["route"][0])
    path = built / route / "rgb" / "0005.jpg"
    old = path.read_bytes()
    if edit == "other-size":
        new = simplejpeg.encode_jpeg(simplejpeg.decode_jpeg(old)[:, ::-1].copy(), quality=90)
    else:  # a JPEG that decodes (the build decodes every JPEG), padded after its end marker to the old size
        image = simplejpeg.decode_jpeg(old)
        new = next(j for q in range(30, 0, -1) if len(j := simplejpeg.encode_jpeg(255 - image, quality=q)) < len(old))
        new += b"\0" * (len(old) - len(new))
        assert len(new) == len(old)
    path.write_bytes(new)
    with pytest.raises(StaleShardSetError, match=rf"route {route} changed on disk \(file contents\)"):
        open_shard_set(_set_dir(built), check_routes="full")
    report = build(built)
    assert report.shards_written == 1
    assert "built from raw files that changed since" in next(iter(report.rewritten.values()))
    ss = open_shard_set(_set_dir(built), check_routes="full")
    assert ss.read_member_bytes(_row(ss, route, 5), "rgb_n.jpg") == new


# issue 15, item 1
def test_a_copied_root_with_new_mtimes_is_valid_and_rebuilds_nothing(built, tmp_path):
    copy = tmp_path / "copy" / "data" / "carla_leaderboard2"
    shutil.copytree(built, copy, copy_function=shutil.copy)  # new mtimes everywhere
    shutil.rmtree(copy / ".leadio", ignore_errors=True)  # and no stamp cache: everything is hashed again
    open_shard_set(_set_dir(copy), check_routes="full")
    report = build(copy)
    assert report.shards_written == 0 and report.rewritten == {}


# issue 15, item 2
def test_a_rebuild_rewrites_a_damaged_shard_to_the_clean_result(built, reference):
    tar = _set_dir(built) / "all" / "000001.tar"
    data = bytearray(tar.read_bytes())
    data[5000] ^= 0xFF
    tar.write_bytes(bytes(data))
    report = build(built)
    assert report.rewritten == {"all/000001.tar": "is damaged (checksum mismatch)"}
    assert diff(snapshot(built), reference[1]) == []


# issue 15, item 3
def test_a_truncated_jpeg_is_refused_at_build_and_its_fix_reaches_the_shards(tiny_root):
    route = sorted((tiny_root / "data").glob("*/*"))[0]
    path = route / "rgb" / "0002.jpg"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) * 2 // 3])
    with pytest.raises(FrameReadError, match=r"rgb/0002\.jpg: JPEG is truncated \(no EOI marker"):
        build(tiny_root)
    path.write_bytes(good)
    build(tiny_root)
    ss = open_shard_set(_set_dir(tiny_root), check_routes="full")
    rel = route.relative_to(tiny_root).as_posix()
    assert ss.read_member_bytes(_row(ss, rel, 2), "rgb_n.jpg") == good


# issue 15, item 4
def test_a_corrupt_targets_member_raises_or_is_skipped_never_delivered(built):
    from leadio.dataset import open_dataset

    ss = open_shard_set(_set_dir(built))
    col = ss.members.index("targets_n.f32")
    tar = ss.shard_path(int(ss.catalog["shard"][3]))
    data = bytearray(tar.read_bytes())
    data[int(ss.catalog["member_offset"][3, col]) + 8] ^= 0x40
    tar.write_bytes(bytes(data))
    kw = {"batch_size": 2, "backend": "cpu", "keys": ["targets"], "perturbation_rate": 0.0}
    with pytest.raises(ShardSetError, match=rf"sample {ss.catalog['sample_key'][3]}: member targets_n\.f32 differs"):
        list(open_dataset(_set_dir(built), **kw))
    loader = open_dataset(_set_dir(built), on_error="skip", **kw)
    assert len(list(loader)) == len(ss) // 2 and loader.stats.skipped == 1
    assert ss.catalog["sample_key"][3] in loader.stats.skipped_samples[0]


# issue 15, item 5
def test_a_remote_set_rebuilt_under_its_name_is_never_mixed_with_the_cached_one(tiny_root, tmp_path, monkeypatch):
    from http_server import serve_directory
    from remote_read import read_all

    build(tiny_root)
    cache = str(tmp_path / "cache")
    with serve_directory(tiny_root / "shards", monkeypatch) as (url, _):
        location = f"{url}/{_set_dir(tiny_root).name}"
        before = read_all(location, cache, 64 << 20)
        src = sorted((tiny_root / "data").glob("*/*"))[0]
        shutil.copytree(src, src.with_name(src.name + "_copy"))  # a route added, the set rebuilt under its name
        build(tiny_root)
        after = read_all(location, cache, 64 << 20)
    assert after == read_all(str(_set_dir(tiny_root)), str(tmp_path / "x"), 64 << 20)
    assert after["batches"] > before["batches"]


# issue 15, item 6
def test_verify_and_open_dataset_refuse_a_manifest_missing_a_shard_entry(built):
    set_dir = _set_dir(built)
    manifest = json.loads((set_dir / "manifest.json").read_text())
    manifest["shards"].pop(1)
    (set_dir / "manifest.json").write_text(json.dumps(manifest))
    cli = subprocess.run([sys.executable, "-m", "leadio.shard", "verify", str(set_dir)], capture_output=True,
                         text=True)
    assert cli.returncode == 1 and "an entry is missing: the manifest is damaged" in cli.stdout
    from leadio.dataset import open_dataset

    with pytest.raises(ShardSetError, match="an entry is missing: the manifest is damaged"):
        open_dataset(set_dir, batch_size=1, backend="cpu")


# issue 15, item 7
def test_a_second_concurrent_build_waits_and_both_succeed(tiny_root, reference):
    """The second build waits for the first (see test_concurrency for the message); neither crashes."""
    from test_concurrency import test_two_builds_at_once_both_succeed_with_the_clean_result as two_builds

    two_builds(tiny_root, reference)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, reference) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train") / "data" / "carla_leaderboard2"
    shutil.copytree(reference[0], root)
    logdir = root.parent.parent / "run"
    _train(root, logdir)
    return root, logdir


FAST = ["model_size=tiny", "batch_size=4", "num_workers=0", "max_steps_per_epoch=1", "epochs=1", "backend=cpu",
        "visualize_training=false", "log_scalars_frequency=1000"]


def _train(root: Path, logdir: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "leadtrain" / "pretrain.py"), f"root={root}",
                           f"logdir={logdir}", *FAST, *extra], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=logdir.parent)
    assert proc.returncode == 0 or extra, proc.stderr[-3000:]
    return proc


# issue 15, item 8
def test_a_resume_refused_for_another_seed_leaves_config_json_intact(trained):
    root, logdir = trained
    before = (logdir / "config.json").read_bytes()
    refused = _train(root, logdir, "continue_failed_training=true", "seed=1")
    assert refused.returncode != 0 and "loader state has seed=0, this loader has 1" in refused.stderr
    assert (logdir / "config.json").read_bytes() == before


# issue 15, item 9
def test_pretrain_sh_refuses_an_unknown_key_before_building_anything(built, tmp_path):
    fresh = tmp_path / "fresh" / "data" / "carla_leaderboard2"
    shutil.copytree(built / "data", fresh / "data")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "pretrain.sh"), "epochz=3"], capture_output=True,
                          text=True, env={**os.environ, "LEAD_ROOT": str(fresh)}, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0 and "unknown key 'epochz'" in proc.stderr
    assert not (fresh / "shards").exists()  # nothing was built before the arguments were checked


# issue 15, item 9
def test_a_shard_rerun_without_samples_per_shard_keeps_the_built_set(built):
    before = snapshot(built)
    out = subprocess.run([sys.executable, "-m", "leadio.shard", "--root", str(built), "--workers", "1", "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "0 shards" in out.stdout and "4 of 4 already complete" in out.stdout
    assert diff(snapshot(built), before) == []


# issue 15, item 10
def test_an_empty_png_is_refused_at_build_naming_the_frame_and_the_file(tiny_root):
    route = sorted((tiny_root / "data").glob("*/*"))[0]
    (route / "semantics" / "0003.png").write_bytes(b"")
    with pytest.raises(FrameReadError, match=r"frame 0003, file .*semantics/0003\.png: PNG file is empty"):
        build(tiny_root)


# issue 15, item 10
def test_a_damaged_catalog_names_the_array_and_the_rebuild_command_which_repairs_it(built):
    from leadio.catalog import build_catalog
    from leadio.catalog_store import CatalogError, load_catalog

    chunk = built / "catalog.zarr" / "speed" / "c" / "0"
    chunk.write_bytes(b"\x28\xb5\x2f\xfd\x00 not zstd")
    with pytest.raises(CatalogError, match=rf"catalog {built / 'catalog.zarr'}: array speed is damaged .*; rebuild "
                                           rf"it with `python -m leadio\.catalog --root {built}`"):
        load_catalog(built)
    assert build_catalog(built, progress=False).rewritten  # the rerun repairs it


# issue 15, item 10
def test_a_missing_shard_set_catalog_chunk_names_the_file_and_the_rerun_command(built):
    missing = _set_dir(built) / "catalog.zarr" / "route" / "c" / "0"
    missing.unlink()
    with pytest.raises(ShardSetError, match=r"chunk file route/c/0 is missing .*rerun `python -m leadio\.shard --root"):
        open_shard_set(_set_dir(built))


# issue 15, item 11
@pytest.mark.parametrize(("spec", "message"), [
    ({"name": "x", "group_by": ["town"], "skip_frist": 2},
     r"unknown key\(s\) 'skip_frist' \(did you mean 'skip_first'"),
    ({"group_by": ["town"]}, r"missing key\(s\) \['name'\]"),
    ("{not json", r"collection spec .*bad\.json is not valid JSON"),
    ({"name": "../../../escaped", "group_by": ["town"]}, r"name '\.\./\.\./\.\./escaped' must be a plain file name"),
])
def test_a_bad_collection_spec_is_refused_naming_the_problem_and_writes_nothing(spec, message, built, tmp_path):
    from leadio.buckets.builders import load_or_build

    path = tmp_path / "bad.json"
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    with pytest.raises(ValueError, match=message):
        load_or_build(built, str(path))
    assert not list(tmp_path.rglob("*escaped*")) and not list(built.parent.rglob("*escaped*"))


# issue 15, item 13
def test_bad_routes_stop_buckets_and_shard_unless_skip_bad_routes_names_and_drops_them(tiny_root, reference):
    kept = sorted({str(r) for r in open_shard_set(_set_dir(reference[0])).catalog["route"]})
    dropped = [p for p in sorted((tiny_root / "data").glob("*/*")) if p.relative_to(tiny_root).as_posix() not in kept]
    routes = [dropped[0], tiny_root / kept[0]]  # a bad results.json (of a route LEAD's filter drops), a bad PNG
    (routes[0] / "results.json").write_text("{broken")
    (routes[1] / "depth" / "0002.png").write_bytes(b"\x89PNG not really")
    for cmd in (["leadio.buckets"], ["leadio.shard", "--samples-per-shard", "3", "--quiet"]):
        strict = subprocess.run([sys.executable, "-m", *cmd, "--root", str(tiny_root), "--workers", "1"],
                                capture_output=True, text=True, timeout=300)
        assert strict.returncode == 2 and "results.json is not valid JSON" in strict.stderr
    out = subprocess.run([sys.executable, "-m", "leadio.shard", "--root", str(tiny_root), "--workers", "1", "--quiet",
                          "--samples-per-shard", "3", "--skip-bad-routes"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "SKIPPED 1 bad routes (--skip-bad-routes)" in out.stdout and "depth/0002.png" in out.stdout
    ss = open_shard_set(_set_dir(tiny_root))
    used = {str(r) for r in ss.catalog["route"]}
    for bad in routes[:2]:
        assert bad.relative_to(tiny_root).as_posix() not in used
    assert set(ss.manifest["skipped_routes"]) >= {r.relative_to(tiny_root).as_posix() for r in routes[1:2]}


# issue 15, item 14
def test_a_batch_larger_than_the_epoch_is_refused_naming_both_sizes(built):
    from leadio.dataset import open_dataset

    with pytest.raises(ValueError, match=r"batch_size=64 exceeds the 12 samples rank 0 of 1 gets in epoch 0"):
        open_dataset(_set_dir(built), batch_size=64, backend="cpu")


# issue 15, item 14
def test_the_shard_command_refuses_zero_samples_per_shard(built, capsys):
    from leadio.shard.__main__ import main as shard_main

    with pytest.raises(SystemExit):
        shard_main(["--root", str(built), "--samples-per-shard", "0"])
    assert "--samples-per-shard: must be >= 1, got 0" in capsys.readouterr().err


# issue 15, item 14
def test_a_resume_state_of_another_set_or_global_batch_is_refused_and_a_world_size_change_is_not(built):
    from leadio.dataset import open_dataset

    loader = open_dataset(_set_dir(built), batch_size=2, backend="cpu", keys=["targets"])
    state = loader.state_dict()
    for key, value, match in (("shard_set", "other-123", "shard_set='other-123'"),
                              ("batch_size", 3, "batch_size=3 on 1 ranks")):
        with pytest.raises(ValueError, match=match):
            loader.load_state_dict({**state, key: value})
    loader.load_state_dict({**state, "batch_size": 1, "world_size": 2})  # same global batch: a world-size change
    assert np.isfinite(len(loader))
