"""Open a shard set, refuse it when stale, and read single members of single samples by byte range.

`open_shard_set` checks, before anything is read, that the set was built by the current preprocessing
pipeline (same hash) and, when the dataset root is at hand, that the routes it was built from are unchanged
on disk and that no route was added to or removed from the collection. A stale set raises
`StaleShardSetError`, which says what changed and the command that rebuilds it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leadio.buckets import trainable_routes_on_disk
from leadio.catalog import Catalog, load_catalog, route_fingerprint
from leadio.format import DATASET_CONFIGS, DatasetConfig, list_frames
from leadio.preprocess import Member, decode_member, member_layout, pipeline_hash
from leadio.read import ReadError, SessionCache, resolve

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

    def read_member_bytes(self, row: int, suffix: str) -> bytes:
        """The stored bytes of one member of one sample, by a single positioned read."""
        col = self.members.index(suffix)
        shard = int(self.catalog["shard"][row])
        offset = int(self.catalog["member_offset"][row, col])
        size = int(self.catalog["member_size"][row, col])
        if self.cache is not None:  # remote set: whole shards are staged through the session cache
            entry = self.manifest["shards"][shard]
            try:
                return self.cache.read_ranges(self.shard_location(shard), entry["bytes"], [(offset, size)],
                                              key=f"{self.path.name}/{entry['path']}")[0]
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
                                f"the shard ends earlier (truncated)")
        return data

    def read_sample(self, row: int, view: str = "normal", names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Decode the members ``names`` (default all) of one view of sample ``row`` (CPU reference decode)."""
        from leadio.preprocess import member_name

        out = {}
        for name in names or list(self.layout):
            member = self.layout[name]
            data = self.read_member_bytes(row, member_name(member, view))
            try:
                out[name] = decode_member(member, data)
            except Exception as e:
                raise ShardSetError(f"{self.describe(row)}: member {member_name(member, view)} does not decode "
                                    f"({type(e).__name__}: {e})") from e
        return out


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
        from leadio.preprocess import PIPELINE_VERSION, pipeline_params

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


def _open_remote(url: str, cache_dir: str | Path | None, cache_bytes: int) -> tuple[Path, dict, SessionCache]:
    """Stage a remote set's manifest and catalog into the session cache; returns (local meta folder, manifest)."""
    import tempfile

    url = url.rstrip("/")
    name = url.rsplit("/", 1)[-1]
    cache = SessionCache(cache_dir or Path(tempfile.gettempdir()) / "leadio-session-cache", cache_bytes)
    try:
        manifest_path = cache.fetch_small(resolve(url, "manifest.json"), key=f"{name}/manifest.json")
        manifest = json.loads(manifest_path.read_text())
        for rel in manifest.get("catalog_files", []):
            cache.fetch_small(resolve(url, f"catalog.zarr/{rel}"), key=f"{name}/catalog.zarr/{rel}")
    except (ReadError, FileNotFoundError, json.JSONDecodeError) as e:
        raise ShardSetError(f"cannot open remote shard set {url}: {e}") from e
    return manifest_path.parent, manifest, cache


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


def _collection_name(collection) -> str:
    if collection is None:
        return "full_pretrain"
    if hasattr(collection, "name"):
        return collection.name
    from leadio.buckets.builders import _resolve

    return _resolve(collection)[1]["name"]


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
    name = _collection_name(collection)
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


def open_shard_set(path: str | Path, *, root: str | Path | None = None, check_routes: bool | str = "quick",
                   cache_dir: str | Path | None = None, cache_bytes: int = 64 * 1024**3) -> ShardSet:
    """Open the shard set at ``path`` after checking that it is complete and current.

    Args:
        path: the set folder (``<root>/shards/<collection>-<hash>``).
        root: the dataset root whose routes the set came from; default: two levels above ``path`` when
            that holds a ``data/`` folder. Without a root only the pipeline hash is checked.
        check_routes: how the routes on disk are compared with the build: ``"quick"`` (default) lists each
            route's ``bboxes/`` and the scenario folders (routes added, removed, or with another frame count;
            a few system calls per route, cheap enough for every rank of every run); ``"full"`` also
            fingerprints every file's name and size (a ``stat`` per file: use it after editing routes in
            place); ``False`` checks only the pipeline.
        cache_dir, cache_bytes: session cache for a remote set (an http(s) or fsspec URL): the manifest and
            catalog are fetched at once, shards on first use, LRU-bounded to ``cache_bytes``.

    Raises:
        ShardSetError: no manifest (the build did not finish) or an unreadable one.
        StaleShardSetError: the pipeline or the routes changed since the build.
    """
    if _is_remote(path):
        local, manifest, cache = _open_remote(str(path), cache_dir, cache_bytes)
        config = _check_pipeline(local, manifest, None)
        return ShardSet(path=local, manifest=manifest, catalog=load_catalog(local / "catalog.zarr"), config=config,
                        base=str(path).rstrip("/"), cache=cache)
    path = Path(str(path).removeprefix("file://"))
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        raise ShardSetError(_no_manifest(path))
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise ShardSetError(f"{manifest_path} is not valid JSON ({e})") from e
    if manifest.get("format") != "leadio-shard-set":
        raise ShardSetError(f"{manifest_path} is not a leadio shard-set manifest")
    if root is None and (path.parent.parent / "data").is_dir():
        root = path.parent.parent
    root = Path(root) if root is not None else None
    config = _check_pipeline(path, manifest, root)
    if check_routes not in (True, False, "quick", "full"):
        raise ValueError(f"check_routes must be 'quick', 'full' or False, got {check_routes!r}")
    if root is not None and check_routes:
        problems = []
        recorded = manifest["collection"]["routes"]  # trainable routes -> frame count at build time
        for route, fp in manifest["routes"].items():
            if not (root / route).is_dir():
                problems.append(f"route {route} was removed")
            elif check_routes == "full" and route_fingerprint(root / route) != fp:
                problems.append(f"route {route} changed on disk")
            elif route in recorded and (n := len(list_frames(root / route, "bboxes"))) != recorded[route]:
                problems.append(f"route {route} changed on disk ({n} frames, built with {recorded[route]})")
        on_disk = trainable_routes_on_disk(root)
        added = sorted(set(on_disk) - set(recorded))
        if added:
            problems.append(f"{len(added)} route(s) added ({', '.join(added[:3])})")
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise StaleShardSetError(f"shard set {path} is stale: {shown}; {_rebuild_hint(manifest, root)}")
    catalog = load_catalog(path / "catalog.zarr")
    return ShardSet(path=path, manifest=manifest, catalog=catalog, config=config)
