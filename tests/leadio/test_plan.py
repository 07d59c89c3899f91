"""leadio.plan: exact bucket counts, determinism, new orders per epoch, equal DDP splits, resume — for every
shuffle algorithm — and batch diversity / shard residency measured by the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from leadio.plan import Shuffle, bucket_counts, global_sequence, rank_plan, resolve_shuffle
from leadio.plan.__main__ import main as plan_main
from leadio.plan.simulate import expected_distinct, peak_resident, simulate, synthetic_catalog

# 3 buckets over 60 rows in 12 shards of 5 rows (rows are in shard order, as in a shard set's catalog)
SHARD = np.repeat(np.arange(12), 5)
BUCKETS = [np.arange(0, 30), np.arange(30, 50), np.arange(50, 60)]
ALGORITHMS = [Shuffle("uniform"), Shuffle("block", block_shards=3), Shuffle("block", block_shards=1)]
algorithms = pytest.mark.parametrize("shuffle", ALGORITHMS, ids=lambda s: s.describe())


@pytest.mark.parametrize(("rates", "expected"), [
    ([1.0, 1.0, 1.0], [30, 20, 10]),
    ([0.0, 1.0, 1.0], [0, 20, 10]),          # rate 0: the bucket costs nothing
    ([0.5, 0.25, 0.34], [15, 5, 3]),         # fractional: round(len * rate)
    ([2.5, 1.0, 3.0], [75, 20, 30]),         # > 1: whole passes plus a remainder
])
@algorithms
def test_bucket_counts_follow_rates(rates, expected, shuffle):
    assert bucket_counts([30, 20, 10], rates) == expected
    rows, views = global_sequence(BUCKETS, rates, SHARD, epoch=3, seed=1, shuffle=shuffle)
    per_bucket = [int(np.isin(rows, b).sum()) for b in BUCKETS]
    assert per_bucket == expected and len(views) == sum(expected)
    for b, rate in zip(BUCKETS, rates, strict=True):
        counts = np.bincount(rows[np.isin(rows, b)] - b[0], minlength=len(b))
        if rate <= 1:
            assert counts.max(initial=0) <= 1  # a subset: no sample twice
        else:  # every sample floor(rate) times, the remainder once more
            assert set(counts.tolist()) <= {int(rate), int(rate) + 1}
            assert counts.sum() == round(len(b) * rate)


@algorithms
def test_plans_are_deterministic_and_differ_between_epochs(shuffle):
    a = global_sequence(BUCKETS, [1, 1, 1], SHARD, epoch=0, seed=7, shuffle=shuffle)
    b = global_sequence(BUCKETS, [1, 1, 1], SHARD, epoch=0, seed=7, shuffle=shuffle)
    c = global_sequence(BUCKETS, [1, 1, 1], SHARD, epoch=1, seed=7, shuffle=shuffle)
    d = global_sequence(BUCKETS, [1, 1, 1], SHARD, epoch=0, seed=8, shuffle=shuffle)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], d[0])
    assert sorted(a[0].tolist()) == list(range(60)) == sorted(c[0].tolist())


@algorithms
def test_views_follow_perturbation_rate(shuffle):
    rows = [np.arange(5000)]
    shard = np.repeat(np.arange(100), 50)
    _, views = global_sequence(rows, [1.0], shard, epoch=0, seed=0, perturbation_rate=0.5, shuffle=shuffle)
    assert 0.47 < views.mean() < 0.53
    assert global_sequence(rows, [1.0], shard, epoch=0, seed=0, perturbation_rate=0.0, shuffle=shuffle)[1].sum() == 0
    assert global_sequence(rows, [1.0], shard, epoch=0, seed=0, perturbation_rate=1.0, shuffle=shuffle)[1].all()


def test_a_block_of_one_shard_reads_one_shard_at_a_time():
    rows, _ = global_sequence([np.arange(60)], [1.0], SHARD, epoch=0, seed=0, shuffle=Shuffle("block", block_shards=1))
    # SHARD holds 5 rows per shard: every run of 5 is exactly one shard's rows, in a shuffled order
    for a in range(0, 60, 5):
        assert len(set(SHARD[rows[a:a + 5]].tolist())) == 1
    assert sorted(rows.tolist()) == list(range(60)) and rows.tolist() != list(range(60))


@pytest.mark.parametrize("world", range(1, 9))
@pytest.mark.parametrize("uneven", ["drop", "pad"])
@algorithms
def test_every_rank_gets_the_same_count_and_the_union_is_the_plan(world, uneven, shuffle):
    rows, views = global_sequence(BUCKETS, [1.0, 0.7, 2.0], SHARD, epoch=2, seed=3, shuffle=shuffle)
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


@algorithms
def test_resume_with_another_world_size_loses_and_repeats_nothing(shuffle):
    rows, views = global_sequence([np.arange(96)], [1.0], np.repeat(np.arange(12), 8), epoch=0, seed=0,
                                  shuffle=shuffle)
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
    with pytest.raises(ValueError, match=r"shuffle must be one of \['block', 'uniform'\], got 'random'"):
        global_sequence(BUCKETS, [1, 1, 1], SHARD, epoch=0, seed=0, shuffle="random")
    with pytest.raises(ValueError, match="shuffle 'block' needs block_shards >= 1, got None"):
        Shuffle("block")
    with pytest.raises(ValueError, match="shuffle 'block' needs block_shards >= 1, got 0"):
        Shuffle("block", block_shards=0)
    with pytest.raises(ValueError, match=r"shuffle 'uniform' takes no parameters, got \['window'\]"):
        Shuffle("uniform", window=256)
    with pytest.raises(ValueError, match=r"shuffle 'block' takes \['block_shards'\], got \['blocks'\]"):
        Shuffle("block", blocks=3)
    with pytest.raises(ValueError, match="shuffle must be 'auto' or one of"):
        resolve_shuffle("sorted", block_shards=None, remote=False, max_shard_bytes=1, cache_bytes=1)



# ------------------------------------------------------------------------------------------ batch quality
# the test scale: 20,000 frames in 100 routes, 40 shards of 500, batch 32
TEST_CATALOG = synthetic_catalog(20_000, route_frames=200, shard_samples=500, seed=0)


def test_the_test_catalog_has_the_asked_shape():
    assert (len(TEST_CATALOG.shard_of_row), TEST_CATALOG.num_shards) == (20_000, 40)
    assert 90 <= TEST_CATALOG.num_routes <= 110
    # shards hold consecutive frames of few routes (what makes a local order harmful)
    assert max(len(set(TEST_CATALOG.route_of_row[TEST_CATALOG.shard_of_row == s].tolist())) for s in range(40)) <= 5


@pytest.mark.parametrize("world", [1, 4])
def test_default_plan_batches_are_as_diverse_as_a_uniform_shuffle(world):
    default = resolve_shuffle("auto", block_shards=None, remote=False, max_shard_bytes=10**8, cache_bytes=10**9)
    assert default == Shuffle("uniform")
    result = simulate(TEST_CATALOG, default, world=world, batch=32, epochs=[0, 1])
    assert result.distinct_routes >= 0.95 * result.uniform_expectation
    assert abs(result.lag1_corr) < 0.05
    # a shard-local order fails the same bar by far: the test measures something
    local = simulate(TEST_CATALOG, Shuffle("block", block_shards=1), world=world, batch=32, epochs=[0])
    assert local.distinct_routes < 0.5 * local.uniform_expectation


@pytest.mark.parametrize("block_shards", [1, 3, 8, 13, 40, 64])
def test_block_never_needs_more_resident_shards_than_its_bound(block_shards):
    spec = Shuffle("block", block_shards=block_shards)
    for epoch in range(3):
        rows, _ = global_sequence(TEST_CATALOG.bucket_rows, [0.7], TEST_CATALOG.shard_of_row, epoch=epoch, seed=1,
                                  shuffle=spec)
        shards = TEST_CATALOG.shard_of_row[rows]
        assert peak_resident(shards) <= block_shards
        # blocks are balanced: the bound is reached (or all 40 shards are one block) - no needless small blocks
        assert peak_resident(shards) >= min(40, block_shards) * 0.75


def test_block_quality_grows_with_the_block():
    q = [simulate(TEST_CATALOG, Shuffle("block", block_shards=k), world=1, batch=32).quality for k in (1, 4, 40)]
    assert q[0] < q[1] < q[2] and q[2] >= 0.97


def test_remote_sets_get_a_block_shuffle_sized_from_the_cache():
    # 10 GB cache, 300 MB shards: blocks of 16 shards (two blocks fit: one read, one being prefetched)
    assert resolve_shuffle("auto", block_shards=None, remote=True, max_shard_bytes=300 * 10**6,
                           cache_bytes=10 * 10**9) == Shuffle("block", block_shards=16)
    assert resolve_shuffle("auto", block_shards=5, remote=True, max_shard_bytes=1, cache_bytes=1).block_shards == 5
    assert resolve_shuffle("auto", block_shards=None, remote=True, max_shard_bytes=10**9,
                           cache_bytes=10**9).block_shards == 1  # at least one shard per block
    assert resolve_shuffle("uniform", block_shards=None, remote=True, max_shard_bytes=1, cache_bytes=1) == \
        Shuffle("uniform")


def test_peak_resident_counts_overlapping_read_intervals():
    assert peak_resident(np.array([0, 0, 1, 1, 2, 2])) == 1
    assert peak_resident(np.array([0, 1, 0, 2, 1, 2])) == 2
    assert peak_resident(np.array([0, 1, 2, 0, 1, 2])) == 3
    assert peak_resident(np.array([], np.int64)) == 0


def test_uniform_expectation_is_exact():
    assert expected_distinct(np.array([1, 1]), 1) == pytest.approx(1.0)
    assert expected_distinct(np.array([2, 2]), 2) == pytest.approx(1 + 4 / 6)  # P(two routes) = 4/6
    assert expected_distinct(np.array([5, 0, 5]), 10) == pytest.approx(2.0)
    rng = np.random.default_rng(0)  # against a Monte-Carlo estimate on uneven routes
    counts = np.array([1, 3, 7, 20, 2])
    pool = np.repeat(np.arange(5), counts)
    mc = np.mean([len(set(rng.choice(pool, 6, replace=False).tolist())) for _ in range(20000)])
    assert expected_distinct(counts, 6) == pytest.approx(mc, abs=0.03)


def test_simulator_cli_prints_the_table_and_writes_the_plot(tmp_path, capsys):
    png, js = tmp_path / "q.png", tmp_path / "q.json"
    assert plan_main(["simulate", "--frames", "20000", "--route-frames", "200", "--shard-samples", "500",
                      "--world", "4", "--batch", "32", "--block-shards", "4,40",
                      "--png", str(png), "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "| uniform |" in out and "| block(block_shards=4) |" in out and "| block(block_shards=40) |" in out
    rows = {r["shuffle"]: r for r in __import__("json").loads(js.read_text())["rows"]}
    assert rows["uniform"]["quality"] >= 0.95 and rows["block(block_shards=4)"]["peak_resident_shards"] <= 4
    assert png.stat().st_size > 10_000
    assert plan_main(["simulate", "--frames", "0"]) == 2
    assert "error: need frames" in capsys.readouterr().err


def test_a_shuffle_is_a_value_that_pickles_copies_and_refuses_changes():
    import copy
    import pickle

    spec = Shuffle("block", block_shards=3)
    roundtrip = pickle.loads(pickle.dumps(spec))  # noqa: S301 - the bytes it just wrote
    assert roundtrip == spec == copy.deepcopy(spec) == Shuffle.from_state(spec.state())
    assert spec.state() == {"algorithm": "block", "block_shards": 3} and spec.block_shards == 3
    assert hash(spec) == hash(Shuffle("block", block_shards=3)) and spec != Shuffle("block", block_shards=4)
    with pytest.raises(AttributeError, match="Shuffle is immutable"):
        spec.block_shards = 5
    with pytest.raises(AttributeError, match="shuffle 'uniform' has no parameter 'block_shards'"):
        _ = Shuffle("uniform").block_shards
