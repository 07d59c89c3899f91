"""What every row shares: the constants of the benchmark, the `Bench` (shard set, chosen samples, batch size),
the shard set it opens or builds, and `isolated`, which runs a function in a process forked from the fork server.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.reference_loaders import SampleRef
from leadio.buckets.collection import Bucket, BucketCollection
from leadio.dataset import open_dataset
from leadio.format.config import dataset_config_for_root
from leadio.plan import Shuffle
from leadio.schema import DEFAULT_KEYS, member_name, members_for_keys
from leadio.shard.build import build_shard_set, shard_set_dir
from leadio.shard.shardset import ShardSet, ShardSetError, open_shard_set

LOADERS = ("reference raw", "reference cache", "plain webdataset", "leadio cpu", "leadio dali", "decode ceiling")
#: opt-in rows (``--loaders``): leadio cpu reading the same samples in another epoch order, for the read cost of
#: the order (the "leadio cpu" row is the default order, uniform on a local set; see `leadio.plan.shuffle`)
ORDER_ROWS = {"leadio cpu block order": Shuffle("block", block_shards=4),
              "leadio cpu shard-local order": Shuffle("block", block_shards=1)}
#: opt-in rows (``--loaders``), issue 24: ``open_dataset(output="lead")`` (the decode threads build the LEAD batch),
#: and its in-memory ceiling (decode + `to_lead_batch` of the member bytes in W forked processes); checked against
#: `to_lead_batch` of leadio cpu's batch
LEAD_ROWS = ("leadio lead", "lead ceiling")
BASELINE = "leadio cpu"
#: the project's targets on the same cores: leadio cpu / row >= x (for the ceiling: leadio cpu / ceiling >= x)
TARGETS = {"reference raw": 30.0, "reference cache": 12.0, "plain webdataset": 1.5, "decode ceiling": 0.8,
           "decode ceiling, all cores": 0.85}
#: derived row: the cores x the 1-process ceiling of the same run, compared with leadio cpu at that many workers
ALL_CORES = "decode ceiling, all cores"
RGB_ATOL = 1
COLLECTION = "full_pretrain"
NAME = "loader_throughput"
MODULE = "benchmarks.loader_throughput"  # also when run as __main__: pickled functions must name this module


# ----------------------------------------------------------------------------------------------- set-up
@dataclass
class Bench:
    """What every row shares: the shard set, the chosen samples (in plan order) and the batch size."""

    root: Path
    shard_set: ShardSet
    samples: list[SampleRef]
    batch_size: int
    cache_dir: Path

    @property
    def rows(self) -> list[int]:
        return [s.row for s in self.samples]

    def subset(self, n: int) -> Bench:
        """The same bench over its first ``n`` samples, in one batch."""
        return Bench(self.root, self.shard_set, self.samples[:n], n, self.cache_dir)


def isolated(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a fresh process forked from the fork server (which has imported this module and
    run nothing else). Whatever forks DataLoader workers runs there: a process that has read a LAZ file holds
    lazrs' thread pool, and workers forked from it hang on their first LAZ read; DALI's threads and memory pools
    would likewise leak from one row into the next (and into the memory its forked workers report)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([MODULE])  # the server imports this module once (if this process starts it)
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(_call_forking, fn, *args, **kwargs).result()


def _call_forking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    # A fork-server child inherits "forkserver" as its default start method; the rows' workers are forked from
    # this process instead, as in a training script (the DataLoader's default on Linux).
    mp.set_start_method("fork", force=True)
    return fn(*args, **kwargs)


def ensure_shard_set(root: Path, *, workers: int, samples_per_shard: int | None) -> ShardSet:
    """Open ``root``'s pretrain shard set; build it first when it is missing, unfinished or stale."""
    path = shard_set_dir(root, COLLECTION, dataset_config_for_root(root))
    try:
        return open_shard_set(path, root=root)
    except ShardSetError as e:
        print(f"building the {COLLECTION} shard set ({e})", flush=True)
    print(isolated(_build_set, root, workers, samples_per_shard), flush=True)  # LAZ reads stay out of here
    return open_shard_set(path, root=root)


def _build_set(root: Path, workers: int, samples_per_shard: int | None) -> str:
    return build_shard_set(root, COLLECTION, workers=workers, samples_per_shard=samples_per_shard,
                           progress=False).summary()


def choose_rows(shard_set: ShardSet, n: int) -> np.ndarray:
    """The first ``n`` catalog rows of the set's epoch-0 plan (seed 0, one rank, perturbation_rate 0)."""
    loader = open_dataset(shard_set, backend="cpu", batch_size=1, world_size=1, rank=0, seed=0,
                          perturbation_rate=0.0, num_workers=0)
    rows = loader.plan(0).rows
    if n > len(rows):
        raise ValueError(f"--samples {n} exceeds the {len(rows)} samples of {shard_set.path.name}'s epoch-0 plan; "
                         f"ask for fewer or generate more routes")
    return rows[:n].copy()


def chosen_collection(samples: Sequence[SampleRef]) -> BucketCollection:
    """A one-bucket collection of exactly these frames: leadio's epoch over it is these samples (plan order)."""
    members: dict[str, list[int]] = {}
    for s in samples:
        members.setdefault(s.route, []).append(s.frame)
    return BucketCollection(name="benchmark-chosen", buckets=[Bucket("chosen", members)], builder="benchmark",
                            params={}, routes={})


def ceiling_bytes(bench: Bench) -> list[dict[str, bytes]]:
    """The normal view's member bytes of every chosen sample, read with `ShardSet.read_member_bytes`."""
    ss = bench.shard_set
    members = members_for_keys(DEFAULT_KEYS, ss.layout)
    return [{name: ss.read_member_bytes(s.row, member_name(m, "normal")) for name, m in members.items()}
            for s in bench.samples]


def shard_urls(bench: Bench) -> list[str]:
    """The paths of the shards that hold the chosen samples, in shard order."""
    ss = bench.shard_set
    shards = sorted({int(ss.catalog["shard"][r]) for r in bench.rows})
    return [str(ss.shard_path(k)) for k in shards]
