"""Content digests of raw route files, with an mtime+size fast path: what "this file changed" means in leadio.

A file's identity is the xxh3-64 of its bytes. Hashing every file on every check would read the whole dataset,
so each route keeps a stamp cache, ``<root>/.leadio/stamps/<data/Scenario/Route>.json``: file name -> (size,
mtime_ns, digest). A file whose size and mtime equal its stamp is taken to be unchanged (the rule make and
rsync use); any other file is hashed again. So:

- an edit of any size is found (its mtime moved), and a content hash decides whether it matters;
- a root copied elsewhere (new mtimes, or no stamp cache at all) is re-hashed once and stays valid: digests do
  not depend on where or when the files were written;
- the cache is only an accelerator: deleting it costs one re-hash, never a wrong answer. A stamp is recorded
  only when the file's (size, mtime) were the same before and after it was hashed, so a file rewritten while
  being hashed is never recorded under its new time with its old content.

Writers of one route's cache (parallel shard workers) take its lock, merge with what is on disk and replace
it atomically (removing a killed writer's temp). A read-only root works without a cache.

The *source digest* of a frame (`frame_digest`) combines the digests of the files its sample is made from;
shard sidecars record it per sample at build time, which is how a rerun finds shards built from files that
changed since, and how ``open_shard_set(check_routes="full")`` compares a set with the disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import xxhash

from leadio.files import atomic_write_bytes, file_lock, file_xxh3, remove_stale_temps
from leadio.format.errors import RouteError
from leadio.format.routes import FRAME_FOLDERS

__all__ = ["STAMP_DIR", "RouteStamps", "file_digest", "frame_digest", "frame_files", "route_fingerprints"]

log = logging.getLogger(__name__)
STAMP_DIR = ".leadio/stamps"
MISSING = "missing"
_MAX_CACHE_NAME = 200  # a route name longer than this gets a shortened cache name (its lock and temp add ~30)


def file_digest(path: str | Path) -> str:
    """xxh3-64 hex of a file's bytes (streamed)."""
    return file_xxh3(path, bits=64)


def frame_files(frame: int) -> list[str]:
    """The files (relative to the route) one frame's sample is made from, in a fixed order."""
    return [f"{folder}/{frame:04d}.{ext}" for folder, ext in sorted(FRAME_FOLDERS.items())]


class RouteStamps:
    """The stamp cache of one route (see the module docstring); use as a context manager to save it.

    Args:
        root: the dataset root.
        route: the route's ``data/<Scenario>/<Route>`` path relative to ``root``.
    """

    def __init__(self, root: str | Path, route: str):
        self.root, self.route = Path(root), route
        self.dir = self.root / route
        self.cache = self.root / STAMP_DIR / _cache_name(route)
        self.entries: dict[str, list] = {}
        self._new: dict[str, list] = {}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.cache.read_text())
            if isinstance(data, dict):
                self.entries = {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 3}

    def digest(self, name: str) -> str:
        """Digest of ``<route>/<name>`` (``"missing"`` when absent), from the cache when its stamp still fits.

        Raises:
            RouteError: the file exists but cannot be read (permission denied, a folder in its place, I/O error).
        """
        path = self.dir / name
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return MISSING
        except OSError as e:
            raise RouteError(self.dir, f"{name} cannot be read ({e.strerror or e}); make it readable, or leave the "
                                       f"route out with --skip-bad-routes") from e
        entry = self.entries.get(name)
        if entry is not None and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            return entry[2]
        try:
            digest = file_digest(path)
            after = os.stat(path)
        except FileNotFoundError:
            return MISSING
        except OSError as e:
            raise RouteError(self.dir, f"{name} cannot be read ({e.strerror or e}); make it readable, or leave the "
                                       f"route out with --skip-bad-routes") from e
        if (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
            self.entries[name] = self._new[name] = [st.st_size, st.st_mtime_ns, digest]
        return digest

    def frame_digest(self, frame: int) -> str:
        return frame_digest(self, frame)

    def save(self) -> None:
        """Write the stamps learnt since loading (merged with what is on disk now); errors are only logged."""
        if not self._new:
            return
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            with file_lock(self.cache.with_name(f".{self.cache.name}.lock"), f"stamp cache {self.cache}",
                           brief=True):
                remove_stale_temps(self.cache)  # of a killed writer
                with contextlib.suppress(OSError, ValueError):
                    on_disk = json.loads(self.cache.read_text())
                    if isinstance(on_disk, dict):
                        self.entries = {**on_disk, **self.entries}
                atomic_write_bytes(self.cache, json.dumps(self.entries, sort_keys=True, separators=(",", ":")).encode())
            self._new = {}
        except OSError as e:
            log.debug("stamp cache %s not written (%s); files will be hashed again next time", self.cache, e)

    def __enter__(self) -> RouteStamps:
        return self

    def __exit__(self, *exc) -> None:
        self.save()


def _cache_name(route: str) -> str:
    """``<data/Scenario/Route>.json``; a route name too long for a file name with the lock and temp suffixes
    becomes its first characters plus a hash of the whole name."""
    head, _, name = route.rpartition("/")
    raw = os.fsencode(name)
    if len(raw) > _MAX_CACHE_NAME:
        name = f"{raw[:100].decode(errors='ignore')}-{xxhash.xxh3_64_hexdigest(raw)}"
    return f"{head}/{name}.json" if head else f"{name}.json"


def frame_digest(stamps: RouteStamps, frame: int) -> str:
    """xxh3-64 hex over the names and digests of a frame's files (`frame_files`)."""
    h = xxhash.xxh3_64()
    for name in frame_files(frame):
        h.update(f"{name}:{stamps.digest(name)};".encode())
    return h.hexdigest()


def route_fingerprints(routes, sources) -> dict[str, str]:
    """route -> xxh3-64 over the source digests of its samples in a shard set (in sample order): what the
    manifest records and ``check_routes="full"`` compares."""
    hashes: dict[str, xxhash.xxh3_64] = {}
    for route, digest in zip(routes, sources, strict=True):
        hashes.setdefault(str(route), xxhash.xxh3_64()).update(f"{digest};".encode())
    return {r: h.hexdigest() for r, h in sorted(hashes.items())}
