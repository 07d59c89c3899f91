"""The shipped bucket collections and the machinery that builds, stores and refreshes them.

- ``full_pretrain``: every frame of every route LEAD's filter keeps, minus 1 first / 1 last frame; one
  bucket, rate 1 (LEAD's ``full_pretrain_buckets.gz``).
- ``full_posttrain``: the same with 8 first / 8 last skipped, so every sample has 8 future waypoints
  (``full_posttrain_buckets_8_8_8_5.gz``, named from waypoints/skip_first/skip_last/spacing as LEAD does).
- ``by_property``: user-defined buckets grouping frames by catalog columns (scenario, town, weather,
  scenario_type, binned curvature or speed, a flag...) with a rate per bucket; defined by a small JSON file
  or dict, see `property_collection` and ``examples/collections/``.

`load_or_build` is what scripts and the loader call: it reuses the file under ``<root>/buckets/`` when it
matches the routes on disk (reading it without a lock or any write, so a read-only root works), and rebuilds
(logging what changed) when routes were added or removed.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import fnmatch
import inspect
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from leadio.buckets.collection import Bucket, BucketCollection
from leadio.buckets.specs import (
    ReadOnlyRootError,
    bucket_file_name,
    build_command,
    current_collection,
    load_current,
    read_spec,
)
from leadio.catalog import build_catalog
from leadio.catalog_store import Catalog, load_catalog
from leadio.files import file_lock, remove_stale_temps

__all__ = ["BUILDERS", "build_collection", "full_collection", "load_or_build", "property_collection", "resolve_spec"]

log = logging.getLogger(__name__)
#: what writing under a dataset root the user may only read fails with
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


def _skip_mask(catalog: Catalog, skip_first: int, skip_last: int) -> np.ndarray:
    frame = catalog["frame"]
    return (frame >= skip_first) & (frame < catalog["route_num_frames"] - skip_last)


def _members(catalog: Catalog, mask: np.ndarray) -> dict[str, np.ndarray]:
    routes, frames = catalog["route"][mask], catalog["frame"][mask]
    out: dict[str, list] = {}
    for r, f in zip(routes, frames, strict=True):
        out.setdefault(str(r), []).append(int(f))
    return {r: np.array(f, np.int32) for r, f in out.items()}


def _routes_and_totals(catalog: Catalog, mask: np.ndarray) -> tuple[dict[str, int], dict[str, int]]:
    t = catalog.routes
    routes = {str(p): int(n) for p, n, ok in zip(t["rel_path"], t["num_frames"], t["trainable"], strict=True) if ok}
    totals = {"total_routes": int(len(t["rel_path"])), "trainable_routes": len(routes),
              "all_frames": int(t["num_frames"].sum()), "trainable_frames": int(mask.sum())}
    return routes, totals


def full_collection(catalog: Catalog, *, name: str, skip_first: int, skip_last: int, **extra) -> BucketCollection:
    """All frames of the kept routes in range(skip_first, n - skip_last): one bucket, rate 1."""
    mask = _skip_mask(catalog, skip_first, skip_last)
    routes, totals = _routes_and_totals(catalog, mask)
    return BucketCollection(name=name, buckets=[Bucket("all", _members(catalog, mask), {0: 1.0})],
                            builder="full", params={"name": name, "skip_first": skip_first,
                                                    "skip_last": skip_last, **extra},
                            routes=routes, totals=totals)


def _column_values(catalog: Catalog, column: str, bins: Sequence[float] | None, absolute: bool) -> np.ndarray:
    if column not in catalog.columns:
        raise KeyError(f"catalog has no column {column!r}; columns: {sorted(catalog.columns)}")
    values = catalog[column]
    if bins is None:
        if values.dtype.kind == "f":
            raise ValueError(f"column {column!r} is numeric: give 'bins' (edges) to group it")
        return np.array([str(v) for v in values], dtype=object)
    edges = np.asarray(bins, dtype=np.float64)
    v = np.abs(values.astype(np.float64)) if absolute else values.astype(np.float64)
    idx = np.digitize(v, edges)  # 0: below the first edge, len(edges): at or above the last
    labels = [f"<{edges[0]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:], strict=True)] \
        + [f">={edges[-1]:g}"]
    return np.array([labels[i] for i in idx], dtype=object)


def property_collection(catalog: Catalog, *, name: str, group_by: Sequence[Mapping | str],
                        rates: Mapping[str, float | Mapping] | None = None, skip_first: int = 1,
                        skip_last: int = 1, **extra) -> BucketCollection:
    """Buckets grouping frames by catalog columns, with a rate per bucket.

    Args:
        catalog: the catalog to group.
        name: the collection's name (file ``<name>_buckets.gz``).
        group_by: columns to group by; each a name (``"scenario"``) or a dict ``{"column": "curvature",
            "bins": [0.01, 0.03], "absolute": true}`` for numeric columns. A bucket is one combination of
            values, named ``scenario=Accident/curvature=0.01-0.03``.
        rates: bucket-name glob -> rate or ``{first_epoch: rate}``; the first matching pattern wins, a bucket
            no pattern matches gets rate 1.
        skip_first, skip_last: frames dropped at each route's ends (as for full_pretrain).
    """
    mask = _skip_mask(catalog, skip_first, skip_last)
    keys = None
    for spec in group_by:
        spec = {"column": spec} if isinstance(spec, str) else dict(spec)
        values = _column_values(catalog, spec["column"], spec.get("bins"), bool(spec.get("absolute", False)))
        labelled = np.array([f"{spec['column']}={v}" for v in values], dtype=object)
        keys = labelled if keys is None else np.array([f"{a}/{b}" for a, b in zip(keys, labelled, strict=True)],
                                                     dtype=object)
    if keys is None:
        raise ValueError("group_by needs at least one column")
    rates = dict(rates or {})
    buckets = []
    for key in sorted(set(keys[mask])):
        rate = next((r for pattern, r in rates.items() if fnmatch.fnmatchcase(key, pattern)), 1.0)
        buckets.append(Bucket(key, _members(catalog, mask & (keys == key)), rate))
    routes, totals = _routes_and_totals(catalog, mask)
    params = {"name": name, "group_by": list(group_by), "rates": dict(rates), "skip_first": skip_first,
              "skip_last": skip_last, **extra}  # as given, so a stored collection compares equal to its spec
    return BucketCollection(name=name, buckets=buckets, builder="property", params=params, routes=routes,
                            totals=totals)


#: builder name -> function(catalog, **params) -> BucketCollection
BUILDERS: dict[str, Callable[..., BucketCollection]] = {"full": full_collection, "property": property_collection}

def build_collection(catalog: Catalog, builder: str, params: Mapping) -> BucketCollection:
    if builder not in BUILDERS:
        raise ValueError(f"unknown bucket builder {builder!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[builder](catalog, **params)


#: Keys a collection spec may carry besides its builder's parameters (LEAD's names for the posttrain file).
SPEC_EXTRAS = {"num_way_points_prediction", "waypoints_spacing", "description"}


def resolve_spec(spec: str | Mapping | Path) -> tuple[str, dict]:
    """``(builder, params)`` of a collection spec (`leadio.buckets.specs.read_spec`), checked against the
    builders: a known builder, known keys (with "did you mean"), the required ones present."""
    builder, params, source = read_spec(spec)
    if builder not in BUILDERS:
        raise ValueError(f"collection spec {source}: unknown builder {builder!r}; known: {sorted(BUILDERS)}")
    signature = inspect.signature(BUILDERS[builder]).parameters
    known = {k for k, p in signature.items() if p.kind == p.KEYWORD_ONLY} | SPEC_EXTRAS
    unknown = sorted(set(params) - known)
    if unknown:
        close = {k: difflib.get_close_matches(k, sorted(known), n=1) for k in unknown}
        hint = "; ".join(f"{k!r} (did you mean {v[0]!r}?)" if v else repr(k) for k, v in close.items())
        raise ValueError(f"collection spec {source}: unknown key(s) {hint}; valid keys: {sorted(known)}")
    required = sorted(k for k, p in signature.items() if p.kind == p.KEYWORD_ONLY and p.default is p.empty
                      and k not in params)
    if required:
        raise ValueError(f"collection spec {source}: missing key(s) {required}; e.g. \"name\": \"my_collection\"")
    return builder, params


def load_or_build(root: str | Path, collection: str | Mapping | Path = "full_pretrain", *,
                  force_rebuild: bool = False, workers: int = 1, progress: bool = False,
                  dataset_config: str | None = None, on_error: str = "raise") -> tuple[BucketCollection, Path]:
    """The collection for ``root``: reused from ``<root>/buckets/`` when current, else (re)built and saved.

    A stored collection is current when the trainable routes on disk (and their frame counts) equal those it
    was built from; otherwise the log says what was added, removed or changed, the catalog is brought up to
    date and the collection rebuilt.

    Args:
        root: dataset root.
        collection: a shipped name (``full_pretrain``, ``full_posttrain``), a JSON spec path, or a spec dict.
        force_rebuild: rebuild even when the stored file is current (LEAD's ``force_rebuild_bucket``).
        workers, progress, dataset_config: passed to the catalog scan when one is needed.
        on_error: ``"skip"`` leaves unreadable routes out (``--skip-bad-routes``), else they are errors.

    Returns:
        (collection, path of its bucket file).

    Raises:
        ReadOnlyRootError: the file is missing or stale and the root cannot be written (names the file, why
            it must be built and the command that builds it); a current file is read without writing anything.
    """
    root = Path(root)
    builder, params = resolve_spec(collection)
    path = root / "buckets" / bucket_file_name(params)
    why = "is to be rebuilt (force_rebuild)"
    if not force_rebuild:  # a current file is read without the lock: it is only ever replaced atomically
        stored, why = current_collection(root, builder, params, on_error=on_error)
        if stored is not None:
            return stored, path
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(file_lock(root / "buckets" / ".lock", f"bucket files of {root}"))
        except OSError as e:  # the first write under the root
            if e.errno not in READ_ONLY_ERRNOS:
                raise
            raise ReadOnlyRootError(
                f"bucket file {path} {why}, and it cannot be built here: {e.filename or root} cannot be written "
                f"({e.strerror}); build it where the dataset root is writable: `{build_command(root, collection)}`"
            ) from e
        remove_stale_temps(path)
        return _load_or_build(root, builder, params, path, force_rebuild, workers, progress, dataset_config,
                              on_error)


def _load_or_build(root: Path, builder: str, params: dict, path: Path, force_rebuild: bool, workers: int,
                   progress: bool, dataset_config: str | None, on_error: str) -> tuple[BucketCollection, Path]:
    if not force_rebuild:
        stored = load_current(root, builder, params, on_error=on_error)
        if stored is not None:
            return stored, path
        if path.exists():
            log.warning("rebuilding bucket file %s", path)
    report = build_catalog(root, workers=workers, progress=progress, dataset_config=dataset_config, on_error=on_error)
    if report.rewritten:
        log.info(report.summary())
    result = build_collection(load_catalog(root), builder, params)
    result.params = json.loads(json.dumps(params))  # the spec as given: what the next call compares against
    result.save(path)
    return result, path
