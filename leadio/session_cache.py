"""The session cache (LEAD's ``training_session_cache``): a bounded, LRU, multi-process-safe local copy of
remote shards, filled through `leadio.read`'s retrying, checksummed copy (`leadio.read.copy_into`, or the
``copy`` a caller passes). Owns `SessionCache` and its `CacheStats`. Its temp names, locks and stale-temp
cleanup are `leadio.files`' (`temp_sibling`, `file_lock`, `remove_stale_temps`), as for every other writer.

Shards on slow or remote storage are copied to a local folder on first use and served from there, bounded by
``max_bytes`` with least-recently-used eviction (recency = mtime, bumped on every hit). The folder itself is
the ledger: its total is the sum of the apparent sizes of all its files. A download reserves its size under
the cache-wide lock by evicting LRU files and creating its temp file already truncated to the full size; files
appear under their final name only by an atomic rename (so a name that exists is complete) and disappear only
by eviction. Hence the total on disk never exceeds ``max_bytes`` at any instant, with any number of processes,
and nothing has to be repaired after a crash. Small metadata files (``fetch_small``) live under ``meta/``,
count in the total and are never evicted. The folder is checked when the cache is made: one that cannot be
created or written (a read-only mount, no permission, a file in the way) is refused at once, naming it, rather
than at the first download.

Concurrency. Locks are `leadio.files.file_lock` (``fcntl.flock``) on lock files: one per entry (one process
downloads a shard, the others wait and then reuse it) and one for the whole cache (accounting, eviction,
renames). The kernel drops a flock lock when its holder dies, ``kill -9`` included, so a crash never leaves a
stale lock. The temp file of a killed download (``.<name>.tmp-<pid>-<tag>``, or ``.<name>.part-<pid>-<tag>``
from releases before the temp names were unified) is removed by the next process that takes that entry's
lock, or by any accounting scan that finds the entry lock free (a free lock proves the writer is gone; a pid
check would not, given pid reuse and containers). Lock files are kept empty (they count in the total), live
under ``<cache>/locks/`` (never beside a cached file, where a Zarr reader would list them) and are never
deleted (deleting a flock file races with its next user); empty folders stay too. flock is local to one
machine, so the cache folder must be on a local disk, which is what a session cache is for. Evicting a file
that another process is reading is safe on POSIX (an open fd keeps working after unlink); a reader that has
only the path and finds it gone re-fetches once (``SessionCache.read_ranges`` does). If ``max_bytes`` is
smaller than the shards that all concurrent readers download at once, a downloader waits (up to ``wait_s``)
for room.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import os
import posixpath
import re
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from leadio.files import LockedError, file_lock, remove_stale_temps, temp_sibling, temp_target, writing
from leadio.read import Deadline, ReadError, copy_into, read_local, read_small

__all__ = ["CacheStats", "SessionCache"]

log = logging.getLogger(__name__)

#: ``copy(location, dst, expected_size, checksum) -> bytes copied``, the signature of `leadio.read.copy_into`
Copy = Callable[[str, BinaryIO, int, str | None], int]


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
        copy: fills a reserved temp file with a shard's bytes, with `leadio.read.copy_into`'s signature and
            contract (raise rather than return wrong bytes); the default is `leadio.read.copy_into`. Fault tests
            pass one that dies halfway.
        before_download: called with the temp file's path once its room is reserved, before ``copy`` starts;
            None (default) for nothing. A test seam (it lets a test hold a download at that point); it is not
            sent to other processes: a pickled copy of the cache has None.
        deadline: the wall-clock budget of each HTTP request of the downloads (the default ``copy`` and
            `fetch_small`; see `leadio.read.Deadline`); None (default): `leadio.read.DEADLINE`.

    Raises:
        ValueError: ``max_bytes`` is not positive, or ``directory`` cannot be created or written (read-only,
            no permission, a file in the way): names the folder and says to pass another ``cache_dir``.
    """

    def __init__(self, directory: str | Path, max_bytes: int, *, wait_s: float = 600.0, copy: Copy = copy_into,
                 before_download: Callable[[Path], object] | None = None, deadline: Deadline | None = None) -> None:
        if max_bytes <= 0:
            raise ValueError(f"session cache {directory}: max_bytes must be > 0, got {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.wait_s = wait_s
        self.copy = copy
        self.before_download = before_download
        self.deadline = deadline
        self.stats = CacheStats()
        _check_writable(self.directory)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()  # holds no fds or locks: they live only inside one call
        state["stats"], state["before_download"] = CacheStats(), None
        return state

    def _lock(self, lock: Path, what: str, wait: bool = True) -> contextlib.AbstractContextManager[None]:
        """Exclusive `file_lock` on ``lock``, left empty (lock files count in the total) and brief: waiting for
        another process's download of the same entry is this cache's normal work, not worth a warning."""
        return file_lock(lock, f"session cache {what}", wait=wait, brief=True, record_holder=False)

    def _cache_lock(self) -> contextlib.AbstractContextManager[None]:
        """The cache-wide lock: accounting, eviction and renames."""
        return self._lock(self.directory / ".lock", str(self.directory))

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
        return self.directory / "locks" / rel.parent / f".{rel.name}.lock"  # file_lock creates its folder

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
                target = temp_target(name)
                if target is not None and self._remove_if_orphan(path, path.with_name(target)):
                    continue
                total += st.st_size
                if not name.startswith("."):
                    if path.is_relative_to(data):
                        evictable.append((st.st_mtime_ns, str(path), st.st_size))
                    else:
                        pinned += st.st_size
        return total, pinned, evictable

    def _remove_if_orphan(self, temp: Path, entry: Path) -> bool:
        """Remove ``temp`` if ``entry``'s lock is free (its downloader is gone); True if it was removed."""
        try:
            with self._lock(self._entry_lock(entry), f"entry {entry}", wait=False):
                log.info("session cache: removing %s left by a dead download", temp)
                temp.unlink(missing_ok=True)
                return True
        except LockedError:
            return False

    def _store(self, path: Path, size: int, location: str, write: Callable[[BinaryIO], object]) -> None:
        """Reserve ``size`` bytes (evicting LRU files), write via ``write`` into a temp file, publish it.

        Call with the entry lock held.
        """
        if size > self.max_bytes:
            raise ValueError(f"session cache {self.directory} holds at most {self.max_bytes} bytes but {location} "
                             f"is {size} bytes; raise the cache size or read this set without a session cache")
        remove_stale_temps(path)  # we hold the entry lock: any temp of this entry is an orphan
        deadline = time.monotonic() + self.wait_s
        while True:
            with self._cache_lock():
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
                    tmp = temp_sibling(path)
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
                if self.before_download is not None:
                    self.before_download(tmp)
                with writing(path):
                    write(f)
                f.flush()
                os.fsync(f.fileno())
            with self._cache_lock():  # renames under the lock keep scans from missing the file
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
        with self._lock(self._entry_lock(path), f"entry {path}"):
            if self._hit(path, size):  # another process downloaded it while we waited
                return path
            if path.exists():
                log.warning("session cache: %s has the wrong size (expected %d), fetching again", path, size)
                with self._cache_lock():
                    path.unlink(missing_ok=True)
            copy = self.copy
            if copy is copy_into and self.deadline is not None:
                copy = functools.partial(copy_into, deadline=self.deadline)
            self._store(path, size, location, lambda f: copy(location, f, size, checksum))
        self.stats.misses += 1
        self.stats.bytes_downloaded += size
        return path

    def read_ranges(self, location: str, size: int, ranges: list[tuple[int, int]],
                    key: str | None = None, checksum: str | None = None) -> list[bytes]:
        """`read_ranges` of the cached copy of ``location`` (see `local_path`), re-fetching once if evicted."""
        path = self.local_path(location, size, key, checksum)
        try:
            return read_local(path, ranges, f"{location} (cached as {path})")
        except FileNotFoundError:  # evicted by another process between local_path and open
            path = self.local_path(location, size, key, checksum)
            return read_local(path, ranges, f"{location} (cached as {path})")

    def fetch_small(self, location: str, key: str) -> Path:
        """A local copy of a small metadata file (manifest, catalog part), kept under ``meta/``.

        Such files count in the cache's total but are never evicted; the whole file (at most 256 MiB) is held
        in memory once.
        """
        path = self._path("meta", location, key)
        if self._hit(path, None):
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock(self._entry_lock(path), f"entry {path}"):
            if self._hit(path, None):
                return path
            data = read_small(location, min(self.max_bytes, 256 * 1024**2), deadline=self.deadline)
            self._store(path, len(data), location, lambda f: f.write(data))
        self.stats.misses += 1
        self.stats.bytes_downloaded += len(data)
        return path

    def disk_bytes(self) -> int:
        """The folder's current total in bytes (complete files, reservations and metadata)."""
        with self._cache_lock():
            return self._scan()[0]

    def pinned_bytes(self) -> int:
        """Bytes of metadata in the folder (`fetch_small`'s files, of every set that uses it): never evicted, so
        a download fits only if ``pinned_bytes() + its size <= max_bytes``."""
        with self._cache_lock():
            return self._scan()[1]


_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _check_writable(directory: Path) -> None:
    """Create ``directory`` and create (and drop) a nameless file in it; a folder the cache cannot use is a
    `ValueError` naming it and the fix, at once rather than at the first download."""
    fix = "pass cache_dir=<a writable folder on a local disk> (the session cache copies remote shards there)"
    where = directory
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):  # O_TMPFILE where possible: nothing is left, even if killed
            pass
    except (FileExistsError, NotADirectoryError) as e:
        blocker = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), directory)
        raise ValueError(f"session cache folder {directory} cannot be created: {blocker} is a file, not a folder; "
                         f"{fix}") from e
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return  # writable but full: the download that needs the room says so (`leadio.files.DiskFullError`)
        if e.errno not in _NOT_WRITABLE:
            raise
        if e.filename and Path(e.filename) != directory and not Path(e.filename).is_relative_to(directory):
            where = Path(e.filename)  # a parent folder it had to create (not the probe's random name)
        raise ValueError(f"session cache folder {directory} is not writable ({e.strerror}: {where}); {fix}") from e
