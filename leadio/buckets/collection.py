"""BucketCollection: named buckets of frames plus a per-epoch rate per bucket, stored as gzip'd JSON.

A bucket is a set of frames, kept as ``route rel_path -> frame ranges`` so it survives catalog rebuilds and
root moves (all paths are relative to the dataset root). A rate is LEAD's mixture: a dict ``{first_epoch:
rate}``, the rate of epoch e being the value of the largest key <= e (a plain number means ``{0: number}``).
In epoch e a bucket contributes round(len * rate(e)) samples; the epoch plan (``leadio.plan``) does that.

Files keep LEAD's names (``<root>/buckets/full_pretrain_buckets.gz`` ...) but hold gzip-compressed JSON, not
a pickle: readable anywhere, and loading one can never run code.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leadio.files import atomic_write_bytes

__all__ = ["BUCKETS_FORMAT_VERSION", "Bucket", "BucketCollection", "BucketFileError", "RouteChanges", "rate_at"]

BUCKETS_FORMAT_VERSION = 1


class BucketFileError(ValueError):
    """A bucket file cannot be read or is not a leadio bucket file."""


def _normalise_rate(rate: float | Mapping) -> dict[int, float]:
    if isinstance(rate, Mapping):
        schedule = {int(k): float(v) for k, v in rate.items()}
    else:
        schedule = {0: float(rate)}
    if 0 not in schedule:
        raise ValueError(f"rate schedule {dict(rate)} must define epoch 0")
    bad = {k: v for k, v in schedule.items() if not (v >= 0 and np.isfinite(v)) or k < 0}
    if bad:
        raise ValueError(f"rates must be finite and >= 0 for epochs >= 0, got {bad}")
    return dict(sorted(schedule.items()))


def rate_at(schedule: Mapping[int, float], epoch: int) -> float:
    """The rate in force at ``epoch``: the value of the largest key <= epoch."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return float(schedule[max(k for k in schedule if k <= epoch)])


def _to_ranges(frames: np.ndarray) -> list[list[int]]:
    """Sorted unique frames -> [[start, stop), ...] runs."""
    if len(frames) == 0:
        return []
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(frames)]])
    return [[int(frames[a]), int(frames[b - 1]) + 1] for a, b in zip(starts, stops, strict=True)]


def _from_ranges(ranges: list[list[int]]) -> np.ndarray:
    if not ranges:
        return np.zeros(0, np.int32)
    return np.concatenate([np.arange(a, b, dtype=np.int32) for a, b in ranges])


@dataclass
class Bucket:
    """One bucket: its name, its frames per route, and its rate schedule."""

    name: str
    members: dict[str, np.ndarray]
    rate: dict[int, float] = field(default_factory=lambda: {0: 1.0})

    def __post_init__(self):
        self.rate = _normalise_rate(self.rate)
        self.members = {r: np.unique(np.asarray(f, dtype=np.int32)) for r, f in self.members.items() if len(f)}

    def __len__(self) -> int:
        return int(sum(len(f) for f in self.members.values()))

    def rate_at(self, epoch: int) -> float:
        return rate_at(self.rate, epoch)

    def frames(self) -> list[tuple[str, int]]:
        """All (route, frame) members, in route then frame order."""
        return [(r, int(f)) for r in sorted(self.members) for f in self.members[r]]


@dataclass
class RouteChanges:
    """Difference between the routes a collection was built from and the routes on disk now."""

    added: list[str]
    removed: list[str]
    changed: list[str]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def describe(self) -> str:
        parts = []
        for what, items in (("added", self.added), ("removed", self.removed), ("changed frame count", self.changed)):
            if items:
                shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
                parts.append(f"{len(items)} {what} ({shown})")
        return "; ".join(parts) or "no change"


@dataclass
class BucketCollection:
    """Named buckets plus how they were built.

    Attributes:
        name: collection name (e.g. ``full_pretrain``).
        buckets: the buckets, in order.
        builder: registry name of the function that builds it (so a stale file can be rebuilt).
        params: that builder's parameters.
        routes: trainable route rel_path -> frame count at build time (the staleness reference).
        totals: LEAD's counters (total_routes, trainable_routes, all_frames, trainable_frames).
    """

    name: str
    buckets: list[Bucket]
    builder: str
    params: dict
    routes: dict[str, int]
    totals: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(b) for b in self.buckets)

    def bucket(self, name: str) -> Bucket:
        for b in self.buckets:
            if b.name == name:
                return b
        raise KeyError(f"collection {self.name!r} has no bucket {name!r}; buckets: {[b.name for b in self.buckets]}")

    def rates_at(self, epoch: int) -> list[float]:
        return [b.rate_at(epoch) for b in self.buckets]

    def changes_since_build(self, routes_now: Mapping[str, int]) -> RouteChanges:
        """Compare the recorded routes with ``routes_now`` (trainable rel_path -> frame count)."""
        before, now = set(self.routes), set(routes_now)
        return RouteChanges(
            added=sorted(now - before),
            removed=sorted(before - now),
            changed=sorted(r for r in before & now if self.routes[r] != routes_now[r]),
        )

    def rows(self, route_rows: Mapping[str, tuple[int, int]]) -> list[np.ndarray]:
        """Catalog row indices of each bucket's members.

        Args:
            route_rows: route rel_path -> (row_start, row_stop) in a catalog whose rows of a route are its
                frames 0..n-1 in order (``Catalog.route_rows()``).

        Raises:
            KeyError: a member's route or frame is not in the catalog (names the bucket, route and frame).
        """
        out = []
        for b in self.buckets:
            parts = []
            for route, frames in sorted(b.members.items()):
                if route not in route_rows:
                    raise KeyError(f"bucket {b.name!r} of collection {self.name!r} names route {route!r}, "
                                   f"which the catalog lacks")
                start, stop = route_rows[route]
                idx = start + frames.astype(np.int64)
                if len(idx) and (idx.min() < start or idx.max() >= stop):
                    bad = int(frames[(idx < start) | (idx >= stop)][0])
                    raise KeyError(f"bucket {b.name!r} of collection {self.name!r} names frame {bad} of route "
                                   f"{route!r}, beyond the {stop - start} frames the catalog has")
                parts.append(idx)
            out.append(np.concatenate(parts) if parts else np.zeros(0, np.int64))
        return out

    # ----------------------------------------------------------------------------------------- storage
    def to_json(self) -> dict:
        return {
            "format": "leadio-buckets",
            "version": BUCKETS_FORMAT_VERSION,
            "name": self.name,
            "builder": self.builder,
            "params": self.params,
            "routes": self.routes,
            "totals": self.totals,
            "buckets": [
                {"name": b.name, "rate": {str(k): v for k, v in b.rate.items()},
                 "members": {r: _to_ranges(f) for r, f in sorted(b.members.items())}}
                for b in self.buckets
            ],
        }

    @classmethod
    def from_json(cls, data: dict, source: str = "<memory>") -> BucketCollection:
        if not isinstance(data, dict) or data.get("format") != "leadio-buckets":
            raise BucketFileError(f"{source} is not a leadio bucket file (no format marker 'leadio-buckets'); "
                                  f"delete it or rebuild with force_rebuild=True")
        if data.get("version") != BUCKETS_FORMAT_VERSION:
            raise BucketFileError(f"{source} has bucket format version {data.get('version')}, expected "
                                  f"{BUCKETS_FORMAT_VERSION}; rebuild it with force_rebuild=True")
        try:
            buckets = [Bucket(b["name"], {r: _from_ranges(rg) for r, rg in b["members"].items()}, b["rate"])
                       for b in data["buckets"]]
            return cls(name=data["name"], buckets=buckets, builder=data["builder"], params=data["params"],
                       routes={str(k): int(v) for k, v in data["routes"].items()}, totals=data.get("totals", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise BucketFileError(f"{source} is a malformed leadio bucket file ({type(e).__name__}: {e}); "
                                  f"delete it or rebuild with force_rebuild=True") from e

    def save(self, path: str | Path) -> None:
        """Write atomically as gzip-compressed JSON (deterministic bytes: no timestamp in the gzip header)."""
        raw = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()
        atomic_write_bytes(path, gzip.compress(raw, compresslevel=6, mtime=0))

    @classmethod
    def load(cls, path: str | Path) -> BucketCollection:
        """Read a bucket file.

        Raises:
            FileNotFoundError: no such file.
            BucketFileError: the file is not a readable leadio bucket file (LEAD's own pickled buckets
                included: they are refused, never unpickled).
        """
        path = Path(path)
        raw = path.read_bytes()
        try:
            data = json.loads(gzip.decompress(raw))
        except (OSError, EOFError, zlib.error, json.JSONDecodeError, UnicodeDecodeError) as e:
            hint = " (it looks like LEAD's own lzma-pickled bucket file)" if raw[:6] == b"\xfd7zXZ\x00" else ""
            raise BucketFileError(f"cannot read bucket file {path}{hint}: expected gzip-compressed JSON written by "
                                  f"leadio ({type(e).__name__}: {e}); delete it or rebuild with "
                                  f"force_rebuild=True") from e
        return cls.from_json(data, str(path))
