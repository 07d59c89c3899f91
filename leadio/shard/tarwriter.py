"""Deterministic tar writing with the byte offset of every member, and DALI's index format.

Tars are plain POSIX (ustar) archives readable by ``tarfile``, ``webdataset`` and DALI. Headers carry no
timestamps or owners, so the same samples always give the same bytes (a rebuilt or resumed shard is
byte-identical to an uninterrupted one). Member names are ``<key>.<suffix>`` with ``<key>`` free of dots, as
WebDataset groups members by the part of the base name before its first dot.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from typing import BinaryIO

import xxhash

__all__ = ["DALI_INDEX_VERSION", "ShardTarWriter", "dali_index_text", "parse_dali_index"]

DALI_INDEX_VERSION = "v1.2"


class _HashingWriter(io.RawIOBase):
    """File wrapper hashing (xxh3-128) and counting what is written through it."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.hash = xxhash.xxh3_128()
        self.size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def write(self, data) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.f.write(data)


class ShardTarWriter:
    """Writes samples into one tar and records where each member's data starts.

    Attributes:
        samples: per sample ``(key, [(suffix, data_offset, size), ...], sample_xxh3_64)``.
    """

    def __init__(self, f: BinaryIO):
        self._out = _HashingWriter(f)
        self._tar = tarfile.open(fileobj=self._out, mode="w", format=tarfile.USTAR_FORMAT)
        self.samples: list[tuple[str, list[tuple[str, int, int]], str]] = []

    def add_sample(self, key: str, members: Iterable[tuple[str, bytes]]) -> None:
        if "." in key.rsplit("/", 1)[-1]:
            raise ValueError(f"sample key {key!r} has a dot in its base name; WebDataset would split it there")
        entries = []
        h = xxhash.xxh3_64()
        for suffix, data in members:
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size = len(data)
            info.mode = 0o644
            header = info.tobuf(self._tar.format, self._tar.encoding, self._tar.errors)
            offset = self._tar.offset + len(header)
            self._tar.addfile(info, io.BytesIO(data))
            entries.append((suffix, offset, len(data)))
            h.update(data)
        self.samples.append((key, entries, h.hexdigest()))

    def close(self) -> tuple[int, str]:
        """Finish the archive; returns (total bytes, xxh3-128 hex of the whole file)."""
        self._tar.close()
        return self._out.size, self._out.hash.hexdigest()


def dali_index_text(samples: list[tuple[str, list[tuple[str, int, int]], str]]) -> str:
    """The index DALI's ``wds2idx`` writes: ``v1.2 <n>`` then per sample ``ext offset size name ...``."""
    lines = [f"{DALI_INDEX_VERSION} {len(samples)}"]
    for key, entries, _ in samples:
        lines.append(" ".join(f"{suffix} {offset} {size} {key}.{suffix}" for suffix, offset, size in entries))
    return "\n".join(lines) + "\n"


def parse_dali_index(text: str) -> list[list[tuple[str, int, int, str]]]:
    """Parse a v1.2 DALI index into per-sample lists of (ext, offset, size, name).

    Raises:
        ValueError: not a v1.2 index or the sample count disagrees with the header.
    """
    lines = text.splitlines()
    if not lines or not lines[0].startswith(DALI_INDEX_VERSION + " "):
        raise ValueError(f"not a DALI {DALI_INDEX_VERSION} index (first line {lines[:1]})")
    count = int(lines[0].split()[1])
    samples = []
    for line in lines[1:]:
        parts = line.split()
        if len(parts) % 4:
            raise ValueError(f"malformed index line {line[:80]!r}")
        samples.append([(parts[i], int(parts[i + 1]), int(parts[i + 2]), parts[i + 3])
                        for i in range(0, len(parts), 4)])
    if len(samples) != count:
        raise ValueError(f"index header says {count} samples, found {len(samples)} lines")
    return samples
