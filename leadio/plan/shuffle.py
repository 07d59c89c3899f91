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

Each algorithm declares its own parameters as keyword-only arguments (``block(..., *, block_shards)``); a
`Shuffle` names an algorithm and gives them, checked against that signature. A new algorithm is one function
and one row of `SHUFFLES`.

`python -m leadio.plan simulate` measures them on a synthetic catalog of any size.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

__all__ = ["PLAN_VERSION", "SHUFFLES", "Shuffle", "block", "resolve_shuffle", "uniform"]

PLAN_VERSION = 2  # 2: named shuffle algorithms (the name and parameters are part of the loader state)


class Shuffle:
    """A shuffle algorithm of `SHUFFLES` and its parameters, e.g. ``Shuffle("block", block_shards=64)``.

    Raises:
        ValueError: an unknown algorithm, an unknown or missing parameter, or a value that is not an int >= 1
            (every parameter so far is a count).
    """

    __slots__ = ("algorithm", "params")

    def __init__(self, algorithm: str = "uniform", **params: int):
        if algorithm not in SHUFFLES:
            raise ValueError(f"shuffle must be one of {sorted(SHUFFLES)}, got {algorithm!r}")
        declared = [p.name for p in inspect.signature(SHUFFLES[algorithm]).parameters.values()
                    if p.kind == p.KEYWORD_ONLY]
        unknown = sorted(set(params) - set(declared))
        if unknown:
            raise ValueError(f"shuffle {algorithm!r} takes {declared or 'no parameters'}, got {unknown}")
        for name in declared:
            value = params.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"shuffle {algorithm!r} needs {name} >= 1, got {value!r}")
        object.__setattr__(self, "algorithm", algorithm)
        object.__setattr__(self, "params", {k: int(params[k]) for k in declared})

    def __setattr__(self, name, value):
        raise AttributeError("Shuffle is immutable")

    def __reduce__(self):  # pickle and copy rebuild it through __init__ (which checks it again)
        return _shuffle_from_state, (self.state(),)

    def __getattr__(self, name: str) -> int:  # only called for names that are not slots: the parameters
        params = object.__getattribute__(self, "params")
        if name in params:
            return params[name]
        raise AttributeError(f"shuffle {self.algorithm!r} has no parameter {name!r}")

    def __eq__(self, other) -> bool:
        return isinstance(other, Shuffle) and self.state() == other.state()

    def __hash__(self) -> int:
        return hash((self.algorithm, tuple(sorted(self.params.items()))))

    def __repr__(self) -> str:
        return f"Shuffle({self.algorithm!r}{''.join(f', {k}={v}' for k, v in self.params.items())})"

    def state(self) -> dict:
        """The algorithm and the parameters that determine the order (for loader states and messages)."""
        return {"algorithm": self.algorithm, **self.params}

    def describe(self) -> str:
        """``uniform`` or ``block(block_shards=64)``."""
        if not self.params:
            return self.algorithm
        return f"{self.algorithm}({', '.join(f'{k}={v}' for k, v in self.params.items())})"

    @classmethod
    def from_state(cls, state: dict) -> Shuffle:
        return cls(**{k: v for k, v in state.items() if k != "algorithm"}, algorithm=state["algorithm"])


def _shuffle_from_state(state: dict) -> Shuffle:
    return Shuffle.from_state(state)


def _shard_blocks(rows: np.ndarray, shards: np.ndarray) -> list[np.ndarray]:
    """``rows`` (grouped by shard) split into one array per shard."""
    starts = np.flatnonzero(np.r_[True, shards[1:] != shards[:-1]])
    return np.split(rows, starts[1:])


def uniform(rows: np.ndarray, shards: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniform permutation of the epoch."""
    return rng.permutation(rows)


def block(rows: np.ndarray, shards: np.ndarray, rng: np.random.Generator, *, block_shards: int) -> np.ndarray:
    """Shuffled shards, cut into balanced blocks of <= ``block_shards`` shards, each block permuted."""
    per_shard = _shard_blocks(rows, shards)
    order = rng.permutation(len(per_shard))
    n_blocks = -(-len(per_shard) // block_shards)
    out = [rng.permutation(np.concatenate([per_shard[i] for i in part]))
           for part in np.array_split(order, n_blocks)]
    return np.concatenate(out)


#: name -> ``order(rows, shards, rng, **params) -> rows``; its keyword-only arguments are its parameters.
SHUFFLES: dict[str, Callable[..., np.ndarray]] = {
    "uniform": uniform,
    "block": block,
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
    if name not in SHUFFLES:
        raise ValueError(f"shuffle must be 'auto' or one of {sorted(SHUFFLES)}, got {shuffle!r}")
    if name == "block":
        if block_shards is None:
            block_shards = max(1, int(cache_bytes) // max(1, 2 * int(max_shard_bytes)))
        return Shuffle("block", block_shards=block_shards)
    return Shuffle(name)
