"""leadio.plan: exact bucket counts, determinism, new orders per epoch, equal DDP splits, resume."""

from __future__ import annotations

import numpy as np
import pytest

from leadio.plan import Shuffle, bucket_counts, global_sequence, rank_plan

# 3 buckets over 60 rows in 12 shards of 5 rows (rows are in shard order, as in a shard set's catalog)
SHARD = np.repeat(np.arange(12), 5)
BUCKETS = [np.arange(0, 30), np.arange(30, 50), np.arange(50, 60)]


@pytest.mark.parametrize(("rates", "expected"), [
    ([1.0, 1.0, 1.0], [30, 20, 10]),
    ([0.0, 1.0, 1.0], [0, 20, 10]),          # rate 0: the bucket costs nothing
    ([0.5, 0.25, 0.34], [15, 5, 3]),         # fractional: round(len * rate)
    ([2.5, 1.0, 3.0], [75, 20, 30]),         # > 1: whole passes plus a remainder
])
def test_bucket_counts_follow_rates(rates, expected):
    assert bucket_counts([30, 20, 10], rates) == expected
    rows, views = global_sequence(BUCKETS, rates, SHARD, epoch=3, seed=1)
    per_bucket = [int(np.isin(rows, b).sum()) for b in BUCKETS]
    assert per_bucket == expected and len(views) == sum(expected)
    for b, rate in zip(BUCKETS, rates, strict=True):
        counts = np.bincount(rows[np.isin(rows, b)] - b[0], minlength=len(b))
        if rate <= 1:
            assert counts.max(initial=0) <= 1  # a subset: no sample twice
        else:  # every sample floor(rate) times, the remainder once more
            assert set(counts.tolist()) <= {int(rate), int(rate) + 1}
            assert counts.sum() == round(len(b) * rate)


def test_plans_are_deterministic_and_differ_between_epochs():
    a = global_sequence(BUCKETS, [1, 1, 1], SHARD, epoch=0, seed=7)
    b = global_sequence(BUCKETS, [1, 1, 1], SHARD, epoch=0, seed=7)
    c = global_sequence(BUCKETS, [1, 1, 1], SHARD, epoch=1, seed=7)
    d = global_sequence(BUCKETS, [1, 1, 1], SHARD, epoch=0, seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], d[0])
    assert sorted(a[0].tolist()) == list(range(60)) == sorted(c[0].tolist())


def test_views_follow_perturbation_rate():
    rows = [np.arange(5000)]
    shard = np.repeat(np.arange(100), 50)
    _, views = global_sequence(rows, [1.0], shard, epoch=0, seed=0, perturbation_rate=0.5)
    assert 0.47 < views.mean() < 0.53
    assert global_sequence(rows, [1.0], shard, epoch=0, seed=0, perturbation_rate=0.0)[1].sum() == 0
    assert global_sequence(rows, [1.0], shard, epoch=0, seed=0, perturbation_rate=1.0)[1].all()


def test_reads_stay_grouped_by_shard():
    rows, _ = global_sequence([np.arange(60)], [1.0], SHARD, epoch=0, seed=0, shuffle=Shuffle("window", window=5))
    # with a window of one shard, every run of 5 is exactly one shard's rows
    for a in range(0, 60, 5):
        assert len(set(SHARD[rows[a:a + 5]].tolist())) == 1


@pytest.mark.parametrize("world", range(1, 9))
@pytest.mark.parametrize("uneven", ["drop", "pad"])
def test_every_rank_gets_the_same_count_and_the_union_is_the_plan(world, uneven):
    rows, views = global_sequence(BUCKETS, [1.0, 0.7, 2.0], SHARD, epoch=2, seed=3)
    plans = [rank_plan(rows, views, epoch=2, world_size=world, rank=r, uneven=uneven) for r in range(world)]
    counts = {len(p) for p in plans}
    assert len(counts) == 1
    merged = np.stack([p.rows for p in plans], 1).reshape(-1)  # interleaved back
    if uneven == "drop":
        keep = len(rows) - len(rows) % world
        np.testing.assert_array_equal(merged, rows[:keep])
    else:
        np.testing.assert_array_equal(merged[:len(rows)], rows)
        assert len(merged) == -(-len(rows) // world) * world


def test_resume_with_another_world_size_loses_and_repeats_nothing():
    rows, views = global_sequence([np.arange(96)], [1.0], np.repeat(np.arange(12), 8), epoch=0, seed=0)
    # 4 ranks each consumed 3 batches of 2 -> 24 global samples done
    seen = np.concatenate([rank_plan(rows, views, epoch=0, world_size=4, rank=r).rows[:6] for r in range(4)])
    rest = np.concatenate([rank_plan(rows, views, epoch=0, world_size=3, rank=r, start=24).rows for r in range(3)])
    assert len(seen) + len(rest) == 96
    assert sorted(np.concatenate([seen, rest]).tolist()) == list(range(96))
    np.testing.assert_array_equal(np.sort(seen), np.sort(rows[:24]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank must be in"):
        rank_plan(np.arange(4), np.zeros(4, np.uint8), epoch=0, world_size=2, rank=2)
    with pytest.raises(ValueError, match="perturbation_rate"):
        global_sequence(BUCKETS, [1, 1, 1], SHARD, epoch=0, seed=0, perturbation_rate=1.5)
    with pytest.raises(ValueError, match="3 buckets but 2 rates"):
        bucket_counts([1, 2, 3], [1, 1])
