"""The loader's shuffle: the default per set kind, the order it serves, and resume states across algorithms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from leadio.dataset import open_dataset
from leadio.plan import Shuffle, global_sequence


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, make_built_root) -> Path:
    root = tmp_path_factory.mktemp("shuffle") / "data" / "carla_leaderboard2"
    return make_built_root(root, 5)


def _open(shard_dir, **kw):
    return open_dataset(shard_dir, batch_size=4, backend="cpu", num_workers=0, keys=["targets"], seed=3, **kw)


def test_a_local_set_is_shuffled_uniformly_and_served_in_plan_order(shard_dir):
    ld = _open(shard_dir)
    assert ld.shuffle == Shuffle("uniform") and ld.state_dict()["shuffle"] == {"algorithm": "uniform"}
    # the plan is the uniform global sequence of the real plan function, interleaved for rank 0 of 1
    rows, _ = global_sequence(ld.plans.bucket_rows, ld.collection.rates_at(0), ld.plans.shard_of_row, epoch=0,
                              seed=3, shuffle="uniform")
    served = [r for b in ld for r in b["row"].tolist()]
    assert served == rows[:len(served)].tolist() and len(served) == len(rows) // 4 * 4


def test_a_named_shuffle_reaches_the_plan(shard_dir):
    ld = _open(shard_dir, shuffle="block", block_shards=2)
    assert ld.shuffle == Shuffle("block", block_shards=2)
    assert not np.array_equal(ld.plan(0).rows, _open(shard_dir).plan(0).rows)


def test_resume_under_another_shuffle_is_refused_naming_both(shard_dir):
    ld = _open(shard_dir, shuffle="block", block_shards=2)
    it = iter(ld)
    next(it)
    state = ld.state_dict()
    assert state["version"] == 3 and state["shuffle"] == {"algorithm": "block", "block_shards": 2}
    with pytest.raises(ValueError, match=r"loader state has shuffle block\(block_shards=2\), this loader has uniform; "
                                         r"resume with the same shuffle \(e.g. open_dataset\(..., shuffle='block'\)\)"):
        _open(shard_dir).load_state_dict(state)
    with pytest.raises(ValueError, match=r"has shuffle block\(block_shards=2\), this loader has "
                                         r"block\(block_shards=3\)"):
        _open(shard_dir, shuffle="block", block_shards=3).load_state_dict(state)
    same = _open(shard_dir, shuffle="block", block_shards=2)
    same.load_state_dict(state)
    assert [r for b in same for r in b["row"].tolist()] == ld.plan(0).rows[4:len(ld.plan(0)) // 4 * 4].tolist()


def test_a_state_of_another_version_is_refused_naming_both(shard_dir):
    old = {"version": 1, "epoch": 0, "seed": 3, "batch_size": 4, "consumed": 8, "world_size": 1,
           "collection": "full_pretrain", "shard_set": shard_dir.name}
    with pytest.raises(ValueError, match=r"loader state has version=1, this loader has 3; resume with the same "
                                         r"version"):
        _open(shard_dir).load_state_dict(old)


def test_a_remote_set_in_block_order_downloads_each_shard_once_where_uniform_thrashes(shard_dir, tmp_path,
                                                                                     monkeypatch):
    import json

    from http_server import serve_directory

    sizes = [s["bytes"] for s in json.loads((shard_dir / "manifest.json").read_text())["shards"]]
    bound = 3 * max(sizes) + 300_000  # ~3 shards and the catalog: blocks of 1 shard
    downloaded = {}
    with serve_directory(shard_dir.parent, monkeypatch) as (url, _):
        for shuffle in ("auto", "uniform"):
            ld = open_dataset(f"{url}/{shard_dir.name}", batch_size=2, backend="cpu", keys=["targets"], seed=1,
                              shuffle=shuffle, cache_dir=tmp_path / shuffle, cache_bytes=bound)
            rows = [r for b in ld for r in b["row"].tolist()]
            assert len(rows) == len(ld.plan(0)) // 2 * 2
            downloaded[ld.shuffle.algorithm] = ld.shard_set.cache.stats.bytes_downloaded
    assert sum(sizes) <= downloaded["block"] <= sum(sizes) + 300_000  # every shard once (plus the catalog)
    assert downloaded["uniform"] > 2 * sum(sizes)  # the same epoch in uniform order re-fetches evicted shards
