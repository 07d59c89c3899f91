"""Build a shard set: assign samples to shards, write shards in parallel (resumable), merge catalog + manifest.

Layout of a set (``<root>/shards/<collection>-<pipeline hash>/``)::

    assignment.json            which samples go to which shard (written first; every part computes the same)
    <bucket>/000000.tar        the samples, in bucket order (route, then frame)
    <bucket>/000000.idx        DALI's index (wds2idx format v1.2)
    <bucket>/000000.json       sidecar: count, bytes, xxh3-128, per-sample hash and per-member offsets
    catalog.zarr/              catalog rows of the set + shard, offsets and sizes of every member
    manifest.json              pipeline version + hash, collection, routes, buckets, shards (written last)

Crash safety: a shard is written under a hidden temp name; its index and sidecar are written next, and the
tar is renamed into place last, so "the tar exists and its sidecar lists the shard's keys and size" means
"complete". A rerun redoes exactly the shards that are not complete; tar bytes are deterministic, so the
result equals an uninterrupted build. Work is split by shard (each a run of consecutive frames), which keeps
per-shard reads sequential; ``--part i/N`` takes shards i, i+N, ... for SLURM arrays.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from leadio._io import atomic_write_bytes, temp_sibling
from leadio._pool import process_pool
from leadio.buckets import BucketCollection, load_or_build
from leadio.catalog import Catalog, load_catalog, route_fingerprint, write_catalog
from leadio.format import DatasetConfig, dataset_config_for_root
from leadio.preprocess import PIPELINE_VERSION, pipeline_hash, pipeline_params, preprocess_frame
from leadio.shard.tarwriter import ShardTarWriter, dali_index_text

__all__ = ["BuildReport", "ShardJob", "build_shard_set", "merge_shard_set", "plan_shards", "sample_key",
           "shard_set_dir"]

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "leadio-shard-set"
MANIFEST_VERSION = 1
DEFAULT_SHARD_SIZE = 256 * 1024**2


@dataclass(frozen=True)
class ShardJob:
    """One shard to write: its global index, bucket, path (relative to the set) and samples."""

    index: int
    bucket: int
    path: str
    routes: tuple[str, ...]
    frames: tuple[int, ...]

    @property
    def keys(self) -> list[str]:
        return [sample_key(r, f) for r, f in zip(self.routes, self.frames, strict=True)]


def sample_key(route: str, frame: int) -> str:
    """``data/<Scenario>/<Route>`` + frame -> ``<Scenario>/<Route>/NNNN`` (dots replaced: WebDataset splits there)."""
    return f"{route.removeprefix('data/').replace('.', '_')}/{frame:04d}"


def shard_set_dir(root: str | Path, collection_name: str, config: DatasetConfig) -> Path:
    return Path(root) / "shards" / f"{collection_name}-{pipeline_hash(config)}"


def _bucket_dirs(names: list[str]) -> list[str]:
    out, seen = [], set()
    for i, name in enumerate(names):
        d = re.sub(r"[^A-Za-z0-9_.=+-]", "_", name.replace("/", "+").replace("<", "lt").replace(">=", "ge"))
        if d in seen or d.startswith("."):
            d = f"{i:03d}_{d.lstrip('.')}"
        seen.add(d)
        out.append(d)
    return out


def _stored_size(members: dict[str, bytes]) -> int:
    """Bytes the members take in a tar (a 512-byte header each, data padded to 512)."""
    return sum(512 + -(-len(v) // 512) * 512 for v in members.values())


def _sample_members(root: Path, route: str, frame: int, config: DatasetConfig) -> list[tuple[str, bytes]]:
    members = preprocess_frame(root / route, frame, config)
    info = json.dumps({"route": route, "frame": frame}, separators=(",", ":")).encode()
    return [*members.items(), ("json", info)]


def plan_shards(root: Path, collection: BucketCollection, config: DatasetConfig,
                shard_size: int = DEFAULT_SHARD_SIZE, samples_per_shard: int | None = None) -> dict:
    """Assign every sample of ``collection`` to a shard: a pure function of the data and the arguments.

    A frame in several buckets is stored once, in the first. Shard capacity is ``samples_per_shard`` or
    ``shard_size`` divided by the stored size of the collection's first sample (deterministic).
    """
    seen: set[tuple[str, int]] = set()
    per_bucket: list[list[tuple[str, int]]] = []
    for bucket in collection.buckets:
        frames = [rf for rf in bucket.frames() if rf not in seen]
        seen.update(frames)
        per_bucket.append(frames)
    if not seen:
        raise ValueError(f"collection {collection.name!r} has no frames to shard")
    if samples_per_shard is None:
        first = next(f for fs in per_bucket for f in fs)
        est = _stored_size(dict(_sample_members(root, first[0], first[1], config)))
        samples_per_shard = max(1, shard_size // est)
    dirs = _bucket_dirs([b.name for b in collection.buckets])
    shards = []
    for b, frames in enumerate(per_bucket):
        for i, start in enumerate(range(0, len(frames), samples_per_shard)):
            chunk = frames[start:start + samples_per_shard]
            shards.append({"index": len(shards), "bucket": b, "path": f"{dirs[b]}/{i:06d}.tar",
                           "routes": [r for r, _ in chunk], "frames": [f for _, f in chunk]})
    return {"collection": collection.name, "samples_per_shard": samples_per_shard, "bucket_dirs": dirs,
            "bucket_names": [b.name for b in collection.buckets], "shards": shards}


def _jobs(assignment: dict) -> list[ShardJob]:
    return [ShardJob(s["index"], s["bucket"], s["path"], tuple(s["routes"]), tuple(s["frames"]))
            for s in assignment["shards"]]


def _sidecar_path(set_dir: Path, job: ShardJob) -> Path:
    return (set_dir / job.path).with_suffix(".json")


def shard_is_complete(set_dir: Path, job: ShardJob) -> bool:
    """The tar is in place and its sidecar describes exactly this job's samples and the tar's size."""
    tar, side = set_dir / job.path, _sidecar_path(set_dir, job)
    if not (tar.exists() and side.exists() and tar.with_suffix(".idx").exists()):
        return False
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return meta.get("keys") == job.keys and meta.get("bytes") == tar.stat().st_size


def write_shard(root: Path, config: DatasetConfig, set_dir: Path, job: ShardJob) -> dict:
    """Preprocess a job's frames into its tar, index and sidecar (tar renamed into place last)."""
    final = set_dir / job.path
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final)
    try:
        with open(tmp, "wb") as f:
            writer = ShardTarWriter(f)
            for route, frame in zip(job.routes, job.frames, strict=True):
                writer.add_sample(sample_key(route, frame), _sample_members(root, route, frame, config))
            size, digest = writer.close()
            f.flush()
            os.fsync(f.fileno())
        sidecar = {
            "path": job.path, "bucket": job.bucket, "samples": len(writer.samples), "bytes": size,
            "xxh3_128": digest, "keys": [k for k, _, _ in writer.samples],
            "sample_xxh3_64": [h for _, _, h in writer.samples],
            "members": [s for s, _, _ in writer.samples[0][1]],
            "offsets": [[o for _, o, _ in e] for _, e, _ in writer.samples],
            "sizes": [[n for _, _, n in e] for _, e, _ in writer.samples],
        }
        atomic_write_bytes(final.with_suffix(".idx"), dali_index_text(writer.samples).encode())
        atomic_write_bytes(_sidecar_path(set_dir, job), json.dumps(sidecar).encode())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return sidecar


def _write_shard_task(args: tuple[str, str, str, ShardJob]) -> tuple[int, int, int]:
    root, config_name, set_dir, job = args
    from leadio.format import DATASET_CONFIGS

    sidecar = write_shard(Path(root), DATASET_CONFIGS[config_name], Path(set_dir), job)
    return job.index, sidecar["samples"], sidecar["bytes"]


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

    def summary(self) -> str:
        rate = self.samples_written / self.seconds if self.seconds > 0 else 0.0
        mbs = self.bytes_written / 1e6 / self.seconds if self.seconds > 0 else 0.0
        s = (f"shard set {self.set_dir}: wrote {self.shards_written} shards ({self.samples_written} samples, "
             f"{self.bytes_written / 1e6:.1f} MB) in {self.seconds:.1f}s with {self.workers} workers "
             f"({rate:.1f} samples/s, {mbs:.1f} MB/s); {self.shards_skipped} of {self.shards_total} already "
             f"complete")
        return s + ("; catalog and manifest written" if self.merged else "; not merged (run --merge)")


def _parse_part(part: str | None) -> tuple[int, int]:
    if part is None:
        return 0, 1
    m = re.fullmatch(r"(\d+)/(\d+)", part)
    if not m or not int(m[1]) < int(m[2]):
        raise ValueError(f"--part must be i/N with 0 <= i < N, counting from 0 (the parts of 4 are 0/4 .. 3/4), "
                         f"got {part!r}")
    return int(m[1]), int(m[2])


def build_shard_set(root: str | Path, collection: str = "full_pretrain", *, workers: int = 1,
                    shard_size: int = DEFAULT_SHARD_SIZE, samples_per_shard: int | None = None,
                    part: str | None = None, merge: bool | None = None, progress: bool = True,
                    dataset_config: str | None = None) -> BuildReport:
    """Write (or finish) the shard set of ``collection`` under ``<root>/shards/``.

    Args:
        root: dataset root.
        collection: bucket collection (shipped name or JSON spec path), built/refreshed as needed.
        workers: processes writing shards in parallel.
        shard_size: target bytes per shard (ignored when ``samples_per_shard`` is given).
        part: ``"i/N"``: write only shards i, i+N, ... (cluster mode); merging is then left to ``--merge``.
        merge: write catalog + manifest after writing (default: True unless ``part`` is given).
        progress: show a progress bar.
        dataset_config: explicit dataset config name (default: from the root's path).
    """
    t0 = time.perf_counter()
    root = Path(root)
    i, n = _parse_part(part)
    config = dataset_config_for_root(root, dataset_config)
    merge = (part is None) if merge is None else merge
    coll, bucket_file = load_or_build(root, collection, workers=workers, dataset_config=config.name)
    set_dir = shard_set_dir(root, coll.name, config)
    assignment = plan_shards(root, coll, config, shard_size, samples_per_shard)
    assignment["pipeline_hash"] = pipeline_hash(config)
    assignment["bucket_file"] = bucket_file.relative_to(root).as_posix()
    set_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(set_dir / "assignment.json", json.dumps(assignment, indent=1).encode())
    jobs = [j for j in _jobs(assignment) if j.index % n == i]
    todo = [j for j in jobs if not shard_is_complete(set_dir, j)]
    for j in todo:  # leftovers of a killed run of this part
        for stale in (set_dir / j.path).parent.glob(f".{Path(j.path).name}.tmp-*"):
            stale.unlink(missing_ok=True)
    samples = bytes_ = 0
    bar = tqdm(total=sum(len(j.frames) for j in todo), desc=f"shards {coll.name}", unit="sample",
               disable=not progress or not todo, smoothing=0.1)
    args = [(str(root), config.name, str(set_dir), j) for j in todo]
    try:
        if workers > 1 and len(todo) > 1:
            with process_pool(workers) as pool:
                futures = [pool.submit(_write_shard_task, a) for a in args]
                for fut in as_completed(futures):
                    _, count, size = fut.result()
                    samples, bytes_ = samples + count, bytes_ + size
                    bar.update(count)
                    bar.set_postfix(MB_s=f"{bytes_ / 1e6 / (time.perf_counter() - t0):.1f}", refresh=False)
        else:
            for a in args:
                _, count, size = _write_shard_task(a)
                samples, bytes_ = samples + count, bytes_ + size
                bar.update(count)
                bar.set_postfix(MB_s=f"{bytes_ / 1e6 / (time.perf_counter() - t0):.1f}", refresh=False)
    finally:
        bar.close()
    if merge:
        merge_shard_set(root, set_dir, config)
    return BuildReport(set_dir, len(jobs), len(todo), len(jobs) - len(todo), samples, bytes_,
                       time.perf_counter() - t0, workers, merge)


def _remove_orphans(set_dir: Path, jobs: list[ShardJob]) -> None:
    """Delete shards (and their index/sidecar) left by an earlier build with another assignment."""
    wanted = {Path(j.path).with_suffix("").as_posix() for j in jobs}
    for d in {Path(j.path).parent for j in jobs}:
        for f in (set_dir / d).iterdir():
            if f.suffix in (".tar", ".idx", ".json") and (d / f.stem).as_posix() not in wanted:
                f.unlink()


def merge_shard_set(root: str | Path, set_dir: str | Path, config: DatasetConfig | None = None) -> Path:
    """Write the set's catalog and manifest from the shards' sidecars (every shard must be complete).

    Raises:
        ValueError: shards are missing (names how many and which parts must still run).
    """
    root, set_dir = Path(root), Path(set_dir)
    config = config or dataset_config_for_root(root)
    if not (set_dir / "assignment.json").exists():
        raise FileNotFoundError(f"cannot merge {set_dir}: it has no assignment.json, so no part of it was written; "
                                f"run the --part i/N builds first (or build without --part)")
    assignment = json.loads((set_dir / "assignment.json").read_text())
    jobs = _jobs(assignment)
    missing = [j for j in jobs if not shard_is_complete(set_dir, j)]
    if missing:
        raise ValueError(f"cannot merge {set_dir}: {len(missing)} of {len(jobs)} shards are not complete "
                         f"(first: {missing[0].path}); run the parts that write them (shard k belongs to "
                         f"--part k%N/N) or rerun without --part")
    sidecars = [json.loads(_sidecar_path(set_dir, j).read_text()) for j in jobs]
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
    routes = sorted(set(columns["route"]))
    fingerprints = {r: route_fingerprint(root / r) for r in routes}
    route_rows: dict[str, list[int]] = {}
    for k, r in enumerate(columns["route"]):
        route_rows.setdefault(str(r), []).append(k)
    route_table = {
        "rel_path": np.array(routes, dtype=object),
        "num_frames": np.array([len(route_rows[r]) for r in routes], np.int32),
        "fingerprint": np.array([fingerprints[r] for r in routes], dtype=object),
    }
    members = sidecars[0]["members"]
    attrs = {"format": "leadio-catalog", "version": 1, "kind": "shard-set", "members": members,
             "dataset_config": config.name, "num_rows": len(rows)}
    write_catalog(set_dir / "catalog.zarr", Catalog(columns, route_table, attrs))
    coll = BucketCollection.load(root / assignment["bucket_file"])
    manifest = {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
        "pipeline": {"version": PIPELINE_VERSION, "hash": pipeline_hash(config), "params": pipeline_params(config)},
        "dataset_config": config.name,
        "collection": {"name": coll.name, "builder": coll.builder, "params": coll.params,
                       "routes": coll.routes},
        "collection_buckets": coll.to_json(),
        "routes": fingerprints,
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
    atomic_write_bytes(set_dir / "manifest.json", json.dumps(manifest, indent=1).encode())
    return set_dir / "manifest.json"

