"""Deterministic tar writing with the byte offset of every member, and DALI's index format.

Tars are plain POSIX (ustar) archives readable by ``tarfile``, ``webdataset`` and DALI. Headers carry no
timestamps or owners, so the same samples always give the same bytes (a rebuilt or resumed shard is
byte-identical to an uninterrupted one). Member names are ``<key>.<suffix>`` with ``<key>`` free of dots, as
WebDataset groups members by the part of the base name before its first dot. A name ustar cannot hold (over
255 bytes, or no ``/`` to split it at 155) gets a POSIX.1-2001 (pax) extended header for that member only, so
any route name works and every name ustar holds keeps its bytes.

DALI's index separates its fields by whitespace, so the member name it records is percent-encoded
(`index_name`: whitespace, ``%`` and control characters as ``%XX`` of their UTF-8 bytes; any other name is
unchanged); `parse_dali_index` decodes it back.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from typing import BinaryIO
from urllib.parse import unquote

import xxhash

__all__ = ["DALI_INDEX_VERSION", "ShardTarWriter", "dali_index_text", "index_name", "parse_dali_index"]

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
            try:
                fmt = tarfile.USTAR_FORMAT
                header = info.tobuf(fmt, self._tar.encoding, self._tar.errors)
            except ValueError:  # the name is too long for ustar: a pax header for this member
                fmt = tarfile.PAX_FORMAT
                header = info.tobuf(fmt, self._tar.encoding, self._tar.errors)
            offset = self._tar.offset + len(header)
            self._tar.format = fmt  # addfile writes the header in the archive's format
            try:
                self._tar.addfile(info, io.BytesIO(data))
            finally:
                self._tar.format = tarfile.USTAR_FORMAT
            entries.append((suffix, offset, len(data)))
            h.update(data)
        self.samples.append((key, entries, h.hexdigest()))

    def close(self) -> tuple[int, str]:
        """Finish the archive; returns (total bytes, xxh3-128 hex of the whole file)."""
        self._tar.close()
        return self._out.size, self._out.hash.hexdigest()


def index_name(name: str) -> str:
    """A member name as DALI's index records it: whitespace, ``%`` and control characters as ``%XX`` (UTF-8
    bytes), so the name is one whitespace-free field; a name without them is unchanged. `unquote` inverts it."""
    if not any(c.isspace() or c == "%" or not c.isprintable() for c in name):
        return name
    return "".join(c if not (c.isspace() or c == "%" or not c.isprintable()) else
                   "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape")) for c in name)


def dali_index_text(samples: list[tuple[str, list[tuple[str, int, int]], str]]) -> str:
    """The index DALI's ``wds2idx`` writes: ``v1.2 <n>`` then per sample ``ext offset size name ...`` (the name
    through `index_name`)."""
    lines = [f"{DALI_INDEX_VERSION} {len(samples)}"]
    for key, entries, _ in samples:
        lines.append(" ".join(f"{suffix} {offset} {size} {index_name(f'{key}.{suffix}')}"
                              for suffix, offset, size in entries))
    return "\n".join(lines) + "\n"


def parse_dali_index(text: str) -> list[list[tuple[str, int, int, str]]]:
    """Parse a v1.2 DALI index into per-sample lists of (ext, offset, size, name), the name decoded
    (`index_name`).

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
        samples.append([(parts[i], int(parts[i + 1]), int(parts[i + 2]),
                         unquote(parts[i + 3], errors="surrogateescape")) for i in range(0, len(parts), 4)])
    if len(samples) != count:
        raise ValueError(f"index header says {count} samples, found {len(samples)} lines")
    return samples
