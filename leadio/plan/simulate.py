"""Shuffle simulator: batch quality and shard residency of the real plan functions on a synthetic catalog.

No I/O: a catalog of any size is made of arrays (frames in routes, routes in buckets, bucket-grouped shards in
(route, frame) order, as `leadio.shard` writes them), and `global_sequence` + `rank_plan` plan it exactly as a
loader would. Per algorithm it reports:

- distinct routes per batch (mean over every rank's batches), against the expectation under a uniform shuffle
  of the same epoch (hypergeometric: sum over routes of 1 - C(N - n_r, B) / C(N, B));
- the lag-1 correlation of route ids inside a batch (consecutive slots; 0 when the order is uniform);
- shards touched per batch;
- peak resident shards: a shard must stay resident from its first read of the epoch to its last, and the
  peak is the largest number of such open intervals at any position of the global sequence (all ranks walk it
  in lockstep). This is what a session cache for a remote set must hold.

``python -m leadio.plan simulate --frames 1000000 --world 8 --batch 64`` prints the table and writes the plot
(quality against resident shards, one curve per algorithm).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from leadio.plan import Shuffle, global_sequence, rank_plan

__all__ = ["SimCatalog", "SimResult", "as_dicts", "expected_distinct", "peak_resident", "plot", "simulate",
           "synthetic_catalog", "table"]


@dataclass(frozen=True)
class SimCatalog:
    """A catalog as the plan sees it. Rows are in shard order.

    Attributes:
        bucket_rows: per bucket, its catalog rows.
        rates: per bucket, its rate.
        shard_of_row, route_of_row: int64 (rows,).
    """

    bucket_rows: list[np.ndarray]
    rates: list[float]
    shard_of_row: np.ndarray
    route_of_row: np.ndarray

    @property
    def num_shards(self) -> int:
        return int(self.shard_of_row.max()) + 1 if len(self.shard_of_row) else 0

    @property
    def num_routes(self) -> int:
        return int(self.route_of_row.max()) + 1 if len(self.route_of_row) else 0


def synthetic_catalog(frames: int, *, route_frames: int = 330, shard_samples: int = 1500,
                      rates: Sequence[float] = (1.0,), seed: int = 0) -> SimCatalog:
    """A LEAD-like catalog: routes of ``route_frames`` +-20% frames, each route in one bucket (drawn at
    random), each bucket written to its own shards of ``shard_samples`` samples in (route, frame) order.

    Args:
        frames: total frames (>= 1).
        route_frames: mean frames per route (LEAD: ~330).
        shard_samples: samples per shard (LEAD-size sets: ~1,500).
        rates: one rate per bucket (``full_pretrain`` is one bucket of rate 1).
        seed: the catalog's randomness (route lengths, bucket of each route).
    """
    if frames < 1 or route_frames < 1 or shard_samples < 1 or not rates:
        raise ValueError(f"need frames, route_frames, shard_samples >= 1 and one rate per bucket; got {frames}, "
                         f"{route_frames}, {shard_samples}, {list(rates)}")
    rng = np.random.default_rng(seed)
    lo, hi = max(1, round(route_frames * 0.8)), max(1, round(route_frames * 1.2))
    lengths = rng.integers(lo, hi + 1, size=frames // lo + 2)
    ends = np.cumsum(lengths)
    lengths = lengths[:int(np.searchsorted(ends, frames)) + 1]
    lengths[-1] -= int(lengths.sum()) - frames
    route_of_frame = np.repeat(np.arange(len(lengths)), lengths)
    bucket_of_route = rng.integers(0, len(rates), size=len(lengths))
    bucket_of_frame = bucket_of_route[route_of_frame]
    # the shard writer groups by bucket, keeps (route, frame) order, and cuts shards of shard_samples
    order = np.argsort(bucket_of_frame, kind="stable")
    route_of_row = route_of_frame[order]
    bucket_of_row = bucket_of_frame[order]
    shard_of_row = np.zeros(frames, np.int64)
    next_shard, bucket_rows = 0, []
    for b in range(len(rates)):
        rows = np.flatnonzero(bucket_of_row == b)
        shard_of_row[rows] = next_shard + np.arange(len(rows)) // shard_samples
        next_shard += -(-len(rows) // shard_samples)
        bucket_rows.append(rows.astype(np.int64))
    return SimCatalog(bucket_rows, [float(r) for r in rates], shard_of_row, route_of_row.astype(np.int64))


def expected_distinct(counts: np.ndarray, batch: int) -> float:
    """Expected distinct routes in ``batch`` samples drawn without replacement from an epoch whose route r has
    ``counts[r]`` samples (the uniform-shuffle expectation)."""
    counts = np.asarray(counts, np.float64)
    counts = counts[counts > 0]
    total = counts.sum()
    if batch > total:
        raise ValueError(f"batch {batch} exceeds the epoch's {int(total)} samples")
    # C(N - n, B) / C(N, B) through log-gamma
    lg = math.lgamma
    log_c_total = lg(total + 1) - lg(batch + 1) - lg(total - batch + 1)
    miss = np.array([math.exp(lg(total - n + 1) - lg(batch + 1) - lg(total - n - batch + 1) - log_c_total)
                     if total - n >= batch else 0.0 for n in counts])
    return float(np.sum(1.0 - miss))


def peak_resident(shards: np.ndarray) -> int:
    """Largest number of shards whose [first read, last read] intervals overlap at one position."""
    if len(shards) == 0:
        return 0
    n = int(shards.max()) + 1
    pos = np.arange(len(shards))
    first = np.full(n, len(shards))
    np.minimum.at(first, shards, pos)
    last = np.full(n, -1)
    np.maximum.at(last, shards, pos)
    used = last >= 0
    delta = np.zeros(len(shards) + 1, np.int64)
    np.add.at(delta, first[used], 1)
    np.add.at(delta, last[used] + 1, -1)
    return int(np.cumsum(delta).max())


@dataclass(frozen=True)
class SimResult:
    """One algorithm's figures (means over every rank's batches of the epochs simulated)."""

    shuffle: str
    distinct_routes: float
    uniform_expectation: float
    lag1_corr: float
    shards_per_batch: float
    peak_resident_shards: int

    @property
    def quality(self) -> float:
        """distinct routes per batch / the uniform expectation."""
        return self.distinct_routes / self.uniform_expectation


def simulate(cat: SimCatalog, shuffle: Shuffle | str, *, world: int, batch: int, epochs: Sequence[int] = (0,),
             seed: int = 0) -> SimResult:
    """Plan ``epochs`` of ``cat`` with ``shuffle`` for ``world`` ranks and measure its batches."""
    spec = Shuffle(shuffle) if isinstance(shuffle, str) else shuffle
    distinct, expect, corr, touched, peak = [], [], [], [], 0
    for epoch in epochs:
        rows, views = global_sequence(cat.bucket_rows, cat.rates, cat.shard_of_row, epoch=epoch, seed=seed,
                                      shuffle=spec)
        peak = max(peak, peak_resident(cat.shard_of_row[rows]))
        expect.append(expected_distinct(np.bincount(cat.route_of_row[rows]), batch))
        pairs = []
        for rank in range(world):
            plan = rank_plan(rows, views, epoch=epoch, world_size=world, rank=rank)
            nb = len(plan) // batch
            routes = cat.route_of_row[plan.rows[:nb * batch]].reshape(nb, batch)
            shards = cat.shard_of_row[plan.rows[:nb * batch]].reshape(nb, batch)
            distinct.append(_distinct_per_row(routes))
            touched.append(_distinct_per_row(shards))
            pairs.append(np.stack([routes[:, :-1].ravel(), routes[:, 1:].ravel()]))
        a, b = np.concatenate(pairs, axis=1).astype(np.float64)
        corr.append(float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 1.0)
    return SimResult(spec.describe(), float(np.mean(np.concatenate(distinct))), float(np.mean(expect)),
                     float(np.mean(corr)), float(np.mean(np.concatenate(touched))), peak)


def _distinct_per_row(a: np.ndarray) -> np.ndarray:
    s = np.sort(a, axis=1)
    return 1 + (s[:, 1:] != s[:, :-1]).sum(axis=1)


def table(results: Sequence[SimResult]) -> str:
    """A markdown table of ``results``."""
    lines = ["| shuffle | distinct routes / batch | uniform expectation | quality | lag-1 route corr | "
             "shards / batch | peak resident shards |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.shuffle} | {r.distinct_routes:.1f} | {r.uniform_expectation:.1f} | {r.quality:.1%} | "
                     f"{r.lag1_corr:.3f} | {r.shards_per_batch:.1f} | {r.peak_resident_shards} |")
    return "\n".join(lines)


def plot(results: Sequence[SimResult], path: str | Path, title: str) -> None:
    """Quality (distinct routes / uniform expectation) against peak resident shards, one curve per algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    styles = {"uniform": ("*", "C2"), "block": ("o", "C0")}
    for algo, (marker, colour) in styles.items():
        pts = sorted((r.peak_resident_shards, r.quality, r.shuffle) for r in results
                     if r.shuffle.split("(")[0] == algo)
        if not pts:
            continue
        xs, ys, names = zip(*pts, strict=True)
        ax.plot(xs, ys, marker=marker, color=colour, label=algo, markersize=9 if algo == "uniform" else 5)
        for x, y, name in pts:
            ax.annotate(name.removeprefix(algo).strip("()").replace(" shards", ""), (x, y), fontsize=7,
                        textcoords="offset points", xytext=(3, -9))
    ax.axhline(0.95, color="grey", lw=0.8, ls="--")
    ax.text(ax.get_xlim()[0], 0.955, " 95% of uniform", fontsize=8, color="grey", va="bottom")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("peak shards resident at once (what a session cache must hold), log scale")
    ax.set_ylabel("distinct routes per batch / uniform expectation")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def as_dicts(results: Sequence[SimResult]) -> list[dict]:
    """JSON-ready rows."""
    return [{**asdict(r), "quality": r.quality} for r in results]
