"""What a training script uses: `open_dataset(...)` -> a resumable, DDP-exact iterable of batches.

The loader owns the epoch: each iteration cuts this rank's slice of the (pure, cached) epoch plan from the
resume point into batches, and `leadio.engine`'s decode threads turn each batch into tensors ahead of the
consumer: read the members by byte range, decode them into a reused batch buffer. Because each batch carries
its epoch, threads that persist across epochs serve every new epoch, and a resumed loader simply starts at
the right batch.

Backends: ``cpu`` decodes everything in the decode threads (simplejpeg, lz4); ``dali`` has them read and
inflate, and feed the JPEGs to a DALI pipeline (``mixed`` = nvJPEG on a GPU, ``cpu`` operators otherwise)
whose own threads decode, off the training loop. ``auto`` picks ``dali`` on a machine with a GPU and DALI,
else ``cpu``; a forced backend that cannot run is an error, never a silent switch. Both yield the same dict
(see `leadio.decode.fields`).
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from leadio.batch_reader import BatchReader
from leadio.buckets import BucketCollection, load_or_build
from leadio.decode.cpu import decode_batch
from leadio.decode.dali import DaliDecoder, dali_available, gpu_available
from leadio.decode.fields import DEFAULT_KEYS, members_for_keys
from leadio.engine import BatchRing, DecodeThreads, default_workers
from leadio.loader_config import LoaderConfig
from leadio.plan import EpochPlan, Shuffle, global_sequence, rank_plan, resolve_shuffle
from leadio.shard.shardset import ShardSet, locate_shard_set, open_shard_set

__all__ = ["LeadLoader", "LoaderConfig", "LoaderStats", "SampleDataset", "collection_rows", "open_dataset",
           "world_from_env"]

log = logging.getLogger(__name__)
STATE_VERSION = 2  # 1: window shuffle, no algorithm recorded; 2: the shuffle is part of the state


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


class _PlanSource:
    """Everything a worker needs to compute plans; pickled to workers once."""

    def __init__(self, bucket_rows, shard_of_row, collection, seed, world_size, rank, perturbation_rate,
                 uneven, shuffle: Shuffle):
        self.bucket_rows, self.shard_of_row, self.collection = bucket_rows, shard_of_row, collection
        self.seed, self.world_size, self.rank = seed, world_size, rank
        self.perturbation_rate, self.uneven, self.shuffle = perturbation_rate, uneven, shuffle

    @lru_cache(maxsize=2)  # noqa: B019 - bounded, and the object lives as long as the loader
    def plan(self, epoch: int, start: int, world_size: int, rank: int) -> EpochPlan:
        rows, views = global_sequence(self.bucket_rows, self.collection.rates_at(epoch), self.shard_of_row,
                                      epoch=epoch, seed=self.seed, perturbation_rate=self.perturbation_rate,
                                      shuffle=self.shuffle)
        return rank_plan(rows, views, epoch=epoch, world_size=world_size, rank=rank, start=start, uneven=self.uneven)


class LeadLoader:
    """Iterable of batches (dicts of torch tensors) over a shard set, one epoch per iteration.

    Use `open_dataset` to build one. ``set_epoch(e)`` selects the epoch; iterating yields this rank's
    batches of that epoch from where the last `state_dict` (or the last partial iteration) left off.
    """

    def __init__(self, shard_set: ShardSet, collection: BucketCollection, config: LoaderConfig):
        if not config.resolved:
            raise ValueError(f"LeadLoader needs a resolved LoaderConfig (world_size, rank, a backend other than "
                             f"'auto' and a Shuffle), got {config}; use open_dataset")
        keys, batch_size, backend = config.keys, config.batch_size, config.backend
        world_size, rank, seed, num_workers = config.world_size, config.rank, config.seed, config.num_workers
        shuffle, device = config.shuffle, config.device
        self.config = config
        self.shard_set, self.collection = shard_set, collection
        self.keys, self.batch_size, self.backend = list(keys), batch_size, backend
        self.shuffle = shuffle
        self.world_size, self.rank, self.seed = world_size, rank, seed
        self.stats = LoaderStats()
        self.epoch = 0
        self._start = 0          # global samples consumed before this epoch's plan was cut (resume point)
        self._first_batch = 0    # batches of that plan already yielded
        self.members = members_for_keys(keys, shard_set.layout)
        self.plans = _PlanSource(collection_rows(shard_set, collection), shard_set.catalog["shard"], collection,
                                 seed, world_size, rank, config.perturbation_rate, config.uneven, shuffle)
        self._dataset = BatchReader(shard_set, self.plans, self.members, batch_size, backend, config.on_error)
        self.num_workers = default_workers() if num_workers is None else int(num_workers)
        self.persistent_workers = config.persistent_workers
        self._dali, ring_members = None, self.members
        if backend == "dali":
            self._dali = DaliDecoder(batch_size, device="mixed" if device == "cuda" else "cpu",
                                     num_threads=max(1, self.num_workers))
            if self._dali.device == "mixed":  # nvJPEG writes the images on the GPU
                ring_members = {k: m for k, m in self.members.items() if m.encoding != "jpeg"}
        self.ring = BatchRing(ring_members, batch_size, pin=config.pin_memory and torch.cuda.is_available())
        self._threads = DecodeThreads(self.num_workers, prefetch=2 * self.num_workers)
        self._close = weakref.finalize(self, self._threads.close)  # the loader's end stops its threads

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
        plan = self.plans.plan(self.epoch, self._start, self.world_size, self.rank)
        b, dataset, ring, dali = self.batch_size, self._dataset, self.ring, self._dali
        spans = [slice(i * b, (i + 1) * b) for i in range(self._first_batch, len(plan) // b)]
        try:
            for batch in self._threads.map(lambda sl: dataset.load(plan.rows[sl], plan.views[sl], ring, dali), spans):
                bad = batch.pop("_bad")
                if bad:
                    self.stats.skipped += len(bad)
                    self.stats.skipped_samples += bad
                    log.warning("skipped %d unreadable samples (on_error='skip'): %s", len(bad), "; ".join(bad[:3]))
                self._first_batch += 1
                self.stats.batches += 1
                self.stats.samples += self.batch_size
                yield batch
        finally:
            if not self.persistent_workers:
                self._threads.close()
        if self._first_batch >= self._num_batches():  # epoch complete: the position moves to the next epoch
            self.epoch, self._start, self._first_batch = self.epoch + 1, 0, 0

    # ------------------------------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        """Serialisable position: the epoch and the global samples consumed (independent of world size)."""
        return {"version": STATE_VERSION, "epoch": self.epoch, "seed": self.seed, "batch_size": self.batch_size,
                "consumed": self._start + self._first_batch * self.batch_size * self.world_size,
                "world_size": self.world_size, "collection": self.collection.name,
                "shard_set": self.shard_set.path.name, "shuffle": self.shuffle.state()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict` (possibly saved with another world size: the rest is re-split).

        A version-1 state (saved before shuffles had names) resumes only with ``shuffle="window"``, whose
        order is version 1's, bit for bit.

        Raises:
            ValueError: the state belongs to another seed, collection, shuffle or state version (names both).
        """
        version = state.get("version")
        if version == 1:
            theirs = {"algorithm": "window", "window": 256}
            if self.shuffle.state() != theirs:
                raise ValueError(f"loader state has version 1 (shuffle window(256)), this loader has version "
                                 f"{STATE_VERSION} with shuffle {self.shuffle.describe()}; resume that run with "
                                 f"shuffle='window' (its order), or start the epoch afresh")
        elif version != STATE_VERSION:
            raise ValueError(f"loader state has version={version!r}, this loader has {STATE_VERSION!r}; "
                             f"resume with the same version")
        elif state.get("shuffle") != self.shuffle.state():
            theirs = Shuffle.from_state(state["shuffle"]).describe() if state.get("shuffle") else "none"
            raise ValueError(f"loader state has shuffle {theirs}, this loader has {self.shuffle.describe()}; "
                             f"resume with the same shuffle (e.g. open_dataset(..., shuffle="
                             f"{state.get('shuffle', {}).get('algorithm')!r}))")
        if state.get("batch_size") not in (None, self.batch_size) and state.get("world_size") is not None and \
                state["batch_size"] * state["world_size"] != self.batch_size * self.world_size:
            raise ValueError(f"loader state has batch_size={state['batch_size']} on {state['world_size']} ranks, this "
                             f"loader has {self.batch_size} on {self.world_size}; resume with the same per-rank or "
                             f"global batch size")
        for key, mine in (("seed", self.seed), ("collection", self.collection.name),
                          ("shard_set", self.shard_set.path.name)):
            if state.get(key) != mine:
                raise ValueError(f"loader state has {key}={state.get(key)!r}, this loader has {mine!r}; "
                                 f"resume with the same {key}")
        self.epoch, self._start, self._first_batch = int(state["epoch"]), int(state["consumed"]), 0


class SampleDataset(Dataset):
    """Map-style random access to any sample of a shard set: ``ds[i]`` -> dict of tensors (one sample).

    Args:
        shard_set: an opened set.
        keys: fields to decode.
        view: ``"normal"`` or ``"perturbated"``.
    """

    def __init__(self, shard_set: ShardSet, keys: Sequence[str] = DEFAULT_KEYS, view: str = "normal"):
        self.ss, self.view = shard_set, view
        self.members = members_for_keys(keys, shard_set.layout)
        self._reader = BatchReader(shard_set, None, self.members, 1, "cpu", "raise")

    def __len__(self) -> int:
        return len(self.ss)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} outside the shard set's {len(self)} samples")
        i %= len(self)
        rows = np.array([i])
        raw, failures = self._reader.read_raw(rows, np.array([self.view == "perturbated"], np.uint8))
        batch, bad = decode_batch(raw, self.members)
        self._reader._check(rows, {**failures, **bad})
        out = {k: torch.from_numpy(np.array(v[0], order="C")) for k, v in batch.items()}  # copy; 0-d stays 0-d
        out["sample_key"] = str(self.ss.catalog["sample_key"][i])
        return out


def _choose_backend(backend: str) -> str:
    if backend == "auto":
        return "dali" if gpu_available() and dali_available()[0] else "cpu"
    if backend == "dali":
        ok, why = dali_available()
        if not ok:
            raise RuntimeError(f"backend 'dali' was requested but cannot run: {why}")
    elif backend != "cpu":
        raise ValueError(f"backend must be 'auto', 'cpu' or 'dali', got {backend!r}")
    return backend


def open_dataset(shard_set: str | Path | ShardSet, *, collection: str | BucketCollection | None = None,
                 keys: Sequence[str] = DEFAULT_KEYS, batch_size: int = 32, backend: str = "auto",
                 world_size: int | None = None, rank: int | None = None, seed: int = 0, num_workers: int | None = None,
                 perturbation_rate: float = 0.5, uneven: str = "drop", shuffle: str | Shuffle = "auto",
                 block_shards: int | None = None, on_error: str = "raise",
                 pin_memory: bool = False, persistent_workers: bool = True, device: str | None = None,
                 root: str | Path | None = None, cache_dir: str | Path | None = None,
                 cache_bytes: int = 64 * 1024**3, output: str = "compact", verify: bool = True) -> LeadLoader:
    """Open a shard set for training.

    Args:
        shard_set: the set folder (or an opened `ShardSet`), or a dataset root: its set for ``collection``.
        collection: bucket collection to plan over (shipped name, JSON spec, or object); default: the one the
            set was built for. Any collection whose frames the set holds works (posttrain over a pretrain set).
        keys: fields to load (see `leadio.decode.fields`).
        batch_size: samples per batch per rank.
        backend: ``"auto"``, ``"cpu"`` or ``"dali"``.
        world_size, rank: topology (default: from torch.distributed or WORLD_SIZE/RANK).
        seed: plan seed.
        num_workers: decode threads (`leadio.engine`); default: this process's cores, divided by
            ``LOCAL_WORLD_SIZE`` (ranks on this machine). 0 decodes in the iterating thread, nothing ahead.
        perturbation_rate: probability of the perturbated view.
        uneven: ``"drop"`` or ``"pad"`` for sample counts not divisible by the world size.
        shuffle: order of the epoch (`leadio.plan.shuffle`): ``"auto"`` (default) is ``"uniform"`` for a local
            set (batches as diverse as the reference's uniform shuffle) and ``"block"`` for a remote one (at
            most ``block_shards`` shards resident in the session cache at once); ``"window"`` is the version-1
            order; or a `leadio.plan.Shuffle`.
        block_shards: shards per block of the ``block`` shuffle; default: as many as fit twice in
            ``cache_bytes``.
        on_error: ``"raise"`` (default) or ``"skip"``: unreadable samples are replaced by another sample of the
            same batch, counted in ``loader.stats`` and logged.
        pin_memory: decode into pinned batch buffers (with a GPU) for fast ``non_blocking`` copies.
        persistent_workers: keep the decode threads between epochs (safe: each batch carries its epoch).
        device: ``"cuda"`` makes the dali backend decode on the GPU (``mixed``).
        root: dataset root for the staleness check and for building the collection (default: inferred).
        cache_dir, cache_bytes: session cache for a remote shard set (http(s) or fsspec URL): shards are copied
            there on first use, LRU-bounded to ``cache_bytes``; safe to share between workers, ranks and jobs.
        output: ``"compact"`` (default): leadio's batch (`leadio.decode.fields`); ``"lead"``: the reference
            loader's batch, built on ``device`` (a `leadio.lead.LeadBatches` around the loader).
        verify: compare every member read with the hash recorded at build time (a damaged shard is an error
            naming shard, sample and member, or a skipped sample with ``on_error="skip"``); ~0.2% of decoding.
    """
    config = LoaderConfig(keys=keys, batch_size=batch_size, backend=backend, world_size=world_size, rank=rank,
                          seed=seed, num_workers=num_workers, perturbation_rate=perturbation_rate, uneven=uneven,
                          shuffle=shuffle, block_shards=block_shards, on_error=on_error, pin_memory=pin_memory,
                          persistent_workers=persistent_workers, device=device, output=output)  # checks, no I/O
    shard_set, root = locate_shard_set(shard_set, collection, root)  # a dataset root -> its shard set
    ss = shard_set if isinstance(shard_set, ShardSet) else open_shard_set(shard_set, root=root, cache_dir=cache_dir,
                                                                          cache_bytes=cache_bytes, verify=verify)
    if world_size is None or rank is None:
        env_world, env_rank = world_from_env()
        world_size = env_world if world_size is None else world_size
        rank = env_rank if rank is None else rank
    if collection is None:
        coll = BucketCollection.from_json(ss.manifest["collection_buckets"], str(ss.path / "manifest.json"))
    elif isinstance(collection, BucketCollection):
        coll = collection
    else:
        if root is None and ss.base is not None:
            raise ValueError(f"collection={collection!r} is built from a dataset root, but the shard set is remote "
                             f"({ss.base}); pass root=<dataset root> or a BucketCollection")
        coll, _ = load_or_build(Path(root) if root is not None else ss.path.parent.parent, collection)
    order = resolve_shuffle(shuffle, block_shards=block_shards, remote=ss.base is not None,
                            max_shard_bytes=max((int(e["bytes"]) for e in ss.manifest["shards"]), default=1),
                            cache_bytes=ss.cache.max_bytes if ss.cache is not None else cache_bytes)
    config = replace(config, backend=_choose_backend(backend), world_size=world_size, rank=rank, shuffle=order)
    loader = LeadLoader(ss, coll, config)
    if loader.batches_in_epoch(0) == 0 and len(loader.plan(0)) > 0:
        raise ValueError(f"batch_size={batch_size} exceeds the {len(loader.plan(0))} samples rank {rank} of "
                         f"{world_size} gets in epoch 0 of {coll.name!r} ({ss.path.name}): no full batch; lower "
                         f"batch_size")
    if output == "lead":
        from leadio.lead import LeadBatches

        return LeadBatches(loader, device=device)
    return loader

