"""The epoch plan: exactly which samples each rank sees in epoch e, in which order and from which view.

A pure function of (bucket rows, rates, shard of each row, shuffle, epoch, seed, world size, rank) — no I/O,
no torch.distributed, no global RNG — so every rank, every loader worker, a test, the simulator and a
benchmark compute the same plan from the same inputs.

Construction of the *global* sequence of epoch e (rng = ``default_rng([seed, epoch])``):

1. bucket b contributes round(len_b * rate_b(e)) samples: a random subset when the rate is <= 1; whole passes
   plus a random remainder when it is > 1 (LEAD's semantics, with round instead of int); rate 0 costs nothing.
2. the chosen samples are ordered by the shuffle algorithm (`leadio.plan.shuffle`): ``uniform`` (default for
   local sets: batches as diverse as the reference's uniform shuffle), ``block`` (remote sets: at most
   ``block_shards`` shards resident at once).
3. each sample draws its sensor view: perturbated with probability ``perturbation_rate`` (LEAD: 0.5).

Ranks take the global sequence interleaved (rank r gets positions r, r+W, r+2W, ...) after dropping the last
len % W samples (or padding by repeating the first ones), so every rank has the same count. Interleaving makes
the consumed part of an epoch a *prefix* of the global sequence whatever the world size: resuming after
``consumed`` samples is "plan the rest, ``global[consumed:]``, for the new world size" — no sample repeated or
lost, even when the world size changed.

What a batch is made of: rank r's batch k holds global positions r + W*(kB + j), j < B, so the W ranks'
batches k together are one contiguous stretch of W*B positions of the global sequence. Under ``uniform`` that
stretch is a uniform sample of the epoch; under ``block`` it is a uniform sample of the current block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from leadio.plan.shuffle import PLAN_VERSION, SHUFFLES, Shuffle, resolve_shuffle

__all__ = ["PLAN_VERSION", "SHUFFLES", "EpochPlan", "Shuffle", "bucket_counts", "global_sequence", "rank_plan",
           "resolve_shuffle"]


@dataclass(frozen=True)
class EpochPlan:
    """One rank's samples for one epoch.

    Attributes:
        rows: int64 (n,) catalog rows of the shard set, in the order they are served.
        views: uint8 (n,) 0 = normal view, 1 = perturbated view.
        epoch, rank, world_size, start: the inputs (``start`` = global samples already consumed).
    """

    rows: np.ndarray
    views: np.ndarray
    epoch: int
    rank: int
    world_size: int
    start: int

    def __len__(self) -> int:
        return len(self.rows)


def bucket_counts(sizes: Sequence[int], rates: Sequence[float]) -> list[int]:
    """Samples each bucket contributes: round(size * rate)."""
    if len(sizes) != len(rates):
        raise ValueError(f"{len(sizes)} buckets but {len(rates)} rates")
    return [int(round(n * r)) for n, r in zip(sizes, rates, strict=True)]


def global_sequence(bucket_rows: Sequence[np.ndarray], rates: Sequence[float], shard_of_row: np.ndarray, *,
                    epoch: int, seed: int, perturbation_rate: float = 0.5, shuffle: Shuffle | str = "uniform"
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The epoch's global sample order and views (see the module docstring).

    Args:
        bucket_rows: per bucket, the catalog rows of its members (distinct within a bucket).
        rates: per bucket, the rate in force this epoch (>= 0).
        shard_of_row: shard index of every catalog row (the catalog is sorted by shard).
        epoch, seed: with the other inputs, determine everything.
        perturbation_rate: probability of serving the perturbated view.
        shuffle: a `Shuffle`, or the name of an algorithm that needs no parameters (``"uniform"``).

    Returns:
        (rows int64 (L,), views uint8 (L,)).
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if not 0.0 <= perturbation_rate <= 1.0:
        raise ValueError(f"perturbation_rate must be in [0, 1], got {perturbation_rate}")
    spec = Shuffle(shuffle) if isinstance(shuffle, str) else shuffle
    rng = np.random.default_rng([seed, epoch])
    counts = bucket_counts([len(b) for b in bucket_rows], rates)
    chosen = []
    for rows, count in zip(bucket_rows, counts, strict=True):
        rows = np.asarray(rows, dtype=np.int64)
        passes, rest = divmod(count, len(rows)) if len(rows) else (0, 0)
        chosen += [rows] * passes
        if rest:
            chosen.append(rng.choice(rows, size=rest, replace=False))
    if not chosen:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    rows = np.sort(np.concatenate(chosen), kind="stable")
    rows = SHUFFLES[spec.algorithm](rows, shard_of_row[rows], rng, **spec.params)
    views = (rng.random(len(rows)) < perturbation_rate).astype(np.uint8)
    return rows, views


def rank_plan(rows: np.ndarray, views: np.ndarray, *, epoch: int, world_size: int, rank: int, start: int = 0,
              uneven: str = "drop") -> EpochPlan:
    """Split the global sequence (from position ``start`` on) among ``world_size`` ranks, interleaved.

    Args:
        rows, views: from `global_sequence`.
        epoch: recorded in the plan.
        world_size, rank: the topology.
        start: global samples already consumed this epoch (resume).
        uneven: ``"drop"`` drops the last (L - start) % world_size samples; ``"pad"`` repeats samples from the
            start of the remainder so that every rank gets ceil((L - start) / world_size).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if not 0 <= start <= len(rows):
        raise ValueError(f"start {start} outside the epoch's {len(rows)} samples")
    rest_rows, rest_views = rows[start:], views[start:]
    n = len(rest_rows)
    if uneven == "drop":
        keep = n - n % world_size
        rest_rows, rest_views = rest_rows[:keep], rest_views[:keep]
    elif uneven == "pad":
        pad = (-n) % world_size
        if pad and n:
            idx = np.arange(pad) % n
            rest_rows = np.concatenate([rest_rows, rest_rows[idx]])
            rest_views = np.concatenate([rest_views, rest_views[idx]])
    else:
        raise ValueError(f"uneven must be 'drop' or 'pad', got {uneven!r}")
    return EpochPlan(rows=rest_rows[rank::world_size].copy(), views=rest_views[rank::world_size].copy(),
                     epoch=epoch, rank=rank, world_size=world_size, start=start)
