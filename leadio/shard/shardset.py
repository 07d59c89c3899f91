"""Open a shard set, refuse it when stale, and read single members of single samples by byte range.

`open_shard_set` checks, before anything is read, that the set was built by the current preprocessing
pipeline (same hash), that its manifest and catalog agree (every sample's shard is listed, the counts match,
no catalog chunk is missing), and, when the dataset root is at hand, that the routes it was built from are
unchanged on disk and that no route was added to or removed from the collection. A stale set raises
`StaleShardSetError`, which says what changed and the command that rebuilds it.

Read-time verification (``verify=True``, the default): every member read is hashed (xxh3-64) and compared
with the hash recorded at build time, so a damaged shard raises `ShardSetError` naming shard, sample and
member instead of delivering wrong labels. Measured with ``python -m benchmarks.verify_cost``: hashing one
view's members takes ~8 us per sample (xxh3 at ~9-11 GB/s, the bytes are already in memory) against ~4 ms to
read and decode the sample, i.e. ~0.2%, below the noise of end-to-end loader runs; so it is on by default,
and ``verify=False`` skips it.

A remote set is identified by the hash of its manifest: the manifest is fetched afresh at every open, and
its catalog and shards are cached under ``<set name>-<manifest hash>``, so a set rebuilt under the same name
is never mixed with the old one's cached files.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xxhash

from leadio.buckets.specs import collection_name
from leadio.catalog_store import Catalog, CatalogError, load_catalog
from leadio.format.config import DATASET_CONFIGS, DatasetConfig
from leadio.format.routes import RouteInfo, discover_routes, list_frames
from leadio.read import Deadline, ReadError, read_small, resolve
from leadio.schema import Member, member_layout, pipeline_hash
from leadio.session_cache import SessionCache
from leadio.stamps import RouteStamps, route_fingerprints

__all__ = ["ShardSet", "ShardSetError", "StaleShardSetError", "locate_shard_set", "open_shard_set"]


class ShardSetError(ValueError):
    """A shard set or one of its shards/samples is missing or damaged (names shard and sample key)."""


class StaleShardSetError(ShardSetError):
    """The shard set no longer matches the pipeline or the routes it was built from."""


@dataclass
class ShardSet:
    """A built shard set: its manifest, its catalog and where its shards are.

    Attributes:
        path: the set's folder.
        manifest: the parsed manifest.json.
        catalog: the set's catalog (rows = samples, with ``shard``, ``member_offset``, ``member_size``).
        config: the dataset config the set was built for.
    """

    path: Path
    manifest: dict
    catalog: Catalog
    config: DatasetConfig
    base: str | None = None                 # remote location of the set (http(s)/fsspec URL), if any
    cache: SessionCache | None = field(default=None, repr=False)
    verify: bool = True                     # compare every member read with its recorded hash
    identity: str = ""                      # sha256 prefix of the manifest's bytes (names cached files)

    def __len__(self) -> int:
        return len(self.catalog)

    @property
    def members(self) -> list[str]:
        """Member suffixes in storage order (``rgb_n.jpg``, ...)."""
        return list(self.manifest["members"])

    @property
    def layout(self) -> dict[str, Member]:
        return member_layout(self.config)

    def shard_path(self, shard: int) -> Path:
        """Local path of a shard (of a local set)."""
        return self.path / self.manifest["shards"][shard]["path"]

    def shard_location(self, shard: int) -> str:
        """Where a shard is read from: its local path, or its URL for a remote set."""
        rel = self.manifest["shards"][shard]["path"]
        return resolve(self.base, rel) if self.base is not None else str(self.path / rel)

    def describe(self, row: int) -> str:
        """``shard <location>, sample <key>`` for error messages."""
        return f"shard {self.shard_location(int(self.catalog['shard'][row]))}, sample {self.catalog['sample_key'][row]}"

    def _fix(self) -> str:
        if self.base is not None:
            return (f"the server's copy of {self.base} is damaged or was rebuilt while in use: check it with "
                    f"`python -m leadio.shard verify` where it is stored, then reopen the set")
        return (f"rerun `python -m leadio.shard --root <root> --collection {self.manifest['collection']['name']}` "
                f"(it rewrites damaged shards; `python -m leadio.shard verify {self.path}` lists them)")

    def check_member(self, row: int, col: int, data: bytes | memoryview) -> None:
        """Raise `ShardSetError` unless ``data`` (member ``col`` of sample ``row``) has its recorded hash."""
        if xxhash.xxh3_64_intdigest(data) != int(self.catalog["member_xxh3_64"][row, col]):
            raise ShardSetError(f"{self.describe(row)}: member {self.members[col]} differs from the hash recorded "
                                f"at build time (the shard was damaged since); {self._fix()}")

    def read_member_bytes(self, row: int, suffix: str) -> bytes:
        """The stored bytes of one member of one sample, by a single positioned read (checked when ``verify``)."""
        data = self._read_member(row, suffix)
        if self.verify:
            self.check_member(row, self.members.index(suffix), data)
        return data

    def _read_member(self, row: int, suffix: str) -> bytes:
        col = self.members.index(suffix)
        shard = int(self.catalog["shard"][row])
        offset = int(self.catalog["member_offset"][row, col])
        size = int(self.catalog["member_size"][row, col])
        if self.cache is not None:  # remote set: whole shards are staged through the session cache
            entry = self.manifest["shards"][shard]
            try:
                return self.cache.read_ranges(self.shard_location(shard), entry["bytes"], [(offset, size)],
                                              key=f"{self.path.name}/{entry['path']}", checksum=entry["xxh3_128"])[0]
            except (ReadError, FileNotFoundError, ValueError) as e:
                raise ShardSetError(f"{self.describe(row)}: member {suffix} cannot be read ({e})") from e
        path = self.shard_path(shard)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise ShardSetError(f"{self.describe(row)}: shard file is missing; rebuild with "
                                f"`python -m leadio.shard --root <root> --collection "
                                f"{self.manifest['collection']['name']}`") from None
        try:
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        if len(data) != size:
            raise ShardSetError(f"{self.describe(row)}: member {suffix} needs bytes {offset}..{offset + size} but "
                                f"the shard ends earlier (truncated); {self._fix()}")
        return data


def _rebuild_hint(manifest: dict, root: Path | None) -> str:
    return (f"rebuild it with `python -m leadio.shard --root {root or '<root>'} --collection "
            f"{manifest['collection']['name']}`")


def _check_pipeline(path: Path, manifest: dict, root: Path | None) -> DatasetConfig:
    """The set's dataset config, after checking the set was built by the current preprocessing pipeline."""
    config = DATASET_CONFIGS.get(manifest["dataset_config"])
    if config is None:
        raise ShardSetError(f"{path} was built for dataset config {manifest['dataset_config']!r}, unknown here "
                            f"(known: {sorted(DATASET_CONFIGS)})")
    current = pipeline_hash(config)
    built = manifest["pipeline"]
    if built["hash"] != current:
        from leadio.schema import PIPELINE_VERSION, pipeline_params

        now = pipeline_params(config)
        changed = sorted(k for k in now if json.dumps(now[k], sort_keys=True) !=
                         json.dumps(built["params"].get(k), sort_keys=True))
        raise StaleShardSetError(
            f"shard set {path} is stale: built by preprocessing pipeline {built['hash']} (version "
            f"{built['version']}), the current code is {current} (version {PIPELINE_VERSION}); changed: "
            f"{', '.join(changed) or 'code'}; {_rebuild_hint(manifest, root)}")
    return config


def _is_remote(location: str | Path) -> bool:
    text = str(location)
    return "://" in text and not text.startswith("file://")


def manifest_identity(data: bytes) -> str:
    """16 hex digits of sha256 over a manifest's bytes: a rebuilt set (other shards) has another identity."""
    return hashlib.sha256(data).hexdigest()[:16]


def _open_remote(url: str, cache_dir: str | Path | None, cache_bytes: int,
                 deadline: Deadline | None = None) -> tuple[Path, dict, SessionCache, str]:
    """Stage a remote set's manifest and catalog into the session cache under ``<name>-<manifest identity>``;
    returns (local meta folder, manifest, cache, identity). The manifest is fetched afresh every time.

    Refused here, at open, rather than at the first read: a cache folder that cannot be written, and a
    ``cache_bytes`` too small for the set's largest shard beside the metadata the cache keeps. ``deadline``:
    the wall-clock budget of each HTTP request (`leadio.read.Deadline`; None: the default)."""
    import tempfile

    url = url.rstrip("/")
    name = url.rsplit("/", 1)[-1]
    try:
        cache = SessionCache(cache_dir or Path(tempfile.gettempdir()) / "leadio-session-cache", cache_bytes,
                             deadline=deadline)
    except ValueError as e:  # a read-only or blocked folder, a cache_bytes <= 0
        raise ShardSetError(f"cannot open remote shard set {url}: {e}") from e
    try:
        raw = read_small(resolve(url, "manifest.json"), deadline=deadline)
        identity = manifest_identity(raw)
        key = f"{name}-{identity}"
        manifest_path = cache.fetch_small(resolve(url, "manifest.json"), key=f"{key}/manifest.json")
        if manifest_path.read_bytes() != raw:
            raise ShardSetError(f"remote shard set {url} changed while it was being opened (rebuilt on the server?); "
                                f"open it again once the build has finished")
        manifest = json.loads(raw)
        for rel in manifest.get("catalog_files", []):
            cache.fetch_small(resolve(url, f"catalog.zarr/{rel}"), key=f"{key}/catalog.zarr/{rel}")
    except (ReadError, FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShardSetError(f"cannot open remote shard set {url}: {e}") from e
    _check_cache_fits(url, manifest, cache)
    return manifest_path.parent, manifest, cache, identity


def _check_cache_fits(url: str, manifest: dict, cache: SessionCache) -> None:
    """Refuse a session cache that cannot hold the set's largest shard beside the metadata it never evicts
    (which it holds by now: this set's manifest and catalog, and other sets' that share the folder)."""
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        return  # `_check_consistency` names this fault
    largest = max(shards, key=lambda e: int(e.get("bytes", 0)))
    size, pinned = int(largest.get("bytes", 0)), cache.pinned_bytes()
    if pinned + size > cache.max_bytes:
        raise ShardSetError(f"remote shard set {url}: cache_bytes={cache.max_bytes} cannot hold its largest shard "
                            f"{largest.get('path')} ({size} bytes) beside the {pinned} bytes of metadata (manifests, "
                            f"catalogs) that the session cache {cache.directory} keeps; pass cache_bytes >= "
                            f"{pinned + size} (better several shards' worth: the loader plans blocks of shards that "
                            f"fit in the cache)")


def _check_consistency(path: Path, manifest: dict, catalog: Catalog, fix: str) -> None:
    """The manifest and the catalog describe the same samples (a shard entry missing from one is refused)."""
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        raise ShardSetError(f"shard set {path}: manifest.json lists no shards; {fix}")
    n_shards, col = len(shards), catalog["shard"]
    if len(col) and (int(col.max()) >= n_shards or int(col.min()) < 0):
        bad = int(col.max()) if int(col.max()) >= n_shards else int(col.min())
        raise ShardSetError(f"shard set {path}: the catalog places samples in shard {bad}, but manifest.json lists "
                            f"{n_shards} shards (an entry is missing: the manifest is damaged); {fix}")
    counts = np.bincount(col, minlength=n_shards)
    listed = [int(e.get("samples", -1)) for e in shards]
    wrong = [k for k in range(n_shards) if counts[k] != listed[k]]
    if wrong or manifest.get("num_samples", len(col)) != len(col):
        k = wrong[0] if wrong else None
        detail = (f"shard {shards[k].get('path')} holds {counts[k]} samples in the catalog, {listed[k]} in the "
                  f"manifest" if k is not None else f"the manifest counts {manifest.get('num_samples')} samples, the "
                  f"catalog {len(col)}")
        raise ShardSetError(f"shard set {path}: manifest and catalog disagree ({detail}); {fix}")
    if "member_xxh3_64" not in catalog.columns:
        raise ShardSetError(f"shard set {path} was built by an older leadio without per-member hashes (manifest "
                            f"version {manifest.get('version')}); {fix} (only the sidecars and catalog change), or "
                            f"open it with verify=False")


def _no_manifest(path: Path) -> str:
    """Why ``path`` (no manifest.json) is not an openable shard set, and what to do."""
    if not path.exists():
        return f"shard set {path} does not exist; build one with `python -m leadio.shard --root <dataset root>`"
    if (path / "data").is_dir() or (path / "shards").is_dir():
        return (f"{path} is a dataset root, not a shard set: open_dataset({str(path)!r}, collection=...) finds its "
                f"set, or pass <root>/shards/<collection>-<hash>")
    if (path / "assignment.json").exists():
        return (f"{path} has no manifest.json: the build did not finish (or --part builds were not merged); rerun "
                f"`python -m leadio.shard` or `python -m leadio.shard --merge`")
    return f"{path} is not a shard set (no manifest.json); pass <root>/shards/<collection>-<hash> or a dataset root"


def locate_shard_set(location, collection=None, root: str | Path | None = None) -> tuple[object, Path | None]:
    """(shard set, dataset root) for what a user passed to ``open_dataset``.

    A shard set (folder, URL or `ShardSet`) comes back unchanged. A local dataset root (a folder holding
    ``data/`` or ``shards/`` and no ``manifest.json``) resolves to its set under ``shards/`` that serves
    ``collection``: the collection's own set, else the ``full_pretrain`` set (which serves posttrain). Among
    sets of one collection built by different pipelines, the current one wins; an older one alone is returned
    so that opening it says it is stale and how to rebuild it.

    Raises:
        ShardSetError: the root has no shard set for the collection (names the command that builds it).
    """
    if isinstance(location, ShardSet) or _is_remote(location):
        return location, root
    path = Path(str(location).removeprefix("file://"))
    if (path / "manifest.json").exists() or not ((path / "data").is_dir() or (path / "shards").is_dir()):
        return location, root
    name = collection_name(collection)
    for candidate in dict.fromkeys([name, "full_pretrain"]):
        found = []
        for manifest_path in sorted((path / "shards").glob(f"{candidate}-*/manifest.json")):
            try:
                manifest = json.loads(manifest_path.read_text())
                config = DATASET_CONFIGS.get(manifest["dataset_config"])
                current = config is not None and manifest["pipeline"]["hash"] == pipeline_hash(config)
            except (OSError, ValueError, KeyError):
                current = False
            found.append((current, manifest_path.stat().st_mtime, manifest_path.parent))
        if found:
            return max(found)[2], path if root is None else Path(root)
    raise ShardSetError(f"dataset root {path} has no shard set for collection {name!r} (nothing under "
                        f"{path / 'shards'}); build it with `python -m leadio.shard --root {path} --collection "
                        f"{name}`")


def _frames_changed(root: Path, manifest: dict, catalog: Catalog) -> list[str]:
    """Routes whose samples' source files (`leadio.stamps`) differ from the digests recorded at build time."""
    caches: dict[str, RouteStamps] = {}
    digests = []
    for route, frame in zip(catalog["route"], catalog["frame"], strict=True):
        route = str(route)
        if route not in caches:
            caches[route] = RouteStamps(root, route)
        digests.append(caches[route].frame_digest(int(frame)))
    for c in caches.values():
        c.save()
    now = route_fingerprints(catalog["route"], digests)
    return [r for r, fp in manifest["routes"].items() if now.get(r) != fp]


def open_shard_set(path: str | Path, *, root: str | Path | None = None, check_routes: bool | str = "quick",
                   cache_dir: str | Path | None = None, cache_bytes: int = 64 * 1024**3,
                   verify: bool = True, deadline: Deadline | None = None) -> ShardSet:
    """Open the shard set at ``path`` after checking that it is complete and current.

    Args:
        path: the set folder (``<root>/shards/<collection>-<hash>``).
        root: the dataset root whose routes the set came from; default: two levels above ``path`` when
            that holds a ``data/`` folder. Without a root only the pipeline hash is checked.
        check_routes: how the routes on disk are compared with the build: ``"quick"`` (default) lists each
            route's ``bboxes/`` and the scenario folders (routes added, removed, or with another frame count;
            a few system calls per route, cheap enough for every rank of every run); ``"full"`` also
            compares the content of the files every sample was made from with the build's record (a ``stat``
            per file, plus a hash of each file whose mtime or size changed, see `leadio.stamps`: use it after
            editing routes in place); ``False`` checks only the pipeline.
        cache_dir, cache_bytes: session cache for a remote set (an http(s) or fsspec URL): the manifest and
            catalog are fetched at once, shards on first use, LRU-bounded to ``cache_bytes``.
        verify: check every member read against its recorded hash (see the module docstring).
        deadline: the time limit of each request to a remote set (`leadio.read.Deadline`; default: 60 s plus the
            request's size at 1 MiB/s).

    Raises:
        ShardSetError: no manifest (the build did not finish) or an unreadable one.
        StaleShardSetError: the pipeline or the routes changed since the build.
    """
    if _is_remote(path):
        local, manifest, cache, identity = _open_remote(str(path), cache_dir, cache_bytes, deadline)
        config = _check_pipeline(local, manifest, None)
        fix = f"rebuild the set where it is stored and reopen {path}"
        catalog = _load_set_catalog(local, fix)
        (_check_consistency if verify else _check_consistency_light)(Path(str(path)), manifest, catalog, fix)
        return ShardSet(path=local, manifest=manifest, catalog=catalog, config=config, base=str(path).rstrip("/"),
                        cache=cache, verify=verify, identity=identity)
    path = Path(str(path).removeprefix("file://"))
    raw, manifest = _read_manifest(path)
    if root is None and (path.parent.parent / "data").is_dir():
        root = path.parent.parent
    root = Path(root) if root is not None else None
    config = _check_pipeline(path, manifest, root)
    if check_routes not in (True, False, "quick", "full"):
        raise ValueError(f"check_routes must be 'quick', 'full' or False, got {check_routes!r}")
    fix = _rebuild_hint(manifest, root).replace("rebuild it with", "rerun")
    catalog = None
    if root is not None and check_routes:
        catalog = _check_routes(path, manifest, root, full=check_routes == "full", fix=fix)
    if catalog is None:
        catalog = _load_set_catalog(path, fix)
    if verify:
        _check_consistency(path, manifest, catalog, fix)
    else:
        _check_consistency_light(path, manifest, catalog, fix)
    return ShardSet(path=path, manifest=manifest, catalog=catalog, config=config, verify=verify,
                    identity=manifest_identity(raw))


def _read_manifest(path: Path) -> tuple[bytes, dict]:
    """The set's ``manifest.json``: its bytes (the set's identity) and its content, checked to be a manifest."""
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        raise ShardSetError(_no_manifest(path))
    try:
        raw = manifest_path.read_bytes()
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShardSetError(f"{manifest_path} is not valid JSON ({e}); rerun `python -m leadio.shard` for its "
                            f"collection (it rewrites the manifest)") from e
    if manifest.get("format") != "leadio-shard-set":
        raise ShardSetError(f"{manifest_path} is not a leadio shard-set manifest")
    return raw, manifest


def _check_routes(path: Path, manifest: dict, root: Path, *, full: bool, fix: str) -> Catalog | None:
    """Refuse the set when routes were removed, added or have another frame count than at build (one listing
    of every route's frames); with ``full`` also when a file a sample was made from changed. Returns the set's
    catalog when the full check loaded it."""
    problems, catalog = [], None
    recorded = manifest["collection"]["routes"]  # trainable routes -> frame count at build time
    skipped = manifest.get("skipped_routes") or {}
    found = {r.rel_path: r for r in discover_routes(root, on_error="skip" if skipped else "raise")}
    for route in manifest["routes"]:
        info = found.get(route)
        if info is None:
            problems.append(f"route {route} was removed")
        elif route in recorded and (n := _frames_now(root, info)) != recorded[route]:
            problems.append(f"route {route} changed on disk ({n} frames, built with {recorded[route]})")
    if full and not problems:
        catalog = _load_set_catalog(path, fix)
        problems += [f"route {r} changed on disk (file contents)" for r in _frames_changed(root, manifest, catalog)]
    added = sorted({rel for rel, info in found.items() if info.trainable} - set(recorded) - set(skipped))
    if added:
        problems.append(f"{len(added)} route(s) added ({', '.join(added[:3])})")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise StaleShardSetError(f"shard set {path} is stale: {shown}; {_rebuild_hint(manifest, root)}")
    return catalog


def _frames_now(root: Path, info: RouteInfo) -> int:
    """A route's frame count as listed by `discover_routes`; where that listing failed (skipped as unreadable),
    listed again so that the error is raised naming the route."""
    return len(list_frames(root / info.rel_path, "bboxes")) if info.filter_reason and \
        info.filter_reason.startswith("unreadable") else info.num_frames


def _check_consistency_light(path: Path, manifest: dict, catalog: Catalog, fix: str) -> None:
    try:
        _check_consistency(path, manifest, catalog, fix)
    except ShardSetError as e:
        if "without per-member hashes" not in str(e):
            raise


#: the set catalog's columns every loader reads, read (and checked) when the set is opened; the others (~40 of
#: ~48, most of a row's bytes: town, weather, scenario strings ...) are read on first use
READ_COLUMNS = ("shard", "route", "frame", "sample_key", "member_offset", "member_size", "member_xxh3_64")


def _load_set_catalog(path: Path, fix: str) -> Catalog:
    try:
        return load_catalog(path / "catalog.zarr", fix=f"{fix} (it rewrites the set's catalog)", eager=READ_COLUMNS)
    except CatalogError as e:
        raise ShardSetError(str(e)) from e
