"""What a training script uses: `open_dataset(...)` -> a resumable, DDP-exact iterable of batches.

The loader owns the epoch: each iteration cuts this rank's slice of the (pure, cached) epoch plan from the
resume point into batches, and `leadio.engine`'s decode threads turn each batch into tensors ahead of the
consumer: read the members by byte range, decode them into a reused batch buffer. Because each batch carries
its epoch, threads that persist across epochs serve every new epoch, and a resumed loader simply starts at
the right batch.

Backends (`leadio.decode.BACKENDS`): ``cpu`` decodes everything in the decode threads (simplejpeg, lz4);
``dali`` has them read and inflate, and feed the JPEGs to a DALI pipeline (nvJPEG on the GPU with
``device="cuda"``, its CPU operators otherwise). ``auto`` picks ``dali`` on a machine with a GPU and DALI, else
``cpu``; a forced backend that cannot run is an error, never a silent switch. Both yield the same dict (see
`leadio.schema`). ``output="lead"`` wraps the loader in `leadio.lead.LeadBatches` (the reference loader's
batch), whose CPU conversion runs in the decode threads too (`LeadLoader.iterate`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xxhash

from leadio.batch_reader import BatchReader
from leadio.buckets.collection import BucketCollection
from leadio.buckets.specs import read_spec
from leadio.decode import BACKENDS, choose_backend
from leadio.decode.cpu import CpuBackend
from leadio.engine import BatchRing, DecodeThreads, default_workers
from leadio.lead.batch import LeadBatches
from leadio.loader_config import LoaderConfig, unknown_option_message
from leadio.plan import EpochPlan, bucket_counts, global_sequence, rank_plan, resolve_shuffle
from leadio.plan.shuffle import Shuffle
from leadio.read import Deadline
from leadio.schema import DEFAULT_KEYS, members_for_keys
from leadio.shard.shardset import ShardSet, locate_shard_set, open_shard_set

__all__ = ["EpochPlans", "LeadLoader", "LoaderStats", "ResumeMismatch", "SampleDataset", "collection_rows",
           "open_dataset", "world_from_env"]

log = logging.getLogger(__name__)
STATE_VERSION = 3  # 2: the shuffle is part of the state; 3: so is the content of the set and collection


class ResumeMismatch(ValueError):
    """`LeadLoader.load_state_dict` refused a state: it cannot be mapped onto this loader's epoch.

    Attributes:
        key: what differs: ``"version"``, ``"shuffle"``, ``"batch_size"``, ``"seed"``, ``"collection"``,
            ``"shard_set"`` (another set), or ``"content"`` (the set was rebuilt under the same name, or the
            collection changed, so that the samples the epoch draws are not those the state counted).
        saved, current: the state's value and this loader's.
        epoch, consumed: the saved position (epoch, global samples consumed in it); None when unreadable.
    """

    def __init__(self, message: str, *, key: str, saved=None, current=None, epoch: int | None = None,
                 consumed: int | None = None):
        super().__init__(message)
        self.key, self.saved, self.current, self.epoch, self.consumed = key, saved, current, epoch, consumed


def world_from_env() -> tuple[int, int]:
    """(world_size, rank): torch.distributed when initialised, else WORLD_SIZE/RANK (torchrun, accelerate)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))


def collection_rows(shard_set: ShardSet, collection: BucketCollection) -> list[np.ndarray]:
    """Rows of ``shard_set`` holding each bucket's frames (any collection whose frames the set holds).

    Raises:
        ValueError: the collection names frames the set lacks (how many, from which routes, and the fix).
    """
    cat = shard_set.catalog
    index = {(str(r), int(f)): i for i, (r, f) in enumerate(zip(cat["route"], cat["frame"], strict=True))}
    out, missing = [], {}
    for bucket in collection.buckets:
        rows = []
        for route, frames in bucket.members.items():
            for f in frames.tolist():
                i = index.get((route, f))
                if i is None:
                    missing[route] = missing.get(route, 0) + 1
                else:
                    rows.append(i)
        out.append(np.array(sorted(rows), np.int64))
    if missing:
        routes = ", ".join(f"{r} ({n})" for r, n in sorted(missing.items())[:5])
        raise ValueError(f"collection {collection.name!r} names {sum(missing.values())} frames that shard set "
                         f"{shard_set.path.name} lacks, from {len(missing)} routes: {routes}"
                         f"{' ...' if len(missing) > 5 else ''}; build a shard set that holds them (e.g. "
                         f"`python -m leadio.shard --collection {collection.name}`)")
    return out


@dataclass
class LoaderStats:
    """Counters of a loader; ``skipped`` only grows when the user opted in with ``on_error='skip'``."""

    batches: int = 0
    samples: int = 0
    skipped: int = 0
    skipped_samples: list[str] = field(default_factory=list)


class EpochPlans:
    """This loader's plans, a pure function of the epoch and the resume point (the last two cached)."""

    def __init__(self, bucket_rows: list[np.ndarray], shard_of_row: np.ndarray, collection: BucketCollection,
                 config: LoaderConfig):
        self.bucket_rows, self.shard_of_row, self.collection = bucket_rows, shard_of_row, collection
        self.seed, self.perturbation_rate, self.uneven = config.seed, config.perturbation_rate, config.uneven
        self.shuffle = config.shuffle

    def identity(self, sample_key: np.ndarray) -> str:
        """xxh3-128 hex over what the global sequences are a function of, besides seed, shuffle and views: per
        bucket its rate schedule, its rows, their shards and their sample keys (``sample_key``: the set's column).
        Two loaders with equal identities (and seeds and shuffles) serve the same samples in the same order, so
        a resume position carries over exactly, even to a set rebuilt since (another manifest)."""
        h = xxhash.xxh3_128()
        for bucket, rows in zip(self.collection.buckets, self.bucket_rows, strict=True):
            h.update(json.dumps(sorted(bucket.rate.items())).encode())
            h.update(np.ascontiguousarray(rows, "<i8").tobytes())
            h.update(np.ascontiguousarray(self.shard_of_row[rows], "<i8").tobytes())
            h.update("\n".join(map(str, sample_key[rows])).encode() + b"\0")
        return h.hexdigest()

    @lru_cache(maxsize=2)  # noqa: B019 - bounded, and the object lives as long as the loader
    def plan(self, epoch: int, start: int, world_size: int, rank: int) -> EpochPlan:
        rows, views = global_sequence(self.bucket_rows, self.collection.rates_at(epoch), self.shard_of_row,
                                      epoch=epoch, seed=self.seed, perturbation_rate=self.perturbation_rate,
                                      shuffle=self.shuffle)
        return rank_plan(rows, views, epoch=epoch, world_size=world_size, rank=rank, start=start, uneven=self.uneven)


class LeadLoader:
    """Iterable of batches (dicts of torch tensors) over a shard set, one epoch per iteration.

    Use `open_dataset` to build one. ``set_epoch(e)`` selects the epoch; iterating yields this rank's
    batches of that epoch from where the last `state_dict` (or the last partial iteration) left off. One
    iteration at a time: a second iterator started while one is open (another thread's loop, or a kept
    ``iter(loader)`` beside a ``for``) is refused, since both would consume the same position. An iterator
    that is exhausted, closed, or dropped (a ``break`` out of a ``for``) ends its iteration.
    """

    def __init__(self, shard_set: ShardSet, collection: BucketCollection, config: LoaderConfig):
        if not config.resolved:
            raise ValueError(f"LeadLoader needs a resolved LoaderConfig (world_size, rank, a backend other than "
                             f"'auto' and a Shuffle), got {config}; use open_dataset")
        self.config = config
        self.shard_set, self.collection = shard_set, collection
        self.keys, self.batch_size, self.backend = list(config.keys), config.batch_size, config.backend
        self.shuffle, self.seed = config.shuffle, config.seed
        self.world_size, self.rank = config.world_size, config.rank
        self.stats = LoaderStats()
        self.epoch = 0
        self._start = 0          # global samples consumed before this epoch's plan was cut (resume point)
        self._first_batch = 0    # batches of that plan already yielded
        self.members = members_for_keys(config.keys, shard_set.layout)
        self.plans = EpochPlans(collection_rows(shard_set, collection), shard_set.catalog["shard"], collection, config)
        self.num_workers = default_workers() if config.num_workers is None else int(config.num_workers)
        self.persistent_workers = config.persistent_workers
        decoder = BACKENDS[config.backend](config.batch_size, config.device or "cpu", self.num_workers)
        self._reader = BatchReader(shard_set, self.members, decoder, config.on_error)
        self.ring = BatchRing(decoder.host_members(self.members), config.batch_size,
                              pin=config.pins_memory and torch.cuda.is_available())
        self._threads = DecodeThreads(self.num_workers, prefetch=2 * self.num_workers)
        self._close = weakref.finalize(self, self._threads.close)  # the loader's end stops its threads
        self._iterating: str | None = None  # the thread that runs the open iteration, if one is open
        self._iterating_lock = threading.Lock()
        self._identity: str | None = None   # `EpochPlans.identity`, computed when a state needs it

    @property
    def bucket_rows(self) -> list[np.ndarray]:
        """Per bucket of the collection, the shard set's rows of its frames."""
        return self.plans.bucket_rows

    def close(self) -> None:
        """Stop the decode threads now (also done when the loader is garbage collected)."""
        self._close()

    # ------------------------------------------------------------------------------------------ epochs
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate. A different epoch starts at its beginning; the current one continues
        from its position (after `load_state_dict`, or after a finished epoch, which moves to the next)."""
        if epoch != self.epoch:
            self.epoch, self._start, self._first_batch = int(epoch), 0, 0

    def plan(self, epoch: int | None = None) -> EpochPlan:
        """This rank's plan for ``epoch`` (default: the current one, from its resume point)."""
        if epoch is None or epoch == self.epoch:
            return self.plans.plan(self.epoch, self._start, self.world_size, self.rank)
        return self.plans.plan(epoch, 0, self.world_size, self.rank)

    def _num_batches(self) -> int:
        return len(self.plans.plan(self.epoch, self._start, self.world_size, self.rank)) // self.batch_size

    def batches_in_epoch(self, epoch: int) -> int:
        """Full batches this rank gets in ``epoch`` from its start (equal on every rank)."""
        return len(self.plans.plan(epoch, 0, self.world_size, self.rank)) // self.batch_size

    def __len__(self) -> int:
        """Batches left in the current epoch for this rank."""
        return self._num_batches() - self._first_batch

    def __iter__(self) -> Iterator[dict]:
        return self.iterate()

    def iterate(self, convert: Callable[[dict], Any] | None = None) -> Iterator[Any]:
        """Iterate one epoch as ``iter(loader)`` does, yielding ``convert(batch)`` instead of each batch when
        given: ``convert`` runs in the decode thread that decoded the batch, right after it (``output="lead"``
        builds its LEAD batches there); its exception is raised at its batch's turn, before the batch counts."""
        with self._iterating_lock:
            if self._iterating is not None:
                raise RuntimeError(
                    f"this loader is already being iterated (an iterator started in thread {self._iterating!r} is "
                    f"still open: another thread's loop, or a kept iter(loader)); a second iteration would deliver "
                    f"every sample twice and corrupt the resume state: finish or close() the first iterator (a "
                    f"break out of a for loop closes it), or open a second loader for a second stream")
            self._iterating = threading.current_thread().name
        try:
            yield from self._iterate(convert)
        finally:
            self._iterating = None

    def _iterate(self, convert: Callable[[dict], Any] | None) -> Iterator[Any]:
        plan = self.plans.plan(self.epoch, self._start, self.world_size, self.rank)
        b, reader, ring = self.batch_size, self._reader, self.ring
        spans = [slice(i * b, (i + 1) * b) for i in range(self._first_batch, len(plan) // b)]

        def load(sl: slice) -> tuple[Any, list[str]]:  # in a decode thread
            batch = reader.load(plan.rows[sl], plan.views[sl], ring)
            bad = batch.pop("_bad")
            return (batch if convert is None else convert(batch)), bad

        try:
            for batch, bad in self._threads.map(load, spans):
                if bad:
                    self.stats.skipped += len(bad)
                    self.stats.skipped_samples += bad
                    log.warning("skipped %d unreadable samples (on_error='skip'): %s", len(bad), "; ".join(bad[:3]))
                self._first_batch += 1
                self.stats.batches += 1
                self.stats.samples += self.batch_size
                yield batch
                del batch  # not held while the next one is decoded: its buffers can be reused for it
        finally:
            if not self.persistent_workers:
                self._threads.close()
        if self._first_batch >= self._num_batches():  # epoch complete: the position moves to the next epoch
            self.epoch, self._start, self._first_batch = self.epoch + 1, 0, 0

    # ------------------------------------------------------------------------------------------ resume
    @property
    def identity(self) -> str:
        """What the epoch's samples are, as a hash (`EpochPlans.identity`): equal identities (with equal seed
        and shuffle) mean the same global sequence of the same samples, whatever the shard set's manifest."""
        if self._identity is None:
            self._identity = self.plans.identity(np.asarray(self.shard_set.catalog["sample_key"]))
        return self._identity

    def state_dict(self) -> dict:
        """Serialisable position: the epoch and the global samples consumed (independent of world size), and
        what they count: the shard set (name, manifest identity, samples) and the plan's identity."""
        return {"version": STATE_VERSION, "epoch": self.epoch, "seed": self.seed, "batch_size": self.batch_size,
                "consumed": self._start + self._first_batch * self.batch_size * self.world_size,
                "world_size": self.world_size, "collection": self.collection.name,
                "shard_set": self.shard_set.path.name, "shuffle": self.shuffle.state(),
                "shard_set_identity": self.shard_set.identity, "samples": len(self.shard_set),
                "collection_frames": self._frames(), "identity": self.identity}

    def _frames(self) -> int:
        return int(sum(len(r) for r in self.plans.bucket_rows))

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict` (possibly saved with another world size: the rest is re-split). A
        state of a set rebuilt since under the same name is taken when the epoch's samples are unchanged (e.g.
        only raw pixels were edited): the position then maps exactly; otherwise it is refused.

        Raises:
            ResumeMismatch (a ValueError): the state belongs to another seed, collection, shuffle, global batch,
                shard set or state version, or the set or collection changed since it was saved (names both and
                what to do; ``key`` says which).
        """
        epoch, consumed = state.get("epoch"), state.get("consumed")

        def refuse(message: str, key: str, saved, current) -> ResumeMismatch:
            return ResumeMismatch(message, key=key, saved=saved, current=current, epoch=epoch, consumed=consumed)

        version = state.get("version")
        if version != STATE_VERSION:
            raise refuse(f"loader state has version={version!r}, this loader has {STATE_VERSION!r}; "
                         f"resume with the same version", "version", version, STATE_VERSION)
        elif state.get("shuffle") != self.shuffle.state():
            theirs = Shuffle.from_state(state["shuffle"]).describe() if state.get("shuffle") else "none"
            raise refuse(f"loader state has shuffle {theirs}, this loader has {self.shuffle.describe()}; "
                         f"resume with the same shuffle (e.g. open_dataset(..., shuffle="
                         f"{state.get('shuffle', {}).get('algorithm')!r}))", "shuffle", state.get("shuffle"),
                         self.shuffle.state())
        if state.get("batch_size") not in (None, self.batch_size) and state.get("world_size") is not None and \
                state["batch_size"] * state["world_size"] != self.batch_size * self.world_size:
            raise refuse(f"loader state has batch_size={state['batch_size']} on {state['world_size']} ranks, this "
                         f"loader has {self.batch_size} on {self.world_size}; resume with the same per-rank or "
                         f"global batch size", "batch_size", state["batch_size"] * state["world_size"],
                         self.batch_size * self.world_size)
        for key, mine in (("seed", self.seed), ("collection", self.collection.name),
                          ("shard_set", self.shard_set.path.name)):
            if state.get(key) != mine:
                raise refuse(f"loader state has {key}={state.get(key)!r}, this loader has {mine!r}; "
                             f"resume with the same {key}", key, state.get(key), mine)
        rebuilt = state.get("shard_set_identity") != self.shard_set.identity
        if state.get("identity") != self.identity:
            name, frames = self.shard_set.path.name, self._frames()
            was = state.get("shard_set_identity")
            what = (f"shard set {name} was rebuilt since this state was saved (manifest {was} -> "
                    f"{self.shard_set.identity}; samples {len(self.shard_set)}, were {state.get('samples')}; "
                    f"frames of {self.collection.name!r} {frames}, were {state.get('collection_frames')})"
                    if rebuilt else
                    f"collection {self.collection.name!r} changed since this state was saved (its frames in shard set "
                    f"{name}: {frames}, were {state.get('collection_frames')}; or its buckets or rates)")
            raise refuse(f"loader state of epoch {epoch} ({consumed} samples consumed): the {what}, so the saved "
                         f"position cannot be mapped onto its samples; continue without the state: set_epoch({epoch}) "
                         f"replays epoch {epoch} from its start, set_epoch({int(epoch) + 1}) skips its rest", "content",
                         state.get("identity"), self.identity)
        if rebuilt:
            log.info("shard set %s was rebuilt since the loader state was saved, but the samples, shards and rates "
                     "of the epoch plan are unchanged: resuming exactly", self.shard_set.path.name)
        self.epoch, self._start, self._first_batch = int(epoch), int(consumed), 0


class SampleDataset(torch.utils.data.Dataset):
    """Map-style random access to any sample of a shard set: ``ds[i]`` -> dict of tensors (one sample), read
    and decoded as the loader does (`leadio.batch_reader.BatchReader`, cpu backend).

    Args:
        shard_set: an opened set.
        keys: fields to decode.
        view: ``"normal"`` or ``"perturbated"``.
    """

    def __init__(self, shard_set: ShardSet, keys: Sequence[str] = DEFAULT_KEYS, view: str = "normal"):
        if view not in ("normal", "perturbated"):
            raise ValueError(f"view must be 'normal' or 'perturbated', got {view!r}")
        self.ss, self.view = shard_set, view
        self.members = members_for_keys(keys, shard_set.layout)
        self._reader = BatchReader(shard_set, self.members, CpuBackend(1, "cpu", 0), "raise")
        self._ring = BatchRing(self.members, 1)

    def __len__(self) -> int:
        return len(self.ss)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} outside the shard set's {len(self)} samples")
        i %= len(self)
        batch = self._reader.load(np.array([i]), np.array([self.view == "perturbated"], np.uint8), self._ring)
        del batch["_bad"]
        out = {k: v[0].contiguous().clone() for k, v in batch.items()}  # own memory: the ring slot is reused
        out["sample_key"] = str(self.ss.catalog["sample_key"][i])
        return out


#: open_dataset's own options: where the data is, not how it is loaded (that is `LoaderConfig`).
SOURCE_OPTIONS = ("collection", "root", "cache_dir", "cache_bytes", "verify", "deadline")


def _resolve_collection(ss: ShardSet, collection, root: Path | None) -> BucketCollection:
    """The collection to plan over: the set's own (also when ``collection`` names the spec the set was built
    from: nothing under the root is read, so a remote set needs no root), a given object, or a spec's current
    file under the root (built when missing or stale, where the root is writable)."""
    if isinstance(collection, BucketCollection):
        return collection
    if collection is not None:
        builder, params, _ = read_spec(collection)
        own = ss.manifest.get("collection_buckets") or {}
        if builder == own.get("builder") and json.loads(json.dumps(params)) == own.get("params"):
            collection = None  # the very spec the set was built from
    if collection is None:
        return BucketCollection.from_json(ss.manifest["collection_buckets"], str(ss.path / "manifest.json"))
    if root is None and ss.base is not None:
        raise ValueError(f"collection={collection!r} is built from a dataset root, but the shard set is remote "
                         f"({ss.base}); pass root=<dataset root> or a BucketCollection")
    root = Path(root) if root is not None else ss.path.parent.parent
    from leadio.buckets.builders import load_or_build  # only for a collection other than the set's own

    return load_or_build(root, collection)[0]  # a current file is read without a lock or any write


def _resolve_config(config: LoaderConfig, ss: ShardSet) -> LoaderConfig:
    """``config`` with what depends on the machine and the set decided: topology, backend, shuffle."""
    world_size, rank = config.world_size, config.rank
    if world_size is None or rank is None:
        env_world, env_rank = world_from_env()
        world_size = env_world if world_size is None else world_size
        rank = env_rank if rank is None else rank
    order = resolve_shuffle(config.shuffle, block_shards=config.block_shards, remote=ss.base is not None,
                            max_shard_bytes=max((int(e["bytes"]) for e in ss.manifest["shards"]), default=1),
                            cache_bytes=ss.cache.max_bytes if ss.cache is not None else 64 * 1024**3)
    backend = choose_backend(config.backend)
    if config.output == "compact" and backend == "cpu" and (config.device or "cpu").startswith("cuda"):
        raise ValueError(f"device={config.device!r} makes batches on the GPU, which the cpu backend does not do: "
                         f"use backend='dali' (nvJPEG), output='lead' (LEAD batches built on the GPU), or move the "
                         f"batch yourself (pin_memory=True, .to(device, non_blocking=True))")
    return replace(config, backend=backend, world_size=world_size, rank=rank, shuffle=order)


def open_dataset(source: str | Path | ShardSet, config: LoaderConfig | None = None, *,
                 collection: str | BucketCollection | None = None, root: str | Path | None = None,
                 cache_dir: str | Path | None = None, cache_bytes: int = 64 * 1024**3, verify: bool = True,
                 deadline: Deadline | None = None, **overrides) -> LeadLoader | LeadBatches:
    """Open a shard set for training.

    Args:
        source: the set folder, URL (http(s) or fsspec) or an opened `ShardSet`; or a dataset root: its set
            for ``collection``.
        config: how to load (`LoaderConfig`: keys, batch_size, backend, shuffle, ...); default: its defaults.
        collection: bucket collection to plan over (shipped name, JSON spec, or object); default: the one the
            set was built for. Any collection whose frames the set holds works (posttrain over a pretrain set).
        root: dataset root for the staleness check and for the collection's bucket file (default: inferred).
        cache_dir, cache_bytes: session cache for a remote shard set (http(s) or fsspec URL): shards are copied
            there on first use, LRU-bounded to ``cache_bytes``; safe to share between workers, ranks and jobs.
        verify: compare every member read with the hash recorded at build time (a damaged shard is an error
            naming shard, sample and member, or a skipped sample with ``on_error="skip"``); ~0.2% of decoding.
        deadline: the time limit of each request to a remote set (`leadio.read.Deadline`; default: 60 s plus
            the request's size at 1 MiB/s); a request over it is retried, then an error.
        **overrides: `LoaderConfig` fields replacing ``config``'s (``batch_size=16, backend="cpu"``).

    Returns:
        a `LeadLoader`, or with ``output="lead"`` a `leadio.lead.LeadBatches` around one.

    Raises:
        ValueError: an unknown or bad option (before any I/O), a batch larger than the rank's epoch, a world
            size larger than the epoch.
        ReadOnlyRootError: ``collection`` needs a bucket file that is missing or stale under a read-only root.
    """
    unknown = sorted(set(overrides) - {f.name for f in fields(LoaderConfig)})
    if unknown:
        raise TypeError(unknown_option_message(unknown, SOURCE_OPTIONS))
    config = replace(config, **overrides) if config is not None else LoaderConfig(**overrides)  # checks, no I/O
    shard_set, root = locate_shard_set(source, collection, root)  # a dataset root -> its shard set
    ss = shard_set if isinstance(shard_set, ShardSet) else open_shard_set(shard_set, root=root, cache_dir=cache_dir,
                                                                          cache_bytes=cache_bytes, verify=verify,
                                                                          deadline=deadline)
    coll = _resolve_collection(ss, collection, root)
    config = _resolve_config(config, ss)
    loader = LeadLoader(ss, coll, config)
    samples = sum(bucket_counts([len(r) for r in loader.bucket_rows], coll.rates_at(0)))
    if 0 < samples < config.world_size and config.uneven == "drop":
        fit = (f"run at most {samples // config.batch_size} ranks at batch_size={config.batch_size}"
               if samples >= config.batch_size else f"lower batch_size (at most {samples}) and world_size")
        raise ValueError(f"world_size={config.world_size} exceeds the {samples} samples of epoch 0 of {coll.name!r} "
                         f"({ss.path.name}): every rank would get 0 batches of {config.batch_size}; {fit}")
    if loader.batches_in_epoch(0) == 0 and len(loader.plan(0)) > 0:
        raise ValueError(f"batch_size={config.batch_size} exceeds the {len(loader.plan(0))} samples rank "
                         f"{config.rank} of {config.world_size} gets in epoch 0 of {coll.name!r} ({ss.path.name}): "
                         f"no full batch; lower batch_size")
    if config.output == "lead":
        return LeadBatches(loader, device=config.device)
    return loader
