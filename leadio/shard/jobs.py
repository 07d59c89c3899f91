"""One shard at a time: which samples go to which shard (`plan_shards`, deterministic, so every part of a
build computes the same), writing one shard (tar, DALI index, sidecar; renamed into place last) and the
check that a shard on disk is complete. `leadio.shard.build` runs these jobs and merges the set.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import xxhash

from leadio.buckets.collection import BucketCollection
from leadio.files import atomic_write_bytes, file_xxh3, remove_stale_temps, temp_sibling, writing
from leadio.format.config import DatasetConfig
from leadio.format.errors import FrameReadError, RouteError
from leadio.preprocess import preprocess_frame
from leadio.schema import pipeline_hash
from leadio.shard.tarwriter import ShardTarWriter, dali_index_text
from leadio.stamps import RouteStamps

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


def _check_keys_unique(routes: set[str]) -> None:
    """Refuse two routes whose sample keys would be the same (`sample_key` turns dots into underscores)."""
    owner: dict[str, str] = {}
    for route in sorted(routes):
        key = sample_key(route, 0).rsplit("/", 1)[0]
        if key in owner:
            raise ValueError(f"routes {owner[key]} and {route} give the same sample keys ({key}/NNNN: a dot in a "
                             f"name becomes an underscore in keys); rename one of the two route folders")
        owner[key] = route


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
    _check_keys_unique({route for route, _ in seen})
    if samples_per_shard is not None and samples_per_shard < 1:
        raise ValueError(f"samples per shard must be >= 1, got {samples_per_shard}; pass --samples-per-shard N "
                         f"with N >= 1, or --shard-size")
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1 byte, got {shard_size}; pass e.g. --shard-size 256MiB")
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


def jobs_of(assignment: dict) -> list[ShardJob]:
    return [ShardJob(s["index"], s["bucket"], s["path"], tuple(s["routes"]), tuple(s["frames"]))
            for s in assignment["shards"]]


def sidecar_path(set_dir: Path, job: ShardJob) -> Path:
    return (set_dir / job.path).with_suffix(".json")


def _sidecar_index(meta: dict) -> str:
    """The DALI index text a sidecar implies."""
    return dali_index_text([(k, list(zip(meta["members"], o, z, strict=True)), "")
                            for k, o, z in zip(meta["keys"], meta["offsets"], meta["sizes"], strict=True)])


def _source_digests(root: Path, routes, frames) -> list[str]:
    """The source digest (`leadio.stamps.frame_digest`) of each (route, frame), through the routes' stamp caches."""
    caches: dict[str, RouteStamps] = {}
    out = []
    for route, frame in zip(routes, frames, strict=True):
        if route not in caches:
            caches[route] = RouteStamps(root, route)
        out.append(caches[route].frame_digest(int(frame)))
    for c in caches.values():
        c.save()
    return out


def shard_problem(set_dir: Path, job: ShardJob, root: Path | None = None) -> str | None:
    """None when the shard is complete and current (see the module docstring), else why it must be rewritten."""
    tar, side, idx = set_dir / job.path, sidecar_path(set_dir, job), (set_dir / job.path).with_suffix(".idx")
    if not (tar.exists() and side.exists() and idx.exists()):
        return "not written"
    try:
        meta = json.loads(side.read_text())
        if meta.get("keys") != job.keys:
            return "holds other samples (the assignment changed)"
        if "member_xxh3_64" not in meta or "sources" not in meta:
            return "written by an older leadio (no per-member hashes)"
        if meta.get("bytes") != tar.stat().st_size:
            return f"has {tar.stat().st_size} bytes, its sidecar says {meta.get('bytes')}"
        if idx.read_text() != _sidecar_index(meta):
            return "its DALI index disagrees with its sidecar"
        if file_xxh3(tar) != meta.get("xxh3_128"):
            return "is damaged (checksum mismatch)"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"has an unreadable sidecar or index ({type(e).__name__}: {e})"
    if root is not None:
        try:
            now = _source_digests(root, job.routes, job.frames)
        except (RouteError, FrameReadError) as e:  # rewriting it raises the error, naming its route
            return f"was built from raw files that cannot be read now ({e})"
        changed = [k for k, a, b in zip(job.keys, meta["sources"], now, strict=True) if a != b]
        if changed:
            return f"was built from raw files that changed since ({len(changed)} samples, first {changed[0]})"
    return None


def shard_is_complete(set_dir: Path, job: ShardJob, root: Path | None = None) -> bool:
    return shard_problem(set_dir, job, root) is None


def write_shard(root: Path, config: DatasetConfig, set_dir: Path, job: ShardJob) -> dict:
    """Preprocess a job's frames into its tar, index and sidecar (tar renamed into place last)."""
    final = set_dir / job.path
    final.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (final, final.with_suffix(".idx"), sidecar_path(set_dir, job)):
        remove_stale_temps(leftover)  # of a killed writer of this shard (we own it: build lock + assignment)
    tmp = temp_sibling(final)
    try:
        sources = _source_digests(root, job.routes, job.frames)  # before reading: an edit during the build
        member_hashes = []                                        # makes the next rerun rewrite this shard
        with writing(final), open(tmp, "wb") as f:
            writer = ShardTarWriter(f)
            for route, frame in zip(job.routes, job.frames, strict=True):
                members = _sample_members(root, route, frame, config)
                member_hashes.append([xxhash.xxh3_64_intdigest(data) for _, data in members])
                writer.add_sample(sample_key(route, frame), members)
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
            "member_xxh3_64": member_hashes,
            "sources": sources,
        }
        atomic_write_bytes(final.with_suffix(".idx"), dali_index_text(writer.samples).encode())
        atomic_write_bytes(sidecar_path(set_dir, job), json.dumps(sidecar).encode())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return sidecar


def write_shard_task(args: tuple[str, str, str, ShardJob]) -> tuple[int, int, int]:
    root, config_name, set_dir, job = args
    from leadio.format.config import DATASET_CONFIGS

    sidecar = write_shard(Path(root), DATASET_CONFIGS[config_name], Path(set_dir), job)
    return job.index, sidecar["samples"], sidecar["bytes"]


def check_shard_task(args: tuple[str, str, ShardJob]) -> str | None:
    set_dir, root, job = args
    return shard_problem(Path(set_dir), job, Path(root))
