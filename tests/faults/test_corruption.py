"""Damage to every member kind and every file of a set: reads refuse it (naming shard, sample, member and
the fix), ``verify`` lists it, and a rerun of the build repairs it to the clean build's bytes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
from faultlib import assert_no_leftovers, build, diff, snapshot

from leadio.shard.shardset import ShardSetError, open_shard_set

MEMBERS = ["rgb_n.jpg", "rgb_p.jpg", "semantic_n.lz4", "depth_n.lz4", "lidar_n.lz4", "bev_n.lz4", "radar_n.f16",
           "boxes_n.f32", "targets_n.f32", "targets_p.f32", "json"]
ROW = 4


@pytest.fixture
def damaged(reference, tmp_path) -> Path:
    root = tmp_path / "data" / "carla_leaderboard2"
    shutil.copytree(reference[0], root)
    return root


def _set_dir(root: Path) -> Path:
    return next((root / "shards").glob("*/manifest.json")).parent


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("member", MEMBERS)
def test_a_flipped_byte_in_any_member_is_refused_listed_and_repaired(member, damaged, reference):
    set_dir = _set_dir(damaged)
    ss = open_shard_set(set_dir)
    col = ss.members.index(member)
    offset, size = int(ss.catalog["member_offset"][ROW, col]), int(ss.catalog["member_size"][ROW, col])
    good = ss.read_member_bytes(ROW, member)
    shard, key = ss.shard_path(int(ss.catalog["shard"][ROW])), ss.catalog["sample_key"][ROW]
    at = size // 2
    if member.endswith(".jpg"):  # a flip in the entropy-coded data that still decodes: only the hash sees it
        for at in range(size // 2, size - 2):
            bad = bytearray(good)
            bad[at] ^= 0x10
            try:
                image = simplejpeg.decode_jpeg(bytes(bad), colorspace="RGB")
            except ValueError:
                continue
            if image.shape == (384, 1152, 3) and not np.array_equal(image, simplejpeg.decode_jpeg(good)):
                break
        else:
            pytest.fail("no byte flip of the JPEG still decodes")
    _flip(shard, offset + at)
    with pytest.raises(ShardSetError) as e:
        ss.read_member_bytes(ROW, member)
    message = str(e.value)
    assert f"sample {key}: member {member} differs from the hash recorded at build time" in message
    assert "rerun `python -m leadio.shard --root <root> --collection full_pretrain`" in message and "\n" not in message
    assert open_shard_set(set_dir, verify=False).read_member_bytes(ROW, member) != good  # unverified: wrong bytes
    cli = subprocess.run([sys.executable, "-m", "leadio.shard", "verify", str(set_dir)], capture_output=True,
                         text=True)
    assert cli.returncode == 1
    assert f"sample {key}: content differs from its recorded hash (member {member})" in cli.stdout
    report = build(damaged)
    rel = shard.relative_to(set_dir).as_posix()
    assert report.rewritten == {rel: "is damaged (checksum mismatch)"} and report.shards_written == 1
    assert diff(snapshot(damaged), reference[1]) == []


def test_damaged_labels_are_an_error_or_a_counted_skip_in_the_loader(damaged):
    from leadio.dataset import open_dataset

    set_dir = _set_dir(damaged)
    ss = open_shard_set(set_dir)
    col = ss.members.index("targets_n.f32")
    for row in range(len(ss)):  # every sample's labels
        _flip(ss.shard_path(int(ss.catalog["shard"][row])), int(ss.catalog["member_offset"][row, col]) + 4)
    kw = {"batch_size": 2, "backend": "cpu", "keys": ["targets"], "perturbation_rate": 0.0}
    with pytest.raises(ShardSetError, match=r"member targets_n\.f32 differs from the hash recorded"):
        next(iter(open_dataset(set_dir, **kw)))
    loader = open_dataset(set_dir, on_error="skip", **kw)
    with pytest.raises(ShardSetError, match="every sample of a batch is unreadable"):
        next(iter(loader))


SET_DAMAGE = ["manifest-drops-a-shard", "set-catalog-chunk-damaged", "set-catalog-chunk-missing", "sidecar-garbage",
              "index-garbage", "tar-truncated", "root-catalog-chunk-damaged"]


@pytest.mark.parametrize("case", SET_DAMAGE)
def test_damaged_set_files_are_named_and_a_rerun_repairs_them(case, damaged, reference):
    set_dir = _set_dir(damaged)
    chunk = "catalog.zarr/member_offset/c/0/0"
    if case == "manifest-drops-a-shard":
        manifest = json.loads((set_dir / "manifest.json").read_text())
        manifest["shards"].pop()
        (set_dir / "manifest.json").write_text(json.dumps(manifest))
        expected = "the catalog places samples in shard 3, but manifest.json lists 3 shards"
    elif case == "set-catalog-chunk-damaged":
        (set_dir / chunk).write_bytes(b"\x28\xb5\x2f\xfd garbage")
        expected = "array member_offset is damaged"
    elif case == "set-catalog-chunk-missing":
        (set_dir / chunk).unlink()
        expected = "chunk file member_offset/c/0/0 is missing"
    elif case == "sidecar-garbage":
        (set_dir / "all" / "000001.json").write_text("{")
        expected = None
    elif case == "index-garbage":
        (set_dir / "all" / "000001.idx").write_text("v1.2 1\n")
        expected = None
    elif case == "tar-truncated":
        with open(set_dir / "all" / "000002.tar", "r+b") as f:
            f.truncate(1000)
        expected = None
    else:
        (damaged / "catalog.zarr" / "speed" / "c" / "0").write_bytes(b"\x28\xb5\x2f\xfd garbage")
        from leadio.catalog_store import CatalogError, load_catalog

        with pytest.raises(CatalogError, match=r"catalog .*catalog\.zarr: array speed is damaged .*; rebuild it with "
                                               r"`python -m leadio\.catalog --root "):
            load_catalog(damaged)
        expected = None
    if expected is not None:
        with pytest.raises(ShardSetError) as e:
            open_shard_set(set_dir)
        assert expected in str(e.value) and "python -m leadio.shard --root" in str(e.value), str(e.value)
        cli = subprocess.run([sys.executable, "-m", "leadio.shard", "verify", str(set_dir)], capture_output=True,
                             text=True)
        assert cli.returncode in (1, 2) and expected in cli.stdout + cli.stderr
    build(damaged)
    assert_no_leftovers(damaged)
    assert diff(snapshot(damaged), reference[1]) == []
