"""Where shard bytes come from: positioned reads of local, http(s) and fsspec files, whole-file copies with
retries and checksums, and the joining of a set's location with its manifest's paths.

Owns: `read_ranges` / `read_range` (byte ranges of any location), `read_local` (the positioned reads alone),
`read_small` (a whole metadata file in memory), `copy_into` (a retrying, resuming, size- and checksum-checked
streaming copy into an open file), `fetch_file` (that copy made atomic with `leadio.files.temp_sibling`),
`resolve`, `ReadError` and `Deadline` (the wall-clock budget of one HTTP request). It knows nothing of
caching: caches (the session cache) are built on top of these names.

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

Remote failures. A failure that may pass (connection refused or reset mid-transfer, a connection that drops
before the length the server declared has arrived, a request over its deadline, HTTP 429 and 5xx, a download
whose bytes do not match the checksum it was promised) is retried `RETRIES` times with exponential backoff from
`RETRY_BACKOFF_S`, each retry logged as a warning; then a `ReadError` names the URL, the last failure and the
count of attempts. Other failures (404, a truncated file) are reported at once. `copy_into` returns only after
the size and (when the caller knows it) the xxh3-128 were checked, so a caller that publishes a copy only once it
returns (`fetch_file`, the session cache) never publishes wrong bytes.

A dropped connection or a truncated file? Both deliver fewer bytes than the reader needs. A response that
delivers fewer bytes than its own ``Content-Length`` (or its ``Content-Range``) declared was cut in transfer:
that is the network, and it is retried; a whole-file copy resumes from the bytes it already has (a
``Range: bytes=<got>-`` request; a server that ignores Range sends the file again from its start). A server
that consistently declares a shorter file (a ``Content-Length`` equal to what arrived, a 416, a Range reply
clamped at the end of the file) has a truncated file: reported at once as ``the file ends at <n>``. A response
without a declared length (close-delimited) that ends early cannot be told apart and counts as truncated.

Deadlines. ``HTTP_TIMEOUT_S`` bounds each wait for the server (connect, each receive), but a server that
trickles a byte now and then never lets such a wait expire. So every HTTP request also has a wall-clock budget,
a `Deadline`: ``base_s + bytes / min_rate`` seconds from sending the request to its last byte, where ``bytes`` is
what the request is to transfer (the range, the rest of the file, else its declared length). The default
(`DEADLINE`: 60 s plus 1 s per MiB, a floor of 1 MiB/s) gives a 256 MiB shard 316 s: a link slower than that
cannot feed a training run anyway (a loader that keeps pace reads tens of MB/s), and a request over it is a
transient failure, retried (a whole-file copy resumes where it stopped) with a warning that names the URL and
the rate observed. The budget is checked after every piece received and a single wait is cut to the budget, so
a request ends at most about one budget late. Tests and slow links pass their own
(``read_ranges(..., deadline=Deadline(base_s=..., min_rate=...))``, ``copy_into(..., deadline=...)``,
``SessionCache(..., deadline=...)``).
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
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from leadio.files import temp_sibling

__all__ = ["DEADLINE", "Deadline", "ReadError", "copy_into", "fetch_file", "read_local", "read_range", "read_ranges",
           "read_small", "resolve"]

log = logging.getLogger(__name__)

MAX_GAP = 64 * 1024  # remote ranges closer than this are fetched by one request
MAX_SPAN = 16 * 1024**2  # ... as long as the merged span stays below this
CHUNK = 4 * 1024**2  # streaming copy unit
HTTP_TIMEOUT_S = 60.0  # each wait for the server (connect, one receive); the whole request: `Deadline`
RETRIES = 3  # attempts after the first, for failures that may pass (see the module docstring)
RETRY_BACKOFF_S = 0.5  # doubled after each attempt
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class Deadline:
    """The wall-clock budget of one HTTP request, from sending it to its last byte (see the module docstring).

    Attributes:
        base_s: seconds any request may take, however small (connect, the server's latency, TLS).
        min_rate: bytes per second of the transfer itself below which a request counts as stalled: a request
            for ``n`` bytes may take ``base_s + n / min_rate`` seconds.
    """

    base_s: float = 60.0
    min_rate: float = 1024**2

    def __post_init__(self) -> None:
        if not (self.base_s > 0 and self.min_rate > 0):
            raise ValueError(f"Deadline needs base_s > 0 and min_rate > 0 (bytes/s), got base_s={self.base_s}, "
                             f"min_rate={self.min_rate}")

    def seconds(self, nbytes: int) -> float:
        """The budget in seconds of a request that transfers ``nbytes`` bytes."""
        return self.base_s + max(0, nbytes) / self.min_rate


DEADLINE = Deadline()  # the default of every function that takes ``deadline=None``


class ReadError(OSError):
    """Bytes could not be read: truncated file, HTTP error or bad response. Names the location (and range).

    ``transient`` marks a failure that may pass (retried); ``hint`` is what the message says to do once the
    retries are spent (default: check the server).
    """

    def __init__(self, message: str, location: str = "", status: int | None = None, transient: bool = False,
                 hint: str = "") -> None:
        super().__init__(message)
        self.location, self.status, self.transient, self.hint = location, status, transient, hint

    def __reduce__(self):
        return type(self), (str(self), self.location, self.status, self.transient, self.hint)


def _retrying(fn: Callable[[], object], location: str, what: str):
    """``fn()``, retried on transient `ReadError` (see the module docstring)."""
    for attempt in range(RETRIES + 1):
        try:
            return fn()
        except ReadError as e:
            if not e.transient:
                raise
            if attempt == RETRIES:
                hint = e.hint or "check that the server is up and serves the files the manifest lists, then rerun"
                raise ReadError(f"{e} - gave up after {RETRIES + 1} attempts ({what}); {hint}", location,
                                e.status) from e
            delay = RETRY_BACKOFF_S * 2**attempt
            log.warning("%s (%s): %s; retrying in %.1fs (%d/%d)", location, what, e, delay, attempt + 1, RETRIES)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _truncated(location: str, start: int, end: int, file_end: int | None) -> ReadError:
    where = f"at {file_end}" if file_end is not None else f"before {start}"
    return ReadError(f"{location}: needs bytes {start}..{end}, the file ends {where} (truncated?)", location)


def _dropped(url: str, got: int, declared: int) -> ReadError:
    """The connection closed before the length the response declared had arrived: the network, not the file."""
    return ReadError(f"{url}: the connection dropped after {got} of {declared} bytes", url, transient=True,
                     hint="the connection kept dropping mid-transfer (the server declared the full length): check "
                          "the network and the server, then rerun")


def _rate(bytes_per_s: float) -> str:
    for unit, scale in (("MB/s", 1e6), ("KB/s", 1e3)):
        if bytes_per_s >= scale:
            return f"{bytes_per_s / scale:.1f} {unit}"
    return f"{bytes_per_s:.1f} B/s"


class _Clock:
    """One HTTP request against its `Deadline`: started before the request is sent, fed every piece received.

    ``expected`` is what the request is to transfer (None until known: the response's declared length);
    ``received`` counts what has arrived.
    """

    def __init__(self, url: str, deadline: Deadline, expected: int | None) -> None:
        self.url, self.deadline, self.expected, self.received = url, deadline, expected, 0
        self.declared: int | None = None  # the response's Content-Length, once it has come
        self.start = time.monotonic()

    @property
    def limit(self) -> float:
        return self.deadline.seconds(max(self.expected or 0, self.received))

    @property
    def timeout(self) -> float:
        """The socket timeout of the request: each wait ends by the budget (and by `HTTP_TIMEOUT_S`)."""
        return min(HTTP_TIMEOUT_S, self.limit)

    def expect(self, nbytes: int | None) -> None:
        if self.expected is None:
            self.expected = nbytes

    def expired(self) -> bool:
        return time.monotonic() - self.start > self.limit

    def add(self, n: int) -> None:
        self.received += n
        if self.expired():
            raise self.error()

    def error(self) -> ReadError:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        of = f" of {self.expected}" if self.expected is not None else ""
        d = self.deadline
        return ReadError(f"{self.url}: the request took longer than its deadline of {self.limit:.1f}s: got "
                         f"{self.received}{of} bytes in {elapsed:.1f}s ({_rate(self.received / elapsed)}; the "
                         f"deadline allows {d.base_s:g}s plus 1s per {_rate(d.min_rate).removesuffix('/s')})",
                         self.url, transient=True,
                         hint="the server or the network is too slow: check them, or pass a Deadline with a lower "
                              "min_rate (leadio.read.Deadline), then rerun")


def _kind(location: str) -> tuple[str, str]:
    """``("local", path)``, ``("http", url)`` or ``("fsspec", url)``."""
    if location.startswith("file://"):
        return "local", urllib.request.url2pathname(urllib.parse.urlparse(location).path)
    scheme = location.split("://", 1)[0].lower() if "://" in location else ""
    if scheme in ("http", "https"):
        return "http", location
    return ("fsspec", location) if scheme else ("local", location)


def _read_upto(f: BinaryIO, n: int, location: str, clock: _Clock | None = None) -> bytes:
    """Up to ``n`` bytes from ``f`` (fewer only at its end); network failures become `ReadError`.

    With a ``clock`` (an HTTP response), reads what each receive brings (``read1``) and checks the request's
    deadline after each: a plain ``read(n)`` would wait for all ``n`` bytes of a trickling server.
    """
    parts, got = [], 0
    read = f.read if clock is None else f.read1
    try:
        while got < n:
            part = read(min(n - got, CHUNK))
            if not part:
                break
            parts.append(part)
            got += len(part)
            if clock is not None:
                clock.add(len(part))
    except (http.client.HTTPException, ConnectionError, TimeoutError) as e:
        if clock is not None and clock.expired():
            raise clock.error() from e
        raise ReadError(f"{location}: connection failed while reading ({type(e).__name__}: {e})", location,
                        transient=True) from e
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _urlopen(url: str, what: str, headers: dict[str, str] | None = None, accept: tuple[int, ...] = (),
             clock: _Clock | None = None):
    """Open ``url``; HTTP errors (except codes in ``accept``, returned as the response) name URL and status.

    ``clock`` sets the socket timeout and turns a timeout past the request's deadline into its error."""
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                      timeout=HTTP_TIMEOUT_S if clock is None else clock.timeout)
    except urllib.error.HTTPError as e:
        if e.code in accept:
            return e
        e.close()
        raise ReadError(f"{url}: HTTP {e.code} {e.reason} ({what})", url, e.code,
                        transient=e.code in _TRANSIENT_STATUS) from None
    except (OSError, http.client.HTTPException) as e:  # URLError included
        if clock is not None and clock.expired():
            raise clock.error() from None
        raise ReadError(f"{url}: request failed: {getattr(e, 'reason', e)} ({what})", url, transient=True) from None


def _declared_length(resp) -> int | None:
    """The response's ``Content-Length``, None when it has none (chunked or close-delimited)."""
    value = resp.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _http_span(url: str, start: int, end: int, deadline: Deadline) -> bytes:
    want = end - start
    clock = _Clock(url, deadline, want)
    with _urlopen(url, f"bytes {start}..{end}", {"Range": f"bytes={start}-{end - 1}"}, accept=(416,),
                  clock=clock) as resp:
        code, content_range = resp.getcode(), resp.headers.get("Content-Range", "")
        m = _CONTENT_RANGE.fullmatch(content_range.strip())
        declared = _declared_length(resp)
        if code == 416:  # the range starts at or after the end of the file
            total = re.fullmatch(r"bytes \*/(\d+)", content_range.strip())
            raise _truncated(url, start, end, int(total[1]) if total else None)
        if code == 200:  # the server ignored Range: skip the prefix, keep the slice
            clock.expected = end  # the prefix travels too
            skipped = 0
            while skipped < start and (part := _read_upto(resp, min(CHUNK, start - skipped), url, clock)):
                skipped += len(part)
            data = _read_upto(resp, want, url, clock) if skipped == start else b""
            if len(data) < want:
                if declared is not None and skipped + len(data) < declared:
                    raise _dropped(url, skipped + len(data), declared)
                raise _truncated(url, start, end, skipped + len(data))
            return data
        if code != 206:
            raise ReadError(f"{url}: HTTP {code} for bytes {start}..{end} (expected 206 or 200)", url, code)
        data = _read_upto(resp, want + 1, url, clock)
    if len(data) == want and (m is None or int(m[1]) == start):
        return data
    if len(data) < want and declared is not None and len(data) < declared:
        raise _dropped(url, len(data), declared)
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
                max_span: int = MAX_SPAN, deadline: Deadline | None = None) -> list[bytes]:
    """Read several byte ranges of one file.

    Args:
        location: local path, ``file://``, ``http(s)://`` or other fsspec URL.
        ranges: ``(offset, size)`` pairs in bytes, any order, may overlap.
        max_gap: remote ranges whose gap is below this many bytes are fetched by one request.
        max_span: a merged remote request stays below this many bytes (a single larger range is one request).
        deadline: the wall-clock budget of each HTTP request (default `DEADLINE`; see the module docstring).

    Returns:
        The bytes of each range, in the caller's order.

    Raises:
        ReadError: the file ends before a range (names location and range), or an HTTP/network failure
            (names URL and status), after the retries when it may pass (a dropped connection, a deadline).
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
        deadline = deadline or DEADLINE
        blobs = [_retrying(lambda a=a, b=b: _http_span(target, a, b, deadline), target, f"bytes {a}..{b}")
                 for a, b in spans]
    else:
        blobs = _fsspec_spans(target, spans)
    out = [b""] * len(ranges)
    for (start, _, members), blob in zip(groups, blobs, strict=True):
        for i in members:
            o, s = ranges[i]
            out[i] = blob if (o == start and s == len(blob)) else blob[o - start:o - start + s]
    return out


def read_range(location: str, offset: int, size: int, *, deadline: Deadline | None = None) -> bytes:
    """``size`` bytes at ``offset`` of ``location`` (see `read_ranges`)."""
    return read_ranges(location, [(offset, size)], deadline=deadline)[0]


@contextlib.contextmanager
def _open_stream(location: str, deadline: Deadline | None = None, resume_at: int = 0,
                 size: int | None = None) -> Iterator[tuple[BinaryIO, int, _Clock | None]]:
    """A whole file as a stream; yields (stream, the offset it starts at, the HTTP request's clock or None).

    An http(s) stream asks for the bytes from ``resume_at`` on (of a file of ``size`` bytes, when known) and
    starts there when the server honours the Range, else at 0 (a 200: the whole file); other sources start at
    0. Its clock runs against ``deadline`` (default `DEADLINE`) and holds the length the response declared
    (``clock.declared``, None without a Content-Length).
    """
    kind, target = _kind(location)
    if kind == "local" and not os.path.exists(target):
        raise FileNotFoundError(f"{location} does not exist")
    if kind == "local":
        with open(target, "rb") as f:
            yield f, 0, None
    elif kind == "http":
        clock = _Clock(target, deadline or DEADLINE, None if size is None else size - resume_at)
        headers = {"Range": f"bytes={resume_at}-{'' if size is None else size - 1}"} if resume_at else {}
        what = f"the rest of the file from byte {resume_at}" if resume_at else "whole file"
        with _urlopen(target, what, headers, accept=(416,) if resume_at else (), clock=clock) as resp:
            at = 0
            if resume_at:
                code, content_range = resp.getcode(), resp.headers.get("Content-Range", "").strip()
                m = _CONTENT_RANGE.fullmatch(content_range)
                if code == 416:  # the file is now shorter than what an earlier attempt received
                    total = re.fullmatch(r"bytes \*/(\d+)", content_range)
                    raise _truncated(target, 0, size or resume_at, int(total[1]) if total else None)
                if code == 206 and m is not None and int(m[1]) == resume_at:
                    at = resume_at
                elif code != 200:
                    raise ReadError(f"{target}: HTTP {code} for {what} (Content-Range: {content_range or 'missing'}; "
                                    f"expected 206 from byte {resume_at}, or 200)", target, code)
                elif size is not None:
                    clock.expected = size  # the server ignored the Range: the whole file travels again
            clock.declared = _declared_length(resp)
            clock.expect(clock.declared)
            yield resp, at, clock
    else:
        import fsspec

        with fsspec.open(target, "rb") as f:
            yield f, 0, None


def copy_into(location: str, dst: BinaryIO, expected_size: int | None, checksum: str | None = None, *,
              deadline: Deadline | None = None) -> int:
    """Stream the whole file at ``location`` into ``dst`` (from its current position) in `CHUNK` pieces.

    Transient failures (see the module docstring) are retried `RETRIES` times. An http(s) copy cut short by the
    network (fewer bytes than the response declared, a reset, its deadline) resumes from the bytes it already
    has, by a Range request; otherwise (a wrong checksum, a server that ignores Range, other sources) the copy
    restarts at the same position.

    Args:
        location: local path or URL (see `read_ranges`).
        dst: an open, seekable binary file.
        expected_size: when given, a file of another size is a `ReadError`.
        checksum: when given, the xxh3-128 hex digest the bytes must have (a mismatch is retried, then raised).
        deadline: the wall-clock budget of each HTTP request (default `DEADLINE`; see the module docstring).

    Returns:
        The number of bytes copied.
    """
    import xxhash

    start = dst.tell()
    done, h = 0, xxhash.xxh3_128()  # bytes copied (and hashed) by earlier attempts: a resumed copy keeps them

    def once() -> int:
        nonlocal done, h
        with _open_stream(location, deadline, done, expected_size) as (src, at, clock):
            if at != done:  # this source starts at 0 (not http, or the server ignored the Range)
                done, h = 0, xxhash.xxh3_128()
            dst.seek(start + done)
            while chunk := _read_upto(src, CHUNK, location, clock):
                if expected_size is not None and done + len(chunk) > expected_size:
                    raise ReadError(f"{location}: is larger than the expected {expected_size} bytes (changed since "
                                    f"the manifest was written?)", location)
                h.update(chunk)
                dst.write(chunk)
                done += len(chunk)
            if clock is not None and clock.declared is not None and clock.received < clock.declared:
                raise _dropped(location, done, at + clock.declared)
        if expected_size is not None and done < expected_size:
            raise _truncated(location, 0, expected_size, done)
        if checksum is not None and h.hexdigest() != checksum:
            done, h = 0, xxhash.xxh3_128()  # which bytes are wrong is unknown: the next attempt starts over
            raise ReadError(f"{location}: the downloaded bytes differ from the manifest's checksum (damaged in "
                            f"transfer, or the set was rebuilt on the server while in use: reopen it)", location,
                            transient=True)
        return done

    return _retrying(once, location, "whole file")


def read_small(location: str, limit: int = 256 * 1024**2, *, deadline: Deadline | None = None) -> bytes:
    """A whole small file (manifest, catalog part) in memory, with bounded retries; at most ``limit`` bytes.

    ``deadline``: the wall-clock budget of each HTTP request (default `DEADLINE`)."""
    def once() -> bytes:
        with _open_stream(location, deadline) as (src, _, clock):
            data = _read_upto(src, limit + 1, location, clock)
            if clock is not None and clock.declared is not None and len(data) < min(clock.declared, limit + 1):
                raise _dropped(location, len(data), clock.declared)
            return data

    data = _retrying(once, location, "whole file")
    if len(data) > limit:
        raise ValueError(f"{location} is larger than {limit} bytes: not a small metadata file")
    return data


def fetch_file(location: str, dst: str | Path, expected_size: int | None = None, *,
               deadline: Deadline | None = None) -> int:
    """Copy a whole file to ``dst`` atomically: stream to a temp name beside it, fsync, rename.

    Args:
        location: local path or URL (see `read_ranges`).
        dst: the destination; its folder is created. Left untouched when the copy fails.
        expected_size: when given, a different size is a `ReadError`.
        deadline: the wall-clock budget of each HTTP request (default `DEADLINE`).

    Returns:
        The number of bytes copied.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dst)
    try:
        with open(tmp, "xb") as f:
            n = copy_into(location, f, expected_size, deadline=deadline)
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

