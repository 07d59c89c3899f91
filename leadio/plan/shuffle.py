"""Shuffle algorithms of the epoch plan: how the epoch's chosen samples are ordered.

Each algorithm is a pure function ``(rows, shards, rng, spec) -> rows`` over the epoch's chosen catalog rows,
given grouped by shard in offset order (``shards`` = the shard of each row), behind the name -> function dict
`SHUFFLES`. The trade-off they make is batch diversity against the number of shards that must be resident at
once (what a session cache for a remote set must hold):

- ``uniform``: one permutation of the whole epoch, the reference's ``DistributedSampler(shuffle=True)``. A
  batch of 64 at LEAD scale holds frames of ~63 routes. Every shard is needed from the epoch's first batch to
  its last, which costs nothing on a local set (members are read by byte range) but would thrash a bounded
  cache. The default for local sets.
- ``block``: the shards are shuffled, cut into blocks of at most ``block_shards`` shards (balanced sizes), and
  each block's samples are permuted together (MosaicML Streaming's ``py1b``; their ``py1br`` randomises block
  sizes to stagger nodes, which leadio does not need: all ranks read one global sequence). At most
  ``block_shards`` shards are resident at once, and a batch draws from all of them: a block of k shards of
  ~4.5 routes each gives a batch of 64 about ``4.5k * (1 - exp(-64 / 4.5k))`` distinct routes. The default for
  remote sets, with ``block_shards`` sized from the session cache bound.
- ``window``: the version-1 order, kept to resume version-1 states and as the simulator's baseline: shard
  blocks shuffled, then permuted within windows of ``window`` samples. Batches of ~2 routes at LEAD scale.

`python -m leadio.plan simulate` measures all three on a synthetic catalog of any size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["PLAN_VERSION", "SHUFFLES", "Shuffle", "block", "resolve_shuffle", "uniform", "window"]

PLAN_VERSION = 2  # 1: window shuffle only; 2: named shuffle algorithms (the name is part of the loader state)


@dataclass(frozen=True)
class Shuffle:
    """A shuffle algorithm and its parameters (see the module docstring).

    Attributes:
        algorithm: a name in `SHUFFLES`: ``"uniform"``, ``"block"`` or ``"window"``.
        block_shards: ``block`` only: shards per block (>= 1), the bound on shards resident at once.
        window: ``window`` only: permutation window in samples (>= 1).
    """

    algorithm: str = "uniform"
    block_shards: int | None = None
    window: int = 256

    def __post_init__(self) -> None:
        if self.algorithm not in SHUFFLES:
            raise ValueError(f"shuffle must be one of {sorted(SHUFFLES)}, got {self.algorithm!r}")
        if self.algorithm == "block" and (self.block_shards is None or self.block_shards < 1):
            raise ValueError(f"shuffle 'block' needs block_shards >= 1, got {self.block_shards!r}")
        if self.window < 1:
            raise ValueError(f"shuffle window must be >= 1, got {self.window}")

    def state(self) -> dict:
        """The parameters that determine the order (for loader states and messages)."""
        if self.algorithm == "block":
            return {"algorithm": "block", "block_shards": int(self.block_shards)}
        if self.algorithm == "window":
            return {"algorithm": "window", "window": int(self.window)}
        return {"algorithm": self.algorithm}

    def describe(self) -> str:
        """``uniform``, ``block(64 shards)`` or ``window(256)``."""
        if self.algorithm == "block":
            return f"block({self.block_shards} shards)"
        if self.algorithm == "window":
            return f"window({self.window})"
        return self.algorithm

    @classmethod
    def from_state(cls, state: dict) -> Shuffle:
        return cls(state["algorithm"], state.get("block_shards"), state.get("window", 256))


def _shard_blocks(rows: np.ndarray, shards: np.ndarray) -> list[np.ndarray]:
    """``rows`` (grouped by shard) split into one array per shard."""
    starts = np.flatnonzero(np.r_[True, shards[1:] != shards[:-1]])
    return np.split(rows, starts[1:])


def uniform(rows: np.ndarray, shards: np.ndarray, rng: np.random.Generator, spec: Shuffle) -> np.ndarray:
    """One uniform permutation of the epoch."""
    return rng.permutation(rows)


def block(rows: np.ndarray, shards: np.ndarray, rng: np.random.Generator, spec: Shuffle) -> np.ndarray:
    """Shuffled shards, cut into balanced blocks of <= ``spec.block_shards`` shards, each block permuted."""
    per_shard = _shard_blocks(rows, shards)
    order = rng.permutation(len(per_shard))
    n_blocks = -(-len(per_shard) // spec.block_shards)
    out = [rng.permutation(np.concatenate([per_shard[i] for i in part]))
           for part in np.array_split(order, n_blocks)]
    return np.concatenate(out)


def window(rows: np.ndarray, shards: np.ndarray, rng: np.random.Generator, spec: Shuffle) -> np.ndarray:
    """Version-1 order: shuffled shard blocks, then a permutation within each window of ``spec.window``."""
    per_shard = _shard_blocks(rows, shards)
    order = rng.permutation(len(per_shard))
    out = np.concatenate([per_shard[i] for i in order])
    for a in range(0, len(out), spec.window):
        out[a:a + spec.window] = rng.permutation(out[a:a + spec.window])
    return out


SHUFFLES: dict[str, Callable[[np.ndarray, np.ndarray, np.random.Generator, Shuffle], np.ndarray]] = {
    "uniform": uniform,
    "block": block,
    "window": window,
}


def resolve_shuffle(shuffle: str | Shuffle, *, block_shards: int | None, remote: bool, max_shard_bytes: int,
                    cache_bytes: int) -> Shuffle:
    """The loader's shuffle: ``"auto"`` is ``uniform`` for a local set and ``block`` for a remote one.

    A ``block`` shuffle without ``block_shards`` gets as many shards per block as fit twice in the session
    cache (``cache_bytes // (2 * max_shard_bytes)``, at least 1): one block being read, room for the next one
    that prefetching workers and other ranks already start on.
    """
    if isinstance(shuffle, Shuffle):
        return shuffle
    name = ("block" if remote else "uniform") if shuffle == "auto" else shuffle
    if name == "block" and block_shards is None:
        block_shards = max(1, int(cache_bytes) // max(1, 2 * int(max_shard_bytes)))
    if name not in SHUFFLES:
        raise ValueError(f"shuffle must be 'auto' or one of {sorted(SHUFFLES)}, got {shuffle!r}")
    return Shuffle(name, block_shards if name == "block" else None)
