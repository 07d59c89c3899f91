"""The rows: one `Row` per way of loading (the reference loaders, plain webdataset, leadio cpu/dali and the
decode ceiling), made by `make_row`, each iterating the same samples into the same batch tensors.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.loader_throughput.bench import (
    LEAD_ROWS,
    LOADERS,
    ORDER_ROWS,
    Bench,
    ceiling_bytes,
    chosen_collection,
    shard_urls,
)
from benchmarks.reference_loaders import (
    ReferenceCacheDataset,
    ReferenceRawDataset,
    plain_webdataset,
)
from leadio.dataset import LeadLoader, open_dataset
from leadio.decode.cpu import batch_views, decode_into
from leadio.lead import LeadBatches, LeadBuffers, to_lead_batch
from leadio.schema import DEFAULT_KEYS, member_name, members_for_keys


# ----------------------------------------------------------------------------------------------- rows
def quiet_collate_warning() -> None:
    """Silence torch's warning about wrapping read-only arrays (in this process and the workers it forks)."""
    # PIL and np.frombuffer give read-only arrays; torch warns once per worker when it wraps them (harmless here)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


class Row:
    """One loader at one worker count. ``run_pass()`` loads every chosen sample once."""

    name: str = ""
    storage: str = ""
    storage_bytes: int = 0

    def run_pass(self) -> tuple[float, list[int]]:
        """Load every chosen sample once: (wall seconds, catalog rows delivered)."""
        raise NotImplementedError

    def worker_pids(self) -> list[int]:
        """The row's worker processes (known once a pass has run)."""
        return []

    def close(self) -> None:
        """Stop the row's worker processes."""


class LoaderRow(Row):
    """A row whose passes iterate a torch DataLoader (or a leadio loader) with persistent workers."""

    def __init__(self, name: str, storage: str, storage_bytes: int, start: Callable[[], Any],
                 epoch: Callable[[Any], Iterator[dict]]):
        self.name, self.storage, self.storage_bytes = name, storage, storage_bytes
        before = {p.pid for p in psutil.Process().children()}
        self.loader = start()
        self._epoch, self._before, self._pids = epoch, before, None

    def batches(self) -> Iterator[dict]:
        """One pass over the chosen samples, batch by batch."""
        return self._epoch(self.loader)

    def run_pass(self) -> tuple[float, list[int]]:
        rows: list[int] = []
        t0 = time.perf_counter()
        for batch in self.batches():
            rows += batch["row"].tolist()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()  # the DALI row's mixed decoder runs asynchronously on the GPU
        seconds = time.perf_counter() - t0
        if self._pids is None:  # the workers exist once a pass has run
            self._pids = [p.pid for p in psutil.Process().children() if p.pid not in self._before]
        return seconds, rows

    def worker_pids(self) -> list[int]:
        return list(self._pids or [])

    def close(self) -> None:
        procs = []
        for pid in self._pids or []:
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        if isinstance(self.loader, (LeadLoader, LeadBatches)):
            self.loader.close()  # joins its decode threads
            iterator = None
        else:
            iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()  # stop the DataLoader's persistent workers now
        del self.loader, iterator
        gc.collect()
        psutil.wait_procs(procs, timeout=30)


def _data_loader(dataset: Dataset, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0,
                      prefetch_factor=2 if workers > 0 else None)


def _leadio_epoch(loader: LeadLoader) -> Iterator[dict]:
    loader.load_state_dict({**loader.state_dict(), "epoch": 0, "consumed": 0})  # replay epoch 0 from its start
    yield from loader


def _lead_epoch(loader: LeadBatches) -> Iterator[dict]:
    """`_leadio_epoch` of a LEAD loader, each batch with its catalog rows (the plan's, in order) as ``row``."""
    loader.load_state_dict({**loader.state_dict(), "epoch": 0, "consumed": 0})
    rows, b = np.asarray(loader.plan().rows), loader.batch_size
    for i, batch in enumerate(loader):
        yield {"row": torch.from_numpy(rows[i * b:(i + 1) * b]), **batch}


_CEILING: dict[str, Any] = {}  # set by the parent before it forks the ceiling's workers


def _ceiling_task(k: int) -> tuple[float, float, list[int]]:
    """Decode worker k's share of the in-memory samples in batches: (start, end, rows)."""
    c = _CEILING
    if c["lead"]:  # one core per process: torch's intra-op threads would oversubscribe the cores
        torch.set_num_threads(1)
    c["barrier"].wait()  # every task on its own process, all starting together
    t0 = time.perf_counter()
    mine = list(range(k, len(c["raw"]), c["workers"]))
    for a in range(0, len(mine), c["batch_size"]):
        idx = mine[a:a + c["batch_size"]]
        raw: dict[str, Any] = {name: [c["raw"][i][name] for i in idx] for name in c["members"]}
        raw["row"], raw["view"] = np.array([c["rows"][i] for i in idx]), np.zeros(len(idx), np.uint8)
        if "buffers" not in c:  # once per process: reused, as the loader's ring is
            c["buffers"] = {n: np.empty((c["batch_size"], *m.shape), m.dtype) for n, m in c["members"].items()}
        failures = decode_into(raw, c["members"], c["buffers"])
        if failures:
            raise RuntimeError(f"decode ceiling: samples do not decode: {failures}")
        if c["lead"]:  # the LEAD conversion of the same batch, into reused buffers as LeadBatches does
            n = len(idx)
            tensors = {name: torch.from_numpy(buf[:n]) for name, buf in c["buffers"].items()}
            batch = batch_views(tensors, c["members"], raw["row"], raw["view"])
            lead = to_lead_batch(batch, out=c.setdefault("lead_buffers", LeadBuffers())(batch))
            del lead, batch
    t1 = time.perf_counter()
    return t0, t1, [c["rows"][i] for i in mine]


class _CeilingRow(Row):
    """`decode_into` reused buffers over in-memory member bytes in W forked processes (W >= 1)."""

    def __init__(self, bench: Bench, workers: int, *, lead: bool = False):
        self.name, self.storage = "lead ceiling" if lead else "decode ceiling", "in memory (member bytes)"
        self.workers = max(1, workers)
        raw = ceiling_bytes(bench)
        self.storage_bytes = sum(len(b) for sample in raw for b in sample.values())
        ctx = mp.get_context("fork")  # as the DataLoader workers: the bytes are inherited, not sent
        _CEILING.update(raw=raw, rows=bench.rows, batch_size=bench.batch_size, workers=self.workers,
                        members=members_for_keys(DEFAULT_KEYS, bench.shard_set.layout),
                        barrier=ctx.Barrier(self.workers), lead=lead)
        before = {p.pid for p in psutil.Process().children()}
        self.pool = ctx.Pool(self.workers)
        self._pids = [p.pid for p in psutil.Process().children() if p.pid not in before]

    def run_pass(self) -> tuple[float, list[int]]:
        results = self.pool.map(_ceiling_task, range(self.workers), chunksize=1)
        return max(r[1] for r in results) - min(r[0] for r in results), [row for r in results for row in r[2]]

    def worker_pids(self) -> list[int]:
        return self._pids

    def close(self) -> None:
        self.pool.close()
        self.pool.join()
        _CEILING.clear()


def _member_bytes(bench: Bench) -> int:
    """The bytes of the chosen samples' members (normal view), as the leadio rows read them."""
    ss = bench.shard_set
    cols = [ss.members.index(member_name(m, "normal")) for m in members_for_keys(DEFAULT_KEYS, ss.layout).values()]
    return int(ss.catalog["member_size"][np.ix_(bench.rows, cols)].sum())


def make_row(bench: Bench, name: str, workers: int) -> Row:
    """The row ``name`` (one of `LOADERS`) over ``bench``'s samples with ``workers`` worker processes."""
    ss, b, cfg = bench.shard_set, bench.batch_size, bench.shard_set.config
    if name == "reference raw":
        ds = ReferenceRawDataset(bench.root, bench.samples, cfg)
        return LoaderRow(name, "raw route files", ds.storage_bytes(), lambda: _data_loader(ds, b, workers), iter)
    if name == "reference cache":
        ds = ReferenceCacheDataset(bench.samples, cfg, bench.cache_dir)
        return LoaderRow(name, "cache files", ds.storage_bytes(), lambda: _data_loader(ds, b, workers), iter)
    if name == "plain webdataset":
        urls = shard_urls(bench)
        ds = plain_webdataset(urls, {s.key: s.row for s in bench.samples}, ss.layout)
        size = sum(Path(u).stat().st_size for u in urls)
        return LoaderRow(name, "whole shards", size, lambda: _data_loader(ds, b, workers), iter)
    if name in ("leadio cpu", "leadio dali", "leadio lead") or name in ORDER_ROWS:
        if len(bench.samples) % b:
            raise ValueError(f"{len(bench.samples)} samples are not whole batches of {b}")
        coll = chosen_collection(bench.samples)
        backend = "cpu" if name == "leadio lead" else name.split()[1]
        output = "lead" if name == "leadio lead" else "compact"
        device = "cuda" if backend == "dali" and torch.cuda.is_available() else None  # mixed (nvJPEG) on a GPU

        order = ORDER_ROWS.get(name, "auto")

        def start() -> LeadLoader | LeadBatches:
            loader = open_dataset(ss, collection=coll, keys=DEFAULT_KEYS, batch_size=b, backend=backend,
                                world_size=1, rank=0, seed=0, num_workers=workers, perturbation_rate=0.0,
                                persistent_workers=True, device=device, shuffle=order, output=output)
            if output == "lead":  # the pre-training batch (the chosen frames may all have waypoints)
                loader.planning = False
            return loader

        epoch = _lead_epoch if output == "lead" else _leadio_epoch
        return LoaderRow(name, "shard member ranges", _member_bytes(bench), start, epoch)
    if name in ("decode ceiling", "lead ceiling"):
        return _CeilingRow(bench, workers, lead=name == "lead ceiling")
    from benchmarks.loader_throughput.peers import PEER_ROWS, make_peer_row  # it imports this module

    if name in PEER_ROWS:
        return make_peer_row(bench, name, workers)
    raise ValueError(f"unknown loader {name!r}; known: {LOADERS + tuple(ORDER_ROWS) + LEAD_ROWS}")
