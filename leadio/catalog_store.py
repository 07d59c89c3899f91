"""The catalog on disk: the `Catalog` in memory, and its Zarr v3 store (`write_catalog`, `load_catalog`).

Writes go to a temp folder renamed into place under the catalog's lock, so a killed write leaves the previous
catalog; loads refuse an implausible or damaged store (absurd declared shapes, missing or undecodable chunks)
with a `CatalogError` naming the file and the command that rewrites it. Scanning routes into a `Catalog` is
`leadio.catalog`'s job.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from leadio.files import file_lock, remove_stale_temps, replace_dir, temp_sibling, writing

__all__ = ["CATALOG_NAME", "CATALOG_VERSION", "Catalog", "CatalogError", "LazyColumns", "load_catalog",
           "write_catalog"]

#: 2: ``scenario_type`` follows LEAD's rule (`leadio.schema.scenario_type`): a current "NA" falls back to the
#: previous type, as the stored ``scenario_type_id`` always did; version-1 catalogs said "NA" there.
CATALOG_VERSION = 2
CATALOG_NAME = "catalog.zarr"
MAX_ROWS = 1 << 28  # far above any LEAD root (a few million frames); a larger declared shape is hostile
MAX_ROW_ITEMS = 4096  # items per row of an N-D column (waypoints: 16, member offsets: ~17)


class CatalogError(ValueError):
    """A catalog is damaged or implausible (names the file, and the command that rewrites it)."""


@dataclass
class Catalog:
    """The catalog in memory: column arrays (one entry per row) and the routes table.

    Attributes:
        columns: name -> array of N rows (strings as object arrays); loaded with ``eager=`` a `LazyColumns`
            that reads the other columns on first use.
        routes: name -> array per route found on disk (``rel_path``, ``scenario``, ``num_frames``,
            ``trainable``, ``filter_reason``, ``fingerprint``, ``row_start``, ``row_stop``).
        attrs: the group's attributes (version, dataset config, scan report).
    """

    columns: Mapping[str, np.ndarray]
    routes: dict[str, np.ndarray]
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.columns["frame"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def route_rows(self) -> dict[str, tuple[int, int]]:
        """rel_path -> (row_start, row_stop) for each catalogued route."""
        return {str(p): (int(a), int(b)) for p, a, b in zip(self.routes["rel_path"], self.routes["row_start"],
                                                             self.routes["row_stop"], strict=True) if b > a}


def _put_array(group: zarr.Group, name: str, values: np.ndarray, chunks: tuple[int, ...]) -> None:
    """Store one column; strings as Zarr v3's variable-length ``string`` type (readable by any v3 reader)."""
    if values.dtype == object or values.dtype.kind == "U":
        arr = group.create_array(name, shape=values.shape, dtype=str, chunks=chunks)
        if len(values):
            arr[...] = values.astype(str)
    else:
        group.create_array(name, data=values, chunks=chunks)


def write_catalog(path: Path, catalog: Catalog) -> None:
    """Write ``catalog`` as a Zarr v3 group at ``path`` atomically (temp folder, then rename).

    Takes ``.<name>.lock`` beside ``path`` (and removes killed writers' temps under it); the group's ``files``
    attribute lists every chunk file, so that a reader can tell a missing chunk from a fill value.
    """
    path = Path(path)
    with file_lock(path.with_name(f".{path.name}.lock"), f"catalog {path}"):
        remove_stale_temps(path)
        tmp = temp_sibling(path)
        try:
            with writing(path):
                g = zarr.open_group(tmp, mode="w", zarr_format=3)
                n = len(catalog)
                chunk = max(1, min(n, 1 << 16))
                for name, values in catalog.columns.items():
                    _put_array(g, name, values, (chunk, *values.shape[1:]))
                rg = g.create_group("routes")
                for name, values in catalog.routes.items():
                    _put_array(rg, name, values, (max(1, len(values)),))
                files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*")
                               if p.is_file() and "/c/" in f"/{p.relative_to(tmp).as_posix()}")
                g.attrs.update({**catalog.attrs, "files": files})
            replace_dir(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _check_shapes(path: Path, g: zarr.Group, fix: str) -> None:
    """Refuse declared shapes no catalog has, before any array is read (a hostile or damaged zarr.json)."""
    for group_name, group in (("", g), ("routes/", g["routes"])):
        lengths = set()
        for name, arr in group.arrays():
            shape = tuple(int(x) for x in arr.shape)
            items = int(np.prod(shape[1:], dtype=np.float64)) if len(shape) > 1 else 1
            if not shape or shape[0] > MAX_ROWS or items > MAX_ROW_ITEMS or any(x < 0 for x in shape):
                raise CatalogError(f"catalog {path}: array {group_name}{name} declares shape {shape}, which no "
                                   f"catalog has (at most {MAX_ROWS} rows of {MAX_ROW_ITEMS} items); the catalog is "
                                   f"damaged or not leadio's, {fix}")
            lengths.add(shape[0])
        if len(lengths) > 1:
            raise CatalogError(f"catalog {path}: the arrays of {group_name or 'the top group'} have different "
                               f"lengths {sorted(lengths)}; the catalog is damaged, {fix}")


def load_catalog(path: str | Path, fix: str | None = None, *, eager: Collection[str] | None = None) -> Catalog:
    """Load a catalog written by `build_catalog` (``path`` is the root or the ``catalog.zarr`` folder).

    Args:
        path: the root or the catalog folder.
        fix: what the user should run to rewrite this catalog (default: the catalog scan of its root).
        eager: read only these columns now and each other one on first use (`LazyColumns`); None: all now.

    Raises:
        FileNotFoundError: no catalog there (says how to build one).
        CatalogError: the catalog is damaged (a missing or unreadable chunk, an implausible shape) or was written
            by another catalog version; names the file and ``fix``.
    """
    path = Path(path)
    if path.name != CATALOG_NAME and not (path / "zarr.json").exists():
        path = path / CATALOG_NAME
    fix = fix or f"rebuild it with `python -m leadio.catalog --root {path.parent}`"
    if not (path / "zarr.json").exists():
        raise FileNotFoundError(f"no catalog at {path}; build it with `python -m leadio.catalog --root {path.parent}`")
    try:
        g = zarr.open_group(path, mode="r")
        attrs = dict(g.attrs)
    except Exception as e:  # zarr raises many types for a broken zarr.json
        raise CatalogError(f"catalog {path}: zarr.json is unreadable ({type(e).__name__}: {e}); {fix}") from e
    if attrs.get("format") != "leadio-catalog" or attrs.get("version") != CATALOG_VERSION:
        raise CatalogError(f"catalog {path} has format {attrs.get('format')!r} version {attrs.get('version')!r}, "
                           f"expected leadio-catalog version {CATALOG_VERSION}; {fix}")
    missing = [f for f in attrs.get("files", []) if not (path / f).is_file()]
    if missing:
        raise CatalogError(f"catalog {path}: chunk file {missing[0]} is missing ({len(missing)} missing); the "
                           f"catalog is incomplete, {fix}")
    try:
        _check_shapes(path, g, fix)
    except CatalogError:
        raise
    except Exception as e:
        raise CatalogError(f"catalog {path}: array metadata unreadable ({type(e).__name__}: {e}); {fix}") from e

    routes = {name: _read_array(path, arr, f"routes/{name}", fix) for name, arr in g["routes"].arrays()}
    if eager is None:
        return Catalog(columns={name: _read_array(path, arr, name, fix) for name, arr in g.arrays()}, routes=routes,
                       attrs=attrs)
    columns = LazyColumns(path, [name for name, _ in g.arrays()], fix)
    columns.load(eager)  # a damaged array among these is an error now
    return Catalog(columns=columns, routes=routes, attrs=attrs)


def _read_array(path: Path, arr, name: str, fix: str) -> np.ndarray:
    """One stored array in memory (strings as an object array); a damaged chunk is a `CatalogError`."""
    try:
        data = arr[...]
    except Exception as e:  # a damaged chunk: zstd, crc or shape errors, whatever the codec says
        raise CatalogError(f"catalog {path}: array {name} is damaged ({type(e).__name__}: {e}); {fix}") from e
    return data.astype(object) if data.dtype.kind in "UOT" else np.asarray(data)


class LazyColumns(Mapping):
    """A catalog's columns, each read from its Zarr store on first use and kept (a loader reads 7 of ~48; with
    all of them read at open, `benchmarks.control_plane` projected 1,966 MiB per rank at 1 M rows, with this
    1,281). A damaged array is a `CatalogError` when it is first read. Safe to share between threads; pickles
    as its path and what it has read."""

    def __init__(self, path: Path, names: Collection[str], fix: str):
        self._path, self._names, self._fix = Path(path), tuple(names), fix
        self._read: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._read[name]
        except KeyError:
            if name not in self._names:
                raise
        with self._lock:
            if name not in self._read:
                try:
                    arr = zarr.open_group(self._path, mode="r")[name]
                except Exception as e:  # the store changed or vanished since it was opened
                    raise CatalogError(f"catalog {self._path}: array {name} is unreadable ({type(e).__name__}: "
                                       f"{e}); {self._fix}") from e
                self._read[name] = _read_array(self._path, arr, name, self._fix)
            return self._read[name]

    def load(self, names: Collection[str]) -> None:
        """Read those of ``names`` that the catalog has, now."""
        for name in names:
            if name in self._names:
                self[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __getstate__(self) -> dict:
        return {"path": self._path, "names": self._names, "fix": self._fix, "read": dict(self._read)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["names"], state["fix"])
        self._read.update(state["read"])


