"""A dataset root the user may only read (issue 22, item 1): training and the report read it without writing
anything, and a bucket file that would have to be built says which file and the command that builds it.

The root is made read-only for real: bind-mounted read-only onto itself (root, or CAP_SYS_ADMIN), so every
write under it fails with EROFS whoever runs the test; elsewhere, as a non-root user, its permission bits are
cleared (EACCES). As root without the mount (where chmod blocks nothing) the tests skip.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from faultlib import REPO, diff, snapshot

from leadio.buckets.builders import load_or_build
from leadio.buckets.specs import ReadOnlyRootError
from leadio.dataset import open_dataset
from leadio.shard.shardset import open_shard_set

KW = {"batch_size": 4, "backend": "cpu", "num_workers": 0, "keys": ["targets"], "world_size": 1, "rank": 0}
POSTTRAIN_FILE = "full_posttrain_buckets_8_8_8_5.gz"


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` read-only while in the block (see the module docstring)."""
    mounted = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True, text=True)
    if mounted.returncode == 0:
        remount = subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True, text=True)
        try:
            assert remount.returncode == 0, remount.stderr
            yield "mount"
        finally:
            if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(path)], capture_output=True)  # busy: detach it anyway
        return
    if os.geteuid() == 0:
        pytest.skip(f"cannot bind-mount {path} read-only ({mounted.stderr.strip()}), and chmod does not stop root")
    modes = {}
    for folder, dirs, files in os.walk(path):
        for p in [Path(folder)] + [Path(folder, n) for n in dirs + files]:
            modes[p] = p.stat().st_mode
            p.chmod(modes[p] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        yield "chmod"
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


@pytest.fixture(scope="module")
def template(make_built_root, tmp_path_factory) -> Path:
    """The session's synthetic root (4 routes x 20 frames) with its full_pretrain set and posttrain bucket file."""
    root = tmp_path_factory.mktemp("ro") / "data" / "carla_leaderboard2"
    make_built_root(root, 8)
    load_or_build(root, "full_posttrain")
    return root


@pytest.fixture
def root(template, tmp_path) -> Path:
    """A private copy, without the stamp cache (so a full route check has stamps to save, and cannot)."""
    copy = tmp_path / "data" / "carla_leaderboard2"
    shutil.copytree(template, copy)
    shutil.rmtree(copy / ".leadio", ignore_errors=True)
    return copy


def _set_dir(root: Path) -> Path:
    return next((root / "shards").glob("full_pretrain-*/manifest.json")).parent


def _rows(loader) -> list[int]:
    return [r for batch in loader for r in batch["row"].tolist()]


def _report(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "leadio.report", *argv], env=env, capture_output=True, text=True,
                          timeout=120)


def test_training_reads_a_read_only_root_with_current_bucket_files(root):
    expected = {c: _rows(open_dataset(root, collection=c, **KW)) for c in ("full_pretrain", "full_posttrain")}
    before = snapshot(root)
    with read_only(root):
        for collection, rows in expected.items():
            assert _rows(open_dataset(root, collection=collection, **KW)) == rows != []
            # what leadtrain does: the set's folder and the collection it trains on
            assert _rows(open_dataset(_set_dir(root), collection=collection, **KW)) == rows
    assert diff(snapshot(root), before) == []


def test_training_on_the_sets_own_collection_needs_no_bucket_file(root):
    """A shard set copied without the root's buckets/ (or a read-only root that never had the file): the set
    was built for full_pretrain and carries it; before, opening took <root>/buckets/.lock and failed."""
    expected = _rows(open_dataset(root, collection="full_pretrain", **KW))
    shutil.rmtree(root / "buckets")
    with read_only(root):
        assert _rows(open_dataset(root, collection="full_pretrain", **KW)) == expected
        assert _rows(open_dataset(_set_dir(root), collection="full_pretrain", **KW)) == expected


def test_a_missing_bucket_file_on_a_read_only_root_names_the_file_and_the_command(root):
    (root / "buckets" / POSTTRAIN_FILE).unlink()
    with read_only(root):
        for source in (root, _set_dir(root)):
            with pytest.raises(ReadOnlyRootError) as e:
                open_dataset(source, collection="full_posttrain", **KW)
            text = str(e.value)
            assert text.startswith(f"bucket file {root / 'buckets' / POSTTRAIN_FILE} does not exist, and it cannot "
                                   f"be built here: {root / 'buckets' / '.lock'} cannot be written ("), text
            assert text.endswith(f"); build it where the dataset root is writable: `python -m leadio.buckets --root "
                                 f"{root} --collection full_posttrain`"), text
            assert "\n" not in text and "[Errno" not in text
        proc = _report("--root", str(root), "--collection", "full_posttrain")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"python -m leadio.report: error: bucket file {root / 'buckets' / POSTTRAIN_FILE} "
                                  f"does not exist, and it cannot be built here"), proc.stderr
    assert f"`python -m leadio.buckets --root {root} --collection full_posttrain`" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_a_stale_bucket_file_on_a_read_only_root_says_what_changed(root):
    routes = sorted((root / "data").glob("*/*"))
    added = routes[0].with_name(routes[0].name + "_copy")
    shutil.copytree(routes[0], added)
    with read_only(root):
        proc = _report("--root", str(root), "--collection", "full_posttrain")
    assert proc.returncode == 2
    assert (f"error: bucket file {root / 'buckets' / POSTTRAIN_FILE} is stale, routes changed since it was built: "
            f"1 added ({added.relative_to(root).as_posix()}), and it cannot be built here") in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1


def test_the_report_of_a_read_only_root(root, tmp_path):
    writable = _report("--root", str(root), "--json", str(tmp_path / "before.json"))
    assert writable.returncode == 0, writable.stderr
    before = snapshot(root)
    with read_only(root):
        proc = _report("--root", str(root), "--json", str(tmp_path / "after.json"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.replace("after.json", "before.json") == writable.stdout
    assert "Collection full_posttrain" in proc.stdout and "Collection full_pretrain" in proc.stdout
    assert diff(snapshot(root), before) == []


def test_a_full_route_check_of_a_read_only_root_skips_the_stamp_cache_quietly(root, caplog):
    assert not (root / ".leadio").exists()
    with read_only(root), caplog.at_level(logging.INFO):
        ss = open_shard_set(_set_dir(root), check_routes="full")
        assert len(ss) > 0 and not (root / ".leadio").exists()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    open_shard_set(_set_dir(root), check_routes="full")  # writable again: the cache is saved
    assert list((root / ".leadio" / "stamps").rglob("*.json"))
