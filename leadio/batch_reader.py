"""One batch of a shard set, from catalog rows to tensors: the loader's read and decode step.

`BatchReader.read_raw` reads the members of a batch's samples by byte range (one ``pread`` per sample on a
local set, member by member through the session cache on a remote one), checks their hashes, and records which
samples could not be read; `BatchReader.load` decodes them into a slot of the engine's ring (`leadio.engine`)
with the loader's decode backend (`leadio.decode.BACKENDS`), and replaces unreadable samples by a good one of
the same batch when the user chose ``on_error="skip"``. It is the one way a sample is read and decoded: the
loader and `leadio.dataset.SampleDataset` both use it. It holds no epoch state: the caller passes rows and
views.
"""

from __future__ import annotations

import os

import numpy as np

from leadio.decode.cpu import batch_views
from leadio.engine import BatchRing
from leadio.schema import Member, member_name
from leadio.shard.shardset import ShardSet, ShardSetError

__all__ = ["BatchReader"]


class BatchReader:
    """Reads and decodes batches of samples of one shard set.

    Args:
        shard_set: the opened set.
        members: the members to read (`leadio.schema.members_for_keys`).
        decoder: a backend instance of `leadio.decode.BACKENDS`.
        on_error: ``"raise"`` (the first unreadable sample raises `ShardSetError`) or ``"skip"``.
    """

    def __init__(self, shard_set: ShardSet, members: dict[str, Member], decoder, on_error: str):
        self.ss, self.members, self.decoder, self.on_error = shard_set, members, decoder, on_error
        # catalog columns of the members per view (0 normal, 1 perturbated)
        self._cols = np.array([[shard_set.members.index(member_name(m, v)) for m in members.values()]
                               for v in ("normal", "perturbated")], np.int64)

    def read_raw(self, rows: np.ndarray, views: np.ndarray) -> tuple[dict, dict[int, str]]:
        """Read the members of ``rows`` (per shard in offset order). Returns the raw batch and the batch
        positions that could not be read (with the reason); with on_error='raise' the first one raises.

        A local set is read with one ``pread`` per sample covering its members (they are adjacent in the tar),
        through one open file per shard and batch: the decode threads hold the GIL between system calls, so
        fewer calls leave more of it to the others. A sample whose span is not worth it (a few keys far
        apart), or whose fast read fails, is read member by member by `ShardSet.read_member_bytes`, which
        names what went wrong.
        """
        raw: dict = {name: [b""] * len(rows) for name in self.members}
        failures: dict[int, str] = {}
        cat = self.ss.catalog
        order = np.lexsort((cat["member_offset"][rows, 0], cat["shard"][rows]))
        fds: dict[int, int] = {}
        try:
            for i in order:
                row, v = int(rows[i]), int(views[i])
                try:
                    if self.ss.cache is None and self._read_span(row, self._cols[v], raw, int(i), fds):
                        continue
                    for name, member in self.members.items():
                        raw[name][i] = self.ss.read_member_bytes(row, member_name(member, ("normal", "perturbated")[v]))
                except (ShardSetError, OSError) as e:
                    failures[int(i)] = str(e).removeprefix(f"{self.ss.describe(row)}: ")
                    self.check(rows, failures)
        finally:
            for fd in fds.values():
                os.close(fd)
        raw["row"], raw["view"] = rows, views
        return raw, failures

    def _read_span(self, row: int, cols: np.ndarray, raw: dict, i: int, fds: dict[int, int]) -> bool:
        """Read sample ``row``'s members ``cols`` by one pread into ``raw[...][i]`` (memoryviews; hashes checked
        as `ShardSet.read_member_bytes` does). False when the span is not worth it or the read comes up short."""
        cat = self.ss.catalog
        offsets, sizes = cat["member_offset"][row, cols], cat["member_size"][row, cols]
        lo, hi = int(offsets.min()), int((offsets + sizes).max())
        if hi - lo > 2 * int(sizes.sum()) + 8192:
            return False
        shard = int(cat["shard"][row])
        fd = fds.get(shard)
        if fd is None:
            try:
                fd = fds[shard] = os.open(self.ss.shard_path(shard), os.O_RDONLY)
            except OSError:
                return False
        data = os.pread(fd, hi - lo, lo)
        if len(data) != hi - lo:
            return False
        span = memoryview(data)
        for name, col, off, size in zip(self.members, cols.tolist(), offsets.tolist(), sizes.tolist(), strict=True):
            member = span[off - lo:off - lo + size]
            if self.ss.verify:
                self.ss.check_member(row, col, member)
            raw[name][i] = member
        return True

    def check(self, rows: np.ndarray, failures: dict[int, str]) -> None:
        """Raise `ShardSetError` for the first failed sample, unless the user chose ``on_error="skip"``."""
        if failures and self.on_error != "skip":
            i = min(failures)
            raise ShardSetError(f"{self.ss.describe(int(rows[i]))}: {failures[i]}")

    def _substitute(self, out: dict, rows: np.ndarray, failures: dict[int, str]) -> list[str]:
        """Replace failed samples by the first good one of the batch (equal batch shapes on every rank)."""
        good = [i for i in range(len(rows)) if i not in failures]
        if not good:
            raise ShardSetError(f"every sample of a batch is unreadable; first: "
                                f"{self.ss.describe(int(rows[0]))}: {failures[min(failures)]}")
        names = [f"{self.ss.catalog['sample_key'][int(rows[i])]}: {why}" for i, why in sorted(failures.items())]
        for value in out.values():
            for i in failures:
                value[i] = value[good[0]]
        return names

    def load(self, rows: np.ndarray, views: np.ndarray, ring: BatchRing) -> dict:
        """Read and decode one batch into a slot of ``ring``; ``_bad`` lists the substituted samples."""
        slot = ring.acquire()
        try:
            raw, failures = self.read_raw(rows, views)
            elsewhere = self.decoder.decode(raw, self.members, slot.arrays, slot.tensors, failures)
            self.check(rows, failures)
        except BaseException:
            ring.give_back(slot)
            raise
        buffers = {**ring.lend(slot), **elsewhere}  # from here the slot returns to the ring when the batch is dropped
        out = batch_views(buffers, self.members, rows, views)
        out["_bad"] = self._substitute(out, rows, failures) if failures else []
        return out
