"""Build a shard set: assign samples to shards, write shards in parallel (resumable), merge catalog + manifest.

Layout of a set (``<root>/shards/<collection>-<pipeline hash>/``)::

    assignment.json            which samples go to which shard (written first; every part computes the same)
    <bucket>/000000.tar        the samples, in bucket order (route, then frame)
    <bucket>/000000.idx        DALI's index (wds2idx format v1.2)
    <bucket>/000000.json       sidecar: count, bytes, xxh3-128, per-sample hash and per-member offsets
    catalog.zarr/              catalog rows of the set + shard, offsets and sizes of every member
    manifest.json              pipeline version + hash, collection, routes, buckets, shards (written last)

Crash safety: a shard is written under a hidden temp name; its index and sidecar are written next, and the
tar is renamed into place last. A shard is *complete* when its tar, index and sidecar agree: the sidecar
lists the shard's keys, the tar has the recorded size and xxh3-128 (the whole tar is hashed: a damaged shard
is rewritten, not trusted by its size), the index is the one the sidecar implies, and every sample's source
digest (`leadio.stamps`: the content of the raw files it was made from, recorded at build time) equals the
files' digest now, so a raw file edited or repaired since is rebuilt, whatever its size. A rerun redoes
exactly the shards that are not complete; tar bytes are deterministic, so the result equals a clean build of
the current raw files. Work is split by shard (each a run of consecutive frames), which keeps per-shard
reads sequential; ``--part i/N`` takes shards i, i+N, ... for SLURM arrays.

Concurrency: a build takes ``<set>/.build.lock`` (an flock: released by the kernel when its holder dies), a
whole build and a merge exclusively, a ``--part`` build shared plus its own part's lock exclusively. A second
build of the same set waits for the first (saying so), then finds its shards complete. Under the exclusive
lock, temp files that killed builds left behind are removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import signal
import time
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from leadio._pool import process_pool
from leadio.buckets.builders import load_or_build
from leadio.buckets.collection import Bucket, BucketCollection
from leadio.catalog import build_catalog
from leadio.catalog_store import CATALOG_VERSION, Catalog, load_catalog, write_catalog
from leadio.files import atomic_write_bytes, file_lock, remove_stale_temps
from leadio.format.config import DatasetConfig, dataset_config_for_root
from leadio.format.errors import FrameReadError, RouteError
from leadio.schema import PIPELINE_VERSION, pipeline_hash, pipeline_params
from leadio.shard.jobs import (
    DEFAULT_SHARD_SIZE,
    ShardJob,
    check_shard_task,
    jobs_of,
    plan_shards,
    sample_key,
    shard_is_complete,
    shard_set_dir,
    sidecar_path,
    write_shard_task,
)
from leadio.stamps import route_fingerprints

__all__ = ["BuildReport", "ShardJob", "build_shard_set", "merge_shard_set", "plan_shards", "sample_key",
           "shard_set_dir"]

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "leadio-shard-set"
MANIFEST_VERSION = 2  # 2: per-member hashes (member_xxh3_64) and per-sample source digests
LOCK_NAME = ".build.lock"


@dataclass
class BuildReport:
    set_dir: Path
    shards_total: int
    shards_written: int
    shards_skipped: int
    samples_written: int
    bytes_written: int
    seconds: float
    workers: int
    merged: bool
    rewritten: dict[str, str] = field(default_factory=dict)  # shard path -> why a shard on disk was redone
    skipped_routes: dict[str, str] = field(default_factory=dict)  # left out while writing shards
    catalog_skipped: dict[str, str] = field(default_factory=dict)  # left out by the catalog scan
    merge_current: bool = False  # the set's catalog and manifest were already current: nothing was rewritten

    def summary(self) -> str:
        if self.merged and self.merge_current and not self.shards_written:
            s = (f"shard set {self.set_dir}: up to date, nothing rewritten (0 shards written; {self.shards_skipped} "
                 f"of {self.shards_total} already complete; catalog and manifest current)")
            return s + self._skips()
        rate = self.samples_written / self.seconds if self.seconds > 0 else 0.0
        mbs = self.bytes_written / 1e6 / self.seconds if self.seconds > 0 else 0.0
        s = (f"shard set {self.set_dir}: wrote {self.shards_written} shards ({self.samples_written} samples, "
             f"{self.bytes_written / 1e6:.1f} MB) in {self.seconds:.1f}s with {self.workers} workers "
             f"({rate:.1f} samples/s, {mbs:.1f} MB/s); {self.shards_skipped} of {self.shards_total} already "
             f"complete")
        if self.rewritten:
            first = next(iter(self.rewritten.items()))
            s += f"; {len(self.rewritten)} redone (first: {first[0]} {first[1]})"
        s += self._skips()
        if not self.merged:
            return s + "; not merged (run --merge)"
        return s + ("; catalog and manifest current" if self.merge_current else "; catalog and manifest written")

    def _skips(self) -> str:
        s = ""
        if self.skipped_routes:
            s += f"; SKIPPED {len(self.skipped_routes)} bad routes (--skip-bad-routes): " + "; ".join(
                self.skipped_routes.values())
        if self.catalog_skipped:
            s += (f"; the catalog scan SKIPPED {len(self.catalog_skipped)} more (--skip-bad-routes): "
                  + "; ".join(self.catalog_skipped.values()))
        return s


def _parse_part(part: str | None) -> tuple[int, int]:
    if part is None:
        return 0, 1
    m = re.fullmatch(r"(\d+)/(\d+)", part)
    if not m or not int(m[1]) < int(m[2]):
        raise ValueError(f"--part must be i/N with 0 <= i < N, counting from 0 (the parts of 4 are 0/4 .. 3/4), "
                         f"got {part!r}")
    return int(m[1]), int(m[2])


def _without_routes(coll: BucketCollection, bad: dict[str, str]) -> BucketCollection:
    """``coll`` with the routes in ``bad`` left out (their frames and their entry in ``routes``)."""
    if not bad:
        return coll
    buckets = [Bucket(b.name, {r: f for r, f in b.members.items() if r not in bad}, b.rate) for b in coll.buckets]
    return BucketCollection(coll.name, buckets, coll.builder, coll.params,
                            {r: n for r, n in coll.routes.items() if r not in bad}, coll.totals)


@contextlib.contextmanager
def _build_lock(set_dir: Path, part: tuple[int, int] | None) -> None:
    """The set's build lock (see the module docstring); removes killed builds' temps it is entitled to."""
    what = f"shard set {set_dir}"
    if part is None:
        with file_lock(set_dir / LOCK_NAME, f"{what} (another build or merge)"):
            for stale in [p for p in set_dir.rglob(".*.tmp-*") if p.parent.name != "catalog.zarr"]:
                remove_stale_temps(stale.parent / stale.name.split(".tmp-")[0][1:])
            yield
    else:
        i, n = part
        with file_lock(set_dir / LOCK_NAME, f"{what} (a whole build or merge)", shared=True), \
                file_lock(set_dir / f".part-{i}-of-{n}.lock", f"part {i}/{n} of {what}"):
            yield


def _previous_samples_per_shard(set_dir: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return int(json.loads((set_dir / "assignment.json").read_text())["samples_per_shard"])
    return None


def build_shard_set(root: str | Path, collection: str = "full_pretrain", *, workers: int = 1,
                    shard_size: int | None = None, samples_per_shard: int | None = None,
                    part: str | None = None, merge: bool | None = None, progress: bool = True,
                    dataset_config: str | None = None, on_error: str = "raise") -> BuildReport:
    """Write (or finish, or repair) the shard set of ``collection`` under ``<root>/shards/``.

    Args:
        root: dataset root.
        collection: bucket collection (shipped name or JSON spec path), built/refreshed as needed.
        workers: processes writing shards in parallel.
        shard_size: target bytes per shard (ignored when ``samples_per_shard`` is given). When neither is given,
            an existing set keeps its shard size (a rerun never re-cuts a set silently), a new one gets 256 MiB.
        samples_per_shard: fixed samples per shard.
        part: ``"i/N"``: write only shards i, i+N, ... (cluster mode); merging is then left to ``--merge``.
        merge: write catalog + manifest after writing (default: True unless ``part`` is given).
        progress: show a progress bar.
        dataset_config: explicit dataset config name (default: from the root's path).
        on_error: ``"raise"`` stops at the first unreadable route; ``"skip"`` leaves such routes out of the set
            (catalog scan and shard writing alike), names them in the report and in the manifest.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    t0 = time.perf_counter()
    root = Path(root)
    i, n = _parse_part(part)
    config = dataset_config_for_root(root, dataset_config)
    merge = (part is None) if merge is None else merge
    scan = build_catalog(root, workers=workers, on_error=on_error, progress=False, dataset_config=config.name)
    coll, bucket_file = load_or_build(root, collection, workers=workers, dataset_config=config.name,
                                      on_error=on_error)
    set_dir = shard_set_dir(root, coll.name, config)
    if samples_per_shard is None and shard_size is None:
        samples_per_shard = _previous_samples_per_shard(set_dir)
        if samples_per_shard is not None:
            log.info("%s exists: keeping its %d samples per shard (pass --shard-size or --samples-per-shard to "
                     "re-cut it)", set_dir, samples_per_shard)
    shard_size = DEFAULT_SHARD_SIZE if shard_size is None else shard_size
    skipped: dict[str, str] = {}
    set_dir.mkdir(parents=True, exist_ok=True)
    with _build_lock(set_dir, None if part is None else (i, n)):
        while True:  # a route found bad while planning or writing is left out (--skip-bad-routes) and we replan
            try:
                jobs, todo, rewritten, samples, bytes_ = _plan_and_write(
                    root, _without_routes(coll, skipped), config, set_dir, (i, n), workers, progress, t0,
                    shard_size=shard_size, samples_per_shard=samples_per_shard,
                    extra={"pipeline_hash": pipeline_hash(config),
                           "bucket_file": bucket_file.relative_to(root).as_posix(), "skipped_routes": skipped})
                break
            except (FrameReadError, RouteError) as e:  # every reader's error names its route
                route = Path(e.route).relative_to(root).as_posix() if Path(e.route).is_absolute() else e.route
                if on_error != "skip" or route in skipped or route not in coll.routes:
                    raise
                skipped[route] = str(e)
                log.warning("skipping route %s (--skip-bad-routes): %s", route, e)
    current = False
    if merge:
        current = _merge_locked(root, set_dir, config, part is None)[1]
    return BuildReport(set_dir, len(jobs), len(todo), len(jobs) - len(todo), samples, bytes_,
                       time.perf_counter() - t0, workers, merge, rewritten, skipped, scan.routes_skipped, current)


def _plan_and_write(root: Path, coll: BucketCollection, config: DatasetConfig, set_dir: Path, part: tuple[int, int],
                    workers: int, progress: bool, t0: float, *, shard_size: int, samples_per_shard: int | None,
                    extra: dict) -> tuple[list[ShardJob], list[ShardJob], dict[str, str], int, int]:
    """Assign ``coll``'s samples to shards, check the shards of this part on disk and write those that are not
    complete: (jobs, jobs written, why shards on disk were redone, samples and bytes written)."""
    i, n = part
    assignment = {**plan_shards(root, coll, config, shard_size, samples_per_shard), **extra}
    _write_if_changed(set_dir / "assignment.json", json.dumps(assignment, indent=1).encode())
    jobs = [j for j in jobs_of(assignment) if j.index % n == i]
    checks = [(str(set_dir), str(root), j) for j in jobs]
    if workers > 1 and len(jobs) > 1:
        with _pool(workers) as pool:
            problems = list(pool.map(check_shard_task, checks, chunksize=max(1, len(jobs) // (4 * workers))))
    else:
        problems = [check_shard_task(c) for c in checks]
    todo = [j for j, p in zip(jobs, problems, strict=True) if p is not None]
    rewritten = {j.path: p for j, p in zip(jobs, problems, strict=True) if p not in (None, "not written")}
    for path, why in rewritten.items():
        log.warning("shard %s %s: rewriting it", set_dir / path, why)
    samples, bytes_ = _write_jobs(root, config, set_dir, todo, workers, progress, coll.name, t0)
    return jobs, todo, rewritten, samples, bytes_


def _pool(workers: int):
    """A process pool whose workers ignore Ctrl-C: the main process alone stops, says so once, and waits for
    them (each finishes its shard, which is kept: the rerun resumes from there)."""
    return process_pool(workers, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` atomically unless ``path`` already holds exactly it; whether it was written."""
    with contextlib.suppress(OSError):
        if path.read_bytes() == data:
            return False
    atomic_write_bytes(path, data)
    return True


def _write_jobs(root: Path, config: DatasetConfig, set_dir: Path, todo: list[ShardJob], workers: int,
                progress: bool, name: str, t0: float) -> tuple[int, int]:
    samples = bytes_ = 0
    bar = tqdm(total=sum(len(j.frames) for j in todo), desc=f"shards {name}", unit="sample",
               disable=not progress or not todo, smoothing=0.1)
    args = [(str(root), config.name, str(set_dir), j) for j in todo]
    try:
        if workers > 1 and len(todo) > 1:
            with _pool(workers) as pool:
                futures = [pool.submit(write_shard_task, a) for a in args]
                try:
                    for fut in as_completed(futures):
                        _, count, size = fut.result()
                        samples, bytes_ = samples + count, bytes_ + size
                        bar.update(count)
                        bar.set_postfix(MB_s=f"{bytes_ / 1e6 / (time.perf_counter() - t0):.1f}", refresh=False)
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
        else:
            for a in args:
                _, count, size = write_shard_task(a)
                samples, bytes_ = samples + count, bytes_ + size
                bar.update(count)
                bar.set_postfix(MB_s=f"{bytes_ / 1e6 / (time.perf_counter() - t0):.1f}", refresh=False)
    finally:
        bar.close()
    return samples, bytes_


def _remove_orphans(set_dir: Path, jobs: list[ShardJob]) -> int:
    """Delete shards (and their index/sidecar) left by an earlier build with another assignment."""
    wanted = {Path(j.path).with_suffix("").as_posix() for j in jobs}
    removed = 0
    for d in {Path(j.path).parent for j in jobs}:
        for f in (set_dir / d).iterdir():
            if f.suffix in (".tar", ".idx", ".json") and (d / f.stem).as_posix() not in wanted:
                f.unlink()
                removed += f.suffix == ".tar"
    if removed:
        log.warning("%s: removed %d shards of an earlier build with another assignment", set_dir, removed)
    return removed


def merge_shard_set(root: str | Path, set_dir: str | Path, config: DatasetConfig | None = None,
                    _verified: bool = False) -> Path:
    """Write the set's catalog and manifest from the shards' sidecars (every shard must be complete); either one
    that already holds exactly that is left as it is, so a rerun with nothing to do writes nothing.

    Raises:
        ValueError: shards are missing (names how many and which parts must still run).
    """
    return _merge_locked(root, set_dir, config, _verified)[0]


def _merge_locked(root: str | Path, set_dir: str | Path, config: DatasetConfig | None,
                  verified: bool) -> tuple[Path, bool]:
    """`merge_shard_set` under the set's lock: (manifest path, whether catalog and manifest were already current)."""
    root, set_dir = Path(root), Path(set_dir)
    config = config or dataset_config_for_root(root)
    with file_lock(set_dir / LOCK_NAME, f"shard set {set_dir} (a build or merge)"):
        for name in ("manifest.json", "catalog.zarr"):
            remove_stale_temps(set_dir / name)
        return _merge(root, set_dir, config, verified)


def _merge(root: Path, set_dir: Path, config: DatasetConfig, verified: bool) -> tuple[Path, bool]:
    if not (set_dir / "assignment.json").exists():
        raise FileNotFoundError(f"cannot merge {set_dir}: it has no assignment.json, so no part of it was written; "
                                f"run the --part i/N builds first (or build without --part)")
    assignment = json.loads((set_dir / "assignment.json").read_text())
    jobs = jobs_of(assignment)
    missing = [] if verified else [j for j in jobs if not shard_is_complete(set_dir, j)]
    if missing:
        raise ValueError(f"cannot merge {set_dir}: {len(missing)} of {len(jobs)} shards are not complete "
                         f"(first: {missing[0].path}); run the parts that write them (shard k belongs to "
                         f"--part k%N/N) or rerun without --part")
    sidecars = [json.loads(sidecar_path(set_dir, j).read_text()) for j in jobs]
    _remove_orphans(set_dir, jobs)
    base = load_catalog(root)
    index = {(str(r), int(f)): k for k, (r, f) in enumerate(zip(base["route"], base["frame"], strict=True))}
    rows = np.array([index[(r, f)] for j in jobs for r, f in zip(j.routes, j.frames, strict=True)], np.int64)
    columns = {k: v[rows] for k, v in base.columns.items()}
    columns["bucket"] = np.array([j.bucket for j in jobs for _ in j.frames], np.int16)
    columns["shard"] = np.array([j.index for j in jobs for _ in j.frames], np.int32)
    columns["sample_key"] = np.array([k for s in sidecars for k in s["keys"]], dtype=object)
    columns["sample_xxh3_64"] = np.array([h for s in sidecars for h in s["sample_xxh3_64"]], dtype=object)
    columns["member_offset"] = np.array([o for s in sidecars for o in s["offsets"]], np.int64)
    columns["member_size"] = np.array([z for s in sidecars for z in s["sizes"]], np.int32)
    columns["member_xxh3_64"] = np.array([h for s in sidecars for h in s["member_xxh3_64"]], np.uint64)
    routes = sorted(set(columns["route"]))
    fingerprints = route_fingerprints(columns["route"], [d for s in sidecars for d in s["sources"]])
    route_rows: dict[str, list[int]] = {}
    for k, r in enumerate(columns["route"]):
        route_rows.setdefault(str(r), []).append(k)
    route_table = {
        "rel_path": np.array(routes, dtype=object),
        "num_frames": np.array([len(route_rows[r]) for r in routes], np.int32),
        "fingerprint": np.array([fingerprints[r] for r in routes], dtype=object),
    }
    members = sidecars[0]["members"]
    attrs = {"format": "leadio-catalog", "version": CATALOG_VERSION, "kind": "shard-set", "members": members,
             "dataset_config": config.name, "num_rows": len(rows)}
    catalog = Catalog(columns, route_table, attrs)
    catalog_current = _catalog_holds(set_dir / "catalog.zarr", catalog)
    if not catalog_current:
        write_catalog(set_dir / "catalog.zarr", catalog)
    skipped = assignment.get("skipped_routes", {})
    skipped.update(base.attrs.get("skipped_routes") or {})
    coll = _without_routes(BucketCollection.load(root / assignment["bucket_file"]), skipped)
    manifest = {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
        "pipeline": {"version": PIPELINE_VERSION, "hash": pipeline_hash(config), "params": pipeline_params(config)},
        "dataset_config": config.name,
        "collection": {"name": coll.name, "builder": coll.builder, "params": coll.params,
                       "routes": coll.routes},
        "collection_buckets": coll.to_json(),
        "routes": fingerprints,
        "skipped_routes": skipped,
        "members": members,
        "samples_per_shard": assignment["samples_per_shard"],
        "num_samples": int(len(rows)),
        "buckets": [{"name": name, "dir": d, "samples": int(sum(s["samples"] for s in sidecars if s["bucket"] == b)),
                     "shards": [s["path"] for s in sidecars if s["bucket"] == b]}
                    for b, (name, d) in enumerate(zip(assignment["bucket_names"], assignment["bucket_dirs"],
                                                      strict=True))],
        "shards": [{"path": s["path"], "index": s["path"].removesuffix(".tar") + ".idx", "bucket": s["bucket"],
                    "samples": s["samples"], "bytes": s["bytes"], "xxh3_128": s["xxh3_128"]} for s in sidecars],
    }
    catalog_dir = set_dir / "catalog.zarr"
    manifest["catalog_files"] = sorted(p.relative_to(catalog_dir).as_posix() for p in catalog_dir.rglob("*")
                                       if p.is_file())  # lets a remote reader fetch the catalog without listing
    written = _write_if_changed(set_dir / "manifest.json", json.dumps(manifest, indent=1).encode())
    return set_dir / "manifest.json", catalog_current and not written


def _catalog_holds(path: Path, catalog: Catalog) -> bool:
    """Whether the catalog at ``path`` is readable and holds exactly ``catalog``'s columns, routes and attributes
    (then a merge leaves it as it is)."""
    try:
        old = load_catalog(path)
    except (OSError, ValueError):
        return False

    def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
        return a.keys() == b.keys() and all(
            np.shape(a[k]) == np.shape(b[k]) and np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f")
            for k in a)

    return (same(old.columns, catalog.columns) and same(old.routes, catalog.routes)
            and all(old.attrs.get(k) == v for k, v in catalog.attrs.items()))
