"""Where shard bytes come from: positioned reads of local, http(s) and fsspec files, and the session cache.

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

Session cache (LEAD's ``training_session_cache``). Shards on slow or remote storage are copied to a local
folder on first use and served from there, bounded by ``max_bytes`` with least-recently-used eviction
(recency = mtime, bumped on every hit). The folder itself is the ledger: its total is the sum of the apparent
sizes of all its files. A download reserves its size under the cache-wide lock by evicting LRU files and
creating its temp file already truncated to the full size; files appear under their final name only by an
atomic rename (so a name that exists is complete) and disappear only by eviction. Hence the total on disk
never exceeds ``max_bytes`` at any instant, with any number of processes, and nothing has to be repaired after
a crash. Small metadata files (``fetch_small``) live under ``meta/``, count in the total and are never evicted.

Concurrency. Locks are ``fcntl.flock`` on lock files: one per entry (one process downloads a shard, the others
wait and then reuse it) and one for the whole cache (accounting, eviction, renames). The kernel drops a flock
lock when its holder dies, ``kill -9`` included, so a crash never leaves a stale lock. The temp file of a
killed download (``.<name>.part-<pid>-<tag>``) is removed by the next process that takes that entry's lock,
or by any accounting scan that finds the entry lock free (a free lock proves the writer is gone; a pid check
would not, given pid reuse and containers). Lock files are empty, live under ``<cache>/locks/`` (never beside
a cached file, where a Zarr reader would list them) and are never deleted (deleting a flock file races with its
next user); empty folders stay too. flock is local to one machine, so the cache folder must be
on a local disk, which is what a session cache is for. Evicting a file that another process is reading is
safe on POSIX (an open fd keeps working after unlink); a reader that has only the path and finds it gone
re-fetches once (``SessionCache.read_ranges`` does). If ``max_bytes`` is smaller than the shards that all
concurrent readers download at once, a downloader waits (up to ``wait_s``) for room.

Remote failures. A failure that may pass (connection refused or reset mid-transfer, timeout, HTTP 429 and
5xx, a download whose bytes do not match the checksum it was promised) is retried `RETRIES` times with
exponential backoff from `RETRY_BACKOFF_S`; then a `ReadError` names the URL, the last failure and the count
of attempts. Other failures (404, a truncated file) are reported at once. A cached shard is stored only after
its size and (when the caller knows it) its xxh3-128 were checked, so wrong bytes never enter the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import logging
import os
import posixpath
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from leadio._io import writing

__all__ = ["CacheStats", "ReadError", "SessionCache", "fetch_file", "read_range", "read_ranges", "read_small",
           "resolve"]

log = logging.getLogger(__name__)

MAX_GAP = 64 * 1024  # remote ranges closer than this are fetched by one request
MAX_SPAN = 16 * 1024**2  # ... as long as the merged span stays below this
CHUNK = 4 * 1024**2  # streaming copy unit
HTTP_TIMEOUT_S = 60.0
RETRIES = 3  # attempts after the first, for failures that may pass (see the module docstring)
RETRY_BACKOFF_S = 0.5  # doubled after each attempt
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_TEMP = re.compile(r"^\.(?P<entry>.+)\.part-(?P<pid>\d+)-[0-9a-f]{8}$")
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


def _read_local(path: str | Path, ranges: list[tuple[int, int]], name: str) -> list[bytes]:
    """Positioned reads of ``(offset, size)`` ranges; a missing file raises `FileNotFoundError`."""
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
        return _read_local(target, ranges, location)
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


def _copy_into(location: str, dst: BinaryIO, expected_size: int | None, checksum: str | None = None) -> int:
    """Stream ``location`` into ``dst`` in `CHUNK` pieces; returns the byte count (checked when expected), and
    checks the xxh3-128 hex ``checksum`` when given. Transient failures restart the copy (bounded retries)."""
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


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.part-{os.getpid()}-{uuid.uuid4().hex[:8]}")


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
    tmp = _temp_name(dst)
    try:
        with open(tmp, "xb") as f:
            n = _copy_into(location, f, expected_size)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
        return n
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _flock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on ``path`` (created if missing); yields False if non-blocking and taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            got = True
        except BlockingIOError:
            got = False
        yield got
    finally:
        os.close(fd)  # closing the only fd of the open file description releases the lock


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


@dataclass
class CacheStats:
    """Per-process counters of a `SessionCache` (a copy sent to a worker starts from zero)."""

    hits: int = 0
    misses: int = 0
    bytes_downloaded: int = 0
    evictions: int = 0


class SessionCache:
    """A size-bounded, LRU, multi-process-safe local copy of remote shards (see the module docstring).

    Args:
        directory: a local folder, shared by all ranks, workers and jobs of a node that use this cache.
        max_bytes: bound on the folder's total size in bytes (shards, in-progress downloads, metadata).
        wait_s: how long a download waits for room held by other processes' in-progress downloads.
    """

    def __init__(self, directory: str | Path, max_bytes: int, *, wait_s: float = 600.0) -> None:
        if max_bytes <= 0:
            raise ValueError(f"session cache {directory}: max_bytes must be > 0, got {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.wait_s = wait_s
        self.stats = CacheStats()
        self._before_download: Callable[[Path], None] | None = None  # test hook: called with the reserved temp
        self.directory.mkdir(parents=True, exist_ok=True)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()  # holds no fds or locks: they live only inside one call
        state["stats"], state["_before_download"] = CacheStats(), None
        return state

    def _path(self, area: str, location: str, key: str | None) -> Path:
        if key is None:
            base = posixpath.basename(urllib.parse.urlparse(location).path if "://" in location else location)
            base = re.sub(r"[^A-Za-z0-9_.=+-]", "_", base).lstrip(".") or "file"
            key = f"_by_location/{hashlib.sha256(location.encode()).hexdigest()[:24]}-{base}"
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or any(p in (".", "..") or p.startswith(".") for p in parts):
            raise ValueError(f"session cache key {key!r} must be a relative path without '..' or hidden parts")
        return self.directory.joinpath(area, *parts)

    def _entry_lock(self, path: Path) -> Path:
        """An entry's lock file, under ``locks/``: beside the entry, a Zarr reader of a cached catalog would list
        it (and warn that it is not a Zarr object)."""
        rel = path.relative_to(self.directory)
        lock = self.directory / "locks" / rel.parent / f".{rel.name}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        return lock

    def _scan(self) -> tuple[int, int, list[tuple[int, str, int]]]:
        """(total bytes, pinned bytes, evictable ``(mtime_ns, path, size)``); call under the cache lock.

        Removes temp files whose entry lock is free (their downloader died).
        """
        total, pinned, evictable = 0, 0, []
        data = self.directory / "data"
        for dirpath, _, names in os.walk(self.directory):
            for name in names:
                path = Path(dirpath, name)
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                m = _TEMP.match(name)
                if m:
                    with _flock(self._entry_lock(path.with_name(m["entry"])), blocking=False) as free:
                        if free:
                            log.info("session cache: removing %s left by a dead download", path)
                            path.unlink(missing_ok=True)
                            continue
                total += st.st_size
                if not name.startswith("."):
                    if path.is_relative_to(data):
                        evictable.append((st.st_mtime_ns, str(path), st.st_size))
                    else:
                        pinned += st.st_size
        return total, pinned, evictable

    def _store(self, path: Path, size: int, location: str, write: Callable[[BinaryIO], object]) -> None:
        """Reserve ``size`` bytes (evicting LRU files), write via ``write`` into a temp file, publish it.

        Call with the entry lock held.
        """
        if size > self.max_bytes:
            raise ValueError(f"session cache {self.directory} holds at most {self.max_bytes} bytes but {location} "
                             f"is {size} bytes; raise the cache size or read this set without a session cache")
        for stale in path.parent.iterdir():  # we hold the entry lock: any temp of this entry is an orphan
            m = _TEMP.match(stale.name)
            if m and m["entry"] == path.name:
                stale.unlink(missing_ok=True)
        deadline = time.monotonic() + self.wait_s
        while True:
            with _flock(self.directory / ".lock"):
                total, pinned, evictable = self._scan()
                if total - sum(e[2] for e in evictable) + size <= self.max_bytes:
                    excess = total + size - self.max_bytes
                    for _, victim, victim_size in sorted(evictable):
                        if excess <= 0:
                            break
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(victim)
                            self.stats.evictions += 1
                            log.debug("session cache: evicted %s", victim)
                        excess -= victim_size
                    tmp = _temp_name(path)
                    f = open(tmp, "xb")  # closed by the `with f` below
                    f.truncate(size)  # the reservation: the temp's apparent size counts from now on
                    break
            if pinned + size > self.max_bytes or time.monotonic() > deadline:
                raise ReadError(f"session cache {self.directory}: no room for {location} ({size} bytes of "
                                f"{self.max_bytes}): {pinned} bytes of metadata, the rest held by other "
                                f"processes' downloads; raise the cache size", location)
            time.sleep(0.05)
        try:
            with f:
                if self._before_download is not None:
                    self._before_download(tmp)
                with writing(path):
                    write(f)
                f.flush()
                os.fsync(f.fileno())
            with _flock(self.directory / ".lock"):  # renames under the lock keep scans from missing the file
                os.replace(tmp, path)
                now = time.time_ns()  # still under the lock: an eviction in between would find it LRU-oldest
                os.utime(path, ns=(now, now))
        finally:
            tmp.unlink(missing_ok=True)

    def _hit(self, path: Path, size: int | None) -> bool:
        try:
            if size is not None and os.stat(path).st_size != size:
                return False
            now = time.time_ns()  # explicit ns: file timestamps may tick only every few ms
            os.utime(path, ns=(now, now))
        except FileNotFoundError:
            return False
        self.stats.hits += 1
        return True

    def local_path(self, location: str, size: int, key: str | None = None, checksum: str | None = None) -> Path:
        """A local path holding the complete file at ``location``, downloaded on first use.

        Args:
            location: the file (local path or URL, see `read_ranges`).
            size: its size in bytes (from the manifest); a download of another size is an error.
            key: the cache name, e.g. ``"<set>-<manifest identity>/<bucket>/000000.tar"``; default: a hash of
                ``location``. Keys must name immutable content (a shard set's include its manifest's hash).
            checksum: xxh3-128 hex the download must have (from the manifest); wrong bytes are never stored.

        Returns:
            The cached file's path. It may be evicted by another process before it is opened: open it
            promptly and retry once on `FileNotFoundError` (`read_ranges` does).
        """
        path = self._path("data", location, key)
        if self._hit(path, size):
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        with _flock(self._entry_lock(path)):
            if self._hit(path, size):  # another process downloaded it while we waited
                return path
            if path.exists():
                log.warning("session cache: %s has the wrong size (expected %d), fetching again", path, size)
                with _flock(self.directory / ".lock"):
                    path.unlink(missing_ok=True)
            self._store(path, size, location, lambda f: _copy_into(location, f, size, checksum))
        self.stats.misses += 1
        self.stats.bytes_downloaded += size
        return path

    def read_ranges(self, location: str, size: int, ranges: list[tuple[int, int]],
                    key: str | None = None, checksum: str | None = None) -> list[bytes]:
        """`read_ranges` of the cached copy of ``location`` (see `local_path`), re-fetching once if evicted."""
        path = self.local_path(location, size, key, checksum)
        try:
            return _read_local(path, ranges, f"{location} (cached as {path})")
        except FileNotFoundError:  # evicted by another process between local_path and open
            path = self.local_path(location, size, key, checksum)
            return _read_local(path, ranges, f"{location} (cached as {path})")

    def fetch_small(self, location: str, key: str) -> Path:
        """A local copy of a small metadata file (manifest, catalog part), kept under ``meta/``.

        Such files count in the cache's total but are never evicted; the whole file (at most 256 MiB) is held
        in memory once.
        """
        path = self._path("meta", location, key)
        if self._hit(path, None):
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        with _flock(self._entry_lock(path)):
            if self._hit(path, None):
                return path
            data = read_small(location, min(self.max_bytes, 256 * 1024**2))
            self._store(path, len(data), location, lambda f: f.write(data))
        self.stats.misses += 1
        self.stats.bytes_downloaded += len(data)
        return path

    def disk_bytes(self) -> int:
        """The folder's current total in bytes (complete files, reservations and metadata)."""
        with _flock(self.directory / ".lock"):
            return self._scan()[0]
