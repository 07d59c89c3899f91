"""Where shard bytes come from: positioned reads of local, http(s) and fsspec files, whole-file copies with
retries and checksums, and the joining of a set's location with its manifest's paths.

Owns: `read_ranges` / `read_range` (byte ranges of any location), `read_local` (the positioned reads alone),
`read_small` (a whole metadata file in memory), `copy_into` (a retrying, size- and checksum-checked streaming
copy into an open file), `fetch_file` (that copy made atomic with `leadio.files.temp_sibling`), `resolve` and
`ReadError`. It knows nothing of caching: caches (the session cache) are built on top of these names.

Reads. A *location* is a local path or ``file://`` URL (``os.pread``; one open per call), an ``http(s)://`` URL
(stdlib urllib, one ``Range: bytes=a-b`` request per span; a server that ignores Range and answers 200 is
tolerated by streaming past the prefix, which costs that prefix's transfer), or any other fsspec URL
(``s3://``, ``gs://``, ``memory://``, ...; ``cat_ranges``, which the cloud backends run concurrently). Remote
ranges are sorted and coalesced when the gap between them is below 64 KiB (spans up to 16 MiB), which cuts
request counts for the members of one sample; local ranges are not coalesced, since a separate pread costs
nothing and a merged one copies the gaps.

Why urllib and not fsspec's HTTP filesystem (which pools connections and has ``cat_ranges`` too): fsspec's
HTTP backend needs aiohttp (and its half-dozen dependencies) in every install, and the pool would pay off only
for ranged reads straight from a server, which training should not do: train from remote sets through the
session cache, which streams each shard once. urllib has no connection pool, so every ranged request pays a
connect (and TLS handshake).

Remote failures. A failure that may pass (connection refused or reset mid-transfer, timeout, HTTP 429 and
5xx, a download whose bytes do not match the checksum it was promised) is retried `RETRIES` times with
exponential backoff from `RETRY_BACKOFF_S`; then a `ReadError` names the URL, the last failure and the count
of attempts. Other failures (404, a truncated file) are reported at once. `copy_into` returns only after the
size and (when the caller knows it) the xxh3-128 were checked, so a caller that publishes a copy only once it
returns (`fetch_file`, the session cache) never publishes wrong bytes.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import posixpath
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from leadio.files import temp_sibling

__all__ = ["ReadError", "copy_into", "fetch_file", "read_local", "read_range", "read_ranges", "read_small",
           "resolve"]

log = logging.getLogger(__name__)

MAX_GAP = 64 * 1024  # remote ranges closer than this are fetched by one request
MAX_SPAN = 16 * 1024**2  # ... as long as the merged span stays below this
CHUNK = 4 * 1024**2  # streaming copy unit
HTTP_TIMEOUT_S = 60.0
RETRIES = 3  # attempts after the first, for failures that may pass (see the module docstring)
RETRY_BACKOFF_S = 0.5  # doubled after each attempt
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class ReadError(OSError):
    """Bytes could not be read: truncated file, HTTP error or bad response. Names the location (and range)."""

    def __init__(self, message: str, location: str = "", status: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.location, self.status, self.transient = location, status, transient

    def __reduce__(self):
        return type(self), (str(self), self.location, self.status, self.transient)


def _retrying(fn: Callable[[], object], location: str, what: str):
    """``fn()``, retried on transient `ReadError` (see the module docstring)."""
    for attempt in range(RETRIES + 1):
        try:
            return fn()
        except ReadError as e:
            if not e.transient:
                raise
            if attempt == RETRIES:
                raise ReadError(f"{e} - gave up after {RETRIES + 1} attempts ({what}); check that the server is up "
                                f"and serves the files the manifest lists, then rerun", location, e.status) from e
            delay = RETRY_BACKOFF_S * 2**attempt
            log.warning("%s (%s): %s; retrying in %.1fs (%d/%d)", location, what, e, delay, attempt + 1, RETRIES)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _truncated(location: str, start: int, end: int, file_end: int | None) -> ReadError:
    where = f"at {file_end}" if file_end is not None else f"before {start}"
    return ReadError(f"{location}: needs bytes {start}..{end}, the file ends {where} (truncated?)", location)


def _kind(location: str) -> tuple[str, str]:
    """``("local", path)``, ``("http", url)`` or ``("fsspec", url)``."""
    if location.startswith("file://"):
        return "local", urllib.request.url2pathname(urllib.parse.urlparse(location).path)
    scheme = location.split("://", 1)[0].lower() if "://" in location else ""
    if scheme in ("http", "https"):
        return "http", location
    return ("fsspec", location) if scheme else ("local", location)


def _read_upto(f: BinaryIO, n: int, location: str) -> bytes:
    """Up to ``n`` bytes from ``f`` (fewer only at its end); network failures become `ReadError`."""
    parts, got = [], 0
    try:
        while got < n:
            part = f.read(min(n - got, CHUNK))
            if not part:
                break
            parts.append(part)
            got += len(part)
    except (http.client.HTTPException, ConnectionError, TimeoutError) as e:
        raise ReadError(f"{location}: connection failed while reading ({type(e).__name__}: {e})", location,
                        transient=True) from e
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _urlopen(url: str, what: str, headers: dict[str, str] | None = None, accept: tuple[int, ...] = ()):
    """Open ``url``; HTTP errors (except codes in ``accept``, returned as the response) name URL and status."""
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=HTTP_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code in accept:
            return e
        e.close()
        raise ReadError(f"{url}: HTTP {e.code} {e.reason} ({what})", url, e.code,
                        transient=e.code in _TRANSIENT_STATUS) from None
    except (OSError, http.client.HTTPException) as e:  # URLError included
        raise ReadError(f"{url}: request failed: {getattr(e, 'reason', e)} ({what})", url, transient=True) from None


def _http_span(url: str, start: int, end: int) -> bytes:
    want = end - start
    with _urlopen(url, f"bytes {start}..{end}", {"Range": f"bytes={start}-{end - 1}"}, accept=(416,)) as resp:
        code, content_range = resp.getcode(), resp.headers.get("Content-Range", "")
        m = _CONTENT_RANGE.fullmatch(content_range.strip())
        if code == 416:  # the range starts at or after the end of the file
            total = re.fullmatch(r"bytes \*/(\d+)", content_range.strip())
            raise _truncated(url, start, end, int(total[1]) if total else None)
        if code == 200:  # the server ignored Range: skip the prefix, keep the slice
            skipped = 0
            while skipped < start and (part := _read_upto(resp, min(CHUNK, start - skipped), url)):
                skipped += len(part)
            data = _read_upto(resp, want, url) if skipped == start else b""
            if len(data) < want:
                raise _truncated(url, start, end, skipped + len(data))
            return data
        if code != 206:
            raise ReadError(f"{url}: HTTP {code} for bytes {start}..{end} (expected 206 or 200)", url, code)
        data = _read_upto(resp, want + 1, url)
    if len(data) == want and (m is None or int(m[1]) == start):
        return data
    total = int(m[3]) if m and m[3] != "*" else None
    if m and int(m[1]) == start and total is not None and total < end and len(data) == total - start:
        raise _truncated(url, start, end, total)
    raise ReadError(f"{url}: HTTP 206 for bytes {start}..{end} returned {len(data)} bytes, expected {want} "
                    f"(Content-Range: {content_range or 'missing'})", url, 206)


def _fsspec_spans(url: str, spans: list[tuple[int, int]]) -> list[bytes]:
    """The spans through fsspec's ``cat_ranges`` (concurrent ranged GETs on s3/gcs; plain reads elsewhere)."""
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(url)
    blobs = fs.cat_ranges([path] * len(spans), [a for a, _ in spans], [b for _, b in spans], on_error="return")
    out = []
    for (start, end), blob in zip(spans, blobs, strict=True):
        if isinstance(blob, FileNotFoundError):
            raise blob
        if isinstance(blob, BaseException) or len(blob) < end - start:
            size = fs.size(path)  # FileNotFoundError when the file is gone
            if size is not None and size < end:
                raise _truncated(url, start, end, size)
            raise ReadError(f"{url}: bytes {start}..{end} cannot be read ({type(blob).__name__}: {blob})", url)
        out.append(blob)
    return out


def read_local(path: str | Path, ranges: list[tuple[int, int]], name: str | None = None) -> list[bytes]:
    """Positioned reads (``os.pread``) of a local file, one open per call, no coalescing.

    Args:
        path: the local file.
        ranges: ``(offset, size)`` pairs in bytes (not checked: `read_ranges` checks them).
        name: how errors name the file; default ``path``.

    Returns:
        The bytes of each range, in the caller's order.

    Raises:
        ReadError: the file ends before a range (names ``name`` and the range).
        FileNotFoundError: the file does not exist.
    """
    name = str(path) if name is None else name
    fd = os.open(path, os.O_RDONLY)
    try:
        out = []
        for offset, size in ranges:
            parts, got = [], 0
            while got < size:  # one pread returns at most ~2 GiB
                part = os.pread(fd, size - got, offset + got)
                if not part:
                    raise _truncated(name, offset, offset + size, os.fstat(fd).st_size)
                parts.append(part)
                got += len(part)
            out.append(parts[0] if len(parts) == 1 else b"".join(parts))
        return out
    finally:
        os.close(fd)


def read_ranges(location: str, ranges: list[tuple[int, int]], *, max_gap: int = MAX_GAP,
                max_span: int = MAX_SPAN) -> list[bytes]:
    """Read several byte ranges of one file.

    Args:
        location: local path, ``file://``, ``http(s)://`` or other fsspec URL.
        ranges: ``(offset, size)`` pairs in bytes, any order, may overlap.
        max_gap: remote ranges whose gap is below this many bytes are fetched by one request.
        max_span: a merged remote request stays below this many bytes (a single larger range is one request).

    Returns:
        The bytes of each range, in the caller's order.

    Raises:
        ReadError: the file ends before a range (names location and range), or an HTTP/network failure
            (names URL and status).
        FileNotFoundError: a local or fsspec file does not exist.
    """
    ranges = [(int(o), int(s)) for o, s in ranges]
    bad = [(o, s) for o, s in ranges if o < 0 or s < 0]
    if bad:
        raise ValueError(f"{location}: byte ranges need offset >= 0 and size >= 0, got {bad[:3]}")
    kind, target = _kind(location)
    if kind == "local":
        return read_local(target, ranges, location)
    groups: list[list] = []  # [start, end, [range indices]]
    for i in sorted((i for i, (_, s) in enumerate(ranges) if s), key=lambda i: ranges[i]):
        o, s = ranges[i]
        g = groups[-1] if groups else None
        if g is not None and o - g[1] < max_gap and max(g[1], o + s) - g[0] <= max_span:
            g[1] = max(g[1], o + s)
            g[2].append(i)
        else:
            groups.append([o, o + s, [i]])
    spans = [(g[0], g[1]) for g in groups]
    if kind == "http":
        blobs = [_retrying(lambda a=a, b=b: _http_span(target, a, b), target, f"bytes {a}..{b}") for a, b in spans]
    else:
        blobs = _fsspec_spans(target, spans)
    out = [b""] * len(ranges)
    for (start, _, members), blob in zip(groups, blobs, strict=True):
        for i in members:
            o, s = ranges[i]
            out[i] = blob if (o == start and s == len(blob)) else blob[o - start:o - start + s]
    return out


def read_range(location: str, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` of ``location`` (see `read_ranges`)."""
    return read_ranges(location, [(offset, size)])[0]


@contextlib.contextmanager
def _open_stream(location: str) -> Iterator[BinaryIO]:
    kind, target = _kind(location)
    if kind == "local" and not os.path.exists(target):
        raise FileNotFoundError(f"{location} does not exist")
    if kind == "local":
        with open(target, "rb") as f:
            yield f
    elif kind == "http":
        with _urlopen(target, "whole file") as resp:
            yield resp
    else:
        import fsspec

        with fsspec.open(target, "rb") as f:
            yield f


def copy_into(location: str, dst: BinaryIO, expected_size: int | None, checksum: str | None = None) -> int:
    """Stream the whole file at ``location`` into ``dst`` (from its current position) in `CHUNK` pieces.

    Transient failures (see the module docstring) restart the copy at the same position, `RETRIES` times.

    Args:
        location: local path or URL (see `read_ranges`).
        dst: an open, seekable binary file.
        expected_size: when given, a file of another size is a `ReadError`.
        checksum: when given, the xxh3-128 hex digest the bytes must have (a mismatch is retried, then raised).

    Returns:
        The number of bytes copied.
    """
    import xxhash

    start = dst.tell()

    def once() -> int:
        dst.seek(start)
        n, h = 0, xxhash.xxh3_128()
        with _open_stream(location) as src:
            while chunk := _read_upto(src, CHUNK, location):
                n += len(chunk)
                if expected_size is not None and n > expected_size:
                    raise ReadError(f"{location}: is larger than the expected {expected_size} bytes (changed since "
                                    f"the manifest was written?)", location)
                h.update(chunk)
                dst.write(chunk)
        if expected_size is not None and n < expected_size:
            raise _truncated(location, 0, expected_size, n)
        if checksum is not None and h.hexdigest() != checksum:
            raise ReadError(f"{location}: the downloaded bytes differ from the manifest's checksum (damaged in "
                            f"transfer, or the set was rebuilt on the server while in use: reopen it)", location,
                            transient=True)
        return n

    return _retrying(once, location, "whole file")


def read_small(location: str, limit: int = 256 * 1024**2) -> bytes:
    """A whole small file (manifest, catalog part) in memory, with bounded retries; at most ``limit`` bytes."""
    def once() -> bytes:
        with _open_stream(location) as src:
            return _read_upto(src, limit + 1, location)

    data = _retrying(once, location, "whole file")
    if len(data) > limit:
        raise ValueError(f"{location} is larger than {limit} bytes: not a small metadata file")
    return data


def fetch_file(location: str, dst: str | Path, expected_size: int | None = None) -> int:
    """Copy a whole file to ``dst`` atomically: stream to a temp name beside it, fsync, rename.

    Args:
        location: local path or URL (see `read_ranges`).
        dst: the destination; its folder is created. Left untouched when the copy fails.
        expected_size: when given, a different size is a `ReadError`.

    Returns:
        The number of bytes copied.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dst)
    try:
        with open(tmp, "xb") as f:
            n = copy_into(location, f, expected_size)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
        return n
    finally:
        tmp.unlink(missing_ok=True)


def resolve(base: str, relative: str) -> str:
    """Join a shard-set location (path or URL) with a relative path from its manifest.

    URLs are joined as POSIX paths (no quoting; query strings are not supported), paths with pathlib.
    An absolute URL in ``relative`` is returned as is; an absolute path or one escaping ``base`` is refused.
    """
    if "://" in relative:
        return relative
    rel = posixpath.normpath(relative)
    if rel.startswith("/") or rel == ".." or rel.startswith("../"):
        raise ValueError(f"manifest path {relative!r} must be relative and inside the shard set ({base})")
    if rel == ".":
        return base
    if "://" in base:
        return f"{base.rstrip('/')}/{rel}"
    return str(Path(base) / rel)

