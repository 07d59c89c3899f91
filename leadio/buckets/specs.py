"""Collection specs and stored bucket files, read-only: what the reading side needs of buckets.

A spec is a shipped name (`SHIPPED`), the path of a JSON spec, or a dict; `read_spec` turns it into
``(builder, params)`` and `bucket_file_name` names its file under ``<root>/buckets/`` (LEAD's names).
`load_current` returns the stored collection when it is current (built with the same parameters from the
routes now on disk) and None otherwise; `current_collection` also says why not. Neither writes nor takes a
lock (bucket files are replaced atomically, so a reader sees the old file or the new one), so a read-only
dataset root can be trained on and reported on. Building a missing or stale collection is
`leadio.buckets.builders.load_or_build`; where the root cannot be written it raises `ReadOnlyRootError`, which
names the file and the command that builds it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

from leadio.buckets.collection import BucketCollection
from leadio.catalog_store import load_catalog
from leadio.format.routes import trainable_routes_on_disk

__all__ = ["SHIPPED", "ReadOnlyRootError", "bucket_file_name", "build_command", "collection_name",
           "current_collection", "load_current", "read_spec"]

log = logging.getLogger(__name__)

#: The shipped collections: name -> (builder, params). LEAD's post-training name encodes
#: num_way_points_prediction / skip_first / skip_last / waypoints_spacing.
SHIPPED: dict[str, tuple[str, dict]] = {
    "full_pretrain": ("full", {"name": "full_pretrain", "skip_first": 1, "skip_last": 1}),
    "full_posttrain": ("full", {"name": "full_posttrain", "skip_first": 8, "skip_last": 8,
                                "num_way_points_prediction": 8, "waypoints_spacing": 5}),
}
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]*")


class ReadOnlyRootError(OSError):
    """A bucket file must be (re)built but the dataset root cannot be written; says which file, why it must be
    built and the command that builds it where the root is writable."""


def build_command(root: str | Path, spec: str | Mapping | Path) -> str:
    """The command that builds the bucket file of ``spec`` under ``root``."""
    what = spec if isinstance(spec, str | Path) else "<a JSON file holding this spec>"
    return f"python -m leadio.buckets --root {root} --collection {what}"


def bucket_file_name(params: Mapping) -> str:
    """LEAD's file name for a collection."""
    if params["name"] == "full_posttrain":
        return (f"full_posttrain_buckets_{params['num_way_points_prediction']}_{params['skip_first']}_"
                f"{params['skip_last']}_{params['waypoints_spacing']}.gz")
    return f"{params['name']}_buckets.gz"


def read_spec(spec: str | Mapping | Path) -> tuple[str, dict, str]:
    """``(builder, params, source)`` of a spec; the name is checked, the builder's keys are not (that is
    `leadio.buckets.builders.resolve_spec`, which knows the builders).

    Raises:
        FileNotFoundError: a JSON spec path that does not exist.
        ValueError: an unknown name, unreadable JSON, or a name that is not a plain file name.
    """
    if isinstance(spec, Mapping):
        params, source = dict(spec), "(dict)"
    elif str(spec).endswith(".json"):
        try:
            with open(spec) as f:
                params = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"collection spec {spec} does not exist; pass a shipped name "
                                    f"({', '.join(SHIPPED)}) or the path of a JSON spec") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"collection spec {spec} is not valid JSON ({e}); see examples/collections/") from None
        if not isinstance(params, dict):
            raise ValueError(f"collection spec {spec} holds a {type(params).__name__}, expected a JSON object")
        source = str(spec)
    elif spec in SHIPPED:
        builder, params = SHIPPED[str(spec)]
        return builder, dict(params), str(spec)
    else:
        raise ValueError(f"unknown collection {spec!r}: expected one of {sorted(SHIPPED)}, a path to a JSON "
                         f"collection spec, or a spec dict (see leadio.buckets.builders.property_collection)")
    builder = params.pop("builder", "property")
    name = params.get("name")
    if name is not None and (not isinstance(name, str) or not _NAME.fullmatch(name)):
        raise ValueError(f"collection spec {source}: name {name!r} must be a plain file name (letters, digits, "
                         f"_.=+-; no '/' or leading '.'), as it names <root>/buckets/<name>_buckets.gz")
    return builder, params, source


def collection_name(spec: str | Mapping | Path | BucketCollection | None) -> str:
    """The name of the collection a spec (or a `BucketCollection`) describes; None means ``full_pretrain``."""
    if spec is None:
        return "full_pretrain"
    if isinstance(spec, BucketCollection):
        return spec.name
    _, params, source = read_spec(spec)
    if "name" not in params:
        raise ValueError(f"collection spec {source}: missing key(s) ['name']; e.g. \"name\": \"my_collection\"")
    return params["name"]


def routes_on_disk(root: Path, on_error: str = "raise") -> dict[str, int]:
    """Trainable routes now on disk (rel_path -> frames), less those the last catalog scan skipped as unreadable
    when ``on_error="skip"`` (they are not "added" routes)."""
    on_disk = trainable_routes_on_disk(root, on_error)
    if on_error == "skip" and (root / "catalog.zarr" / "zarr.json").exists():
        try:
            for route in load_catalog(root).attrs.get("skipped_routes") or {}:
                on_disk.pop(route, None)
        except (OSError, ValueError):
            pass
    return on_disk


def current_collection(root: str | Path, builder: str, params: Mapping, *, on_error: str = "raise"
                       ) -> tuple[BucketCollection | None, str]:
    """``(the stored collection, "")`` when the file under ``<root>/buckets/`` is current, else ``(None, why
    not)``: ``"does not exist"``, ``"is stale, routes changed since it was built: ..."`` or ``"was built with
    other parameters"``.

    Current: the file exists, was built by ``builder`` with ``params``, from the trainable routes (and frame
    counts) now on disk. Reads only: no write, no lock.
    """
    root = Path(root)
    path = root / "buckets" / bucket_file_name(params)
    if not path.exists():
        return None, "does not exist"
    stored = BucketCollection.load(path)
    changes = stored.changes_since_build(routes_on_disk(root, on_error))
    if changes:
        return None, f"is stale, routes changed since it was built: {changes.describe()}"
    if stored.builder != builder or stored.params != json.loads(json.dumps(dict(params))):
        return None, "was built with other parameters"
    return stored, ""


def load_current(root: str | Path, builder: str, params: Mapping, *, on_error: str = "raise"
                 ) -> BucketCollection | None:
    """The stored collection under ``<root>/buckets/`` when it is current, else None (logging why, when the
    file exists). Reads only (see `current_collection`)."""
    stored, why = current_collection(root, builder, params, on_error=on_error)
    if stored is None and why != "does not exist":
        log.warning("bucket file %s %s", Path(root) / "buckets" / bucket_file_name(params), why)
    return stored
