"""kill -9 at every step that writes, then a rerun: the tree equals an uninterrupted build's, byte for byte,
and no temp file, held lock or process is left.

The kill points are chosen, not timed (``killer.py`` SIGKILLs the process at a named point), so every
case is deterministic; ``build_pool`` is the one kill of a main process whose pool workers are busy.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from faultlib import REPO, assert_no_leftovers, build, diff, run_killed, snapshot

BUILD = ["leadio.shard", "--workers", "1", "--samples-per-shard", "3", "--quiet"]

#: (case, kill point, nth time, file pattern relative to the root, extra CLI arguments)
BUILD_POINTS = [
    ("catalog-scan", "scan", 2, "", []),
    ("catalog-write", "rename", 1, "catalog.zarr", []),
    ("stamp-cache-write", "rename", 1, ".leadio/stamps/*", []),
    ("bucket-build", "rename", 1, "buckets/*_buckets.gz", []),
    ("assignment", "rename", 1, "shards/*/assignment.json", []),
    ("shard-mid-tar", "tar", 2, "", []),
    ("second-shard-mid-tar", "tar", 5, "", []),
    ("shard-index", "rename", 1, "shards/*/all/000001.idx", []),
    ("shard-sidecar", "rename", 1, "shards/*/all/000001.json", []),
    ("shard-tar-rename", "rename", 1, "shards/*/all/000001.tar", []),
    ("merge-catalog", "rename", 1, "shards/*/catalog.zarr", []),
    ("merge-manifest", "rename", 1, "shards/*/manifest.json", []),
    ("pool-workers-busy", "build_pool", 1, "", ["--workers", "2"]),
]


@pytest.mark.parametrize(("point", "nth", "pattern", "extra"), [p[1:] for p in BUILD_POINTS],
                         ids=[p[0] for p in BUILD_POINTS])
def test_kill9_during_build_then_rerun_equals_clean_build(point, nth, pattern, extra, tiny_root, reference):
    argv = [*BUILD, "--root", str(tiny_root)]
    if extra:
        argv = [a for a in argv if a not in ("--workers", "1")] + extra
    tag = run_killed(point, *argv, nth=nth, pattern=f"{tiny_root}/{pattern}" if pattern else "")
    assert not list(tiny_root.glob("shards/*/manifest.json")) or point == "rename"
    report = build(tiny_root)
    assert report.merged
    assert_no_leftovers(tiny_root, tag=tag)
    assert diff(snapshot(tiny_root), reference[1]) == []


def test_kill9_after_a_complete_build_during_its_rebuild_keeps_the_old_set_openable(tiny_root, reference):
    """A rerun killed mid-merge over an existing set leaves a usable set (catalogs are swapped atomically)."""
    build(tiny_root)
    manifest = tiny_root / "shards"
    written = next(manifest.glob("*/manifest.json"))  # the same manifest, reformatted: a rerun rewrites it (a
    written.write_text(json.dumps(json.loads(written.read_text())))  # rerun with nothing to do writes nothing)
    run_killed("rename", *BUILD, "--root", str(tiny_root), pattern=f"{tiny_root}/shards/*/manifest.json")
    from leadio.shard.shardset import open_shard_set

    set_dir = next(manifest.glob("*/manifest.json")).parent
    assert len(open_shard_set(set_dir)) == 12
    build(tiny_root)
    assert diff(snapshot(tiny_root), reference[1]) == []


def _tensors(logdir):
    out = {}
    for p in sorted(logdir.rglob("*.pth")):
        out[p.relative_to(logdir).as_posix()] = torch.load(p, weights_only=True)
    return out


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


CKPT_POINTS = [
    ("checkpoint-rename", "rename", "*/optimizer_0000.pth"),
    ("checkpoint-mid-write", "torch_save", "*model_0000.pth.tmp-*"),
    ("resume-state-rename", "rename", "*/resume"),
    ("resume-state-mid-write", "torch_save", "*/state.pth"),
]


@pytest.mark.parametrize(("point", "pattern"), [p[1:] for p in CKPT_POINTS], ids=[p[0] for p in CKPT_POINTS])
def test_kill9_during_checkpoint_saves_then_rerun(point, pattern, tmp_path):
    from ckpt import write

    clean = tmp_path / "clean"
    write(clean)
    logdir = tmp_path / "killed"
    logdir.mkdir()
    tag = run_killed(point, str(REPO / "tests" / "faults" / "ckpt.py"), str(logdir), pattern=pattern)
    for p in logdir.glob("*.pth"):  # what survived the kill is whole: never a half-written file under a final name
        torch.load(p, weights_only=True)
    write(logdir)  # the rerun (the loop saves the same files again)
    assert_no_leftovers(logdir, tag=tag)
    a, b = _tensors(clean), _tensors(logdir)
    assert a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in logdir.iterdir()) == sorted(p.name for p in clean.iterdir())


def test_kill9_during_session_cache_fill_then_rerun(reference, tmp_path, monkeypatch):
    from http_server import serve_directory
    from remote_read import read_all

    set_dir = next((reference[0] / "shards").glob("*/manifest.json")).parent
    served = tmp_path / "served"
    shutil.copytree(set_dir, served / set_dir.name)
    cache = tmp_path / "cache"
    with serve_directory(served, monkeypatch) as (url, _):
        location = f"{url}/{set_dir.name}"
        tag = run_killed("download", str(REPO / "tests" / "faults" / "remote_read.py"), location, str(cache),
                         str(64 << 20))
        assert list(cache.rglob(".*.tmp-*")), "the kill left no partial download to recover from"
        resumed = read_all(location, str(cache), 64 << 20)
    local = read_all(str(set_dir), str(tmp_path / "unused"), 64 << 20)
    assert resumed == local and resumed["batches"] == 6
    assert_no_leftovers(cache, tag=tag)
    meta = json.loads((set_dir / "manifest.json").read_text())
    from leadio.session_cache import SessionCache

    assert SessionCache(cache, 64 << 20).disk_bytes() <= sum(s["bytes"] for s in meta["shards"]) + (1 << 20)
