"""Loader throughput: leadio beside the reference ways of loading LEAD samples, plain webdataset and the ceiling.

    python -m benchmarks.loader_throughput --root R [--workers 1,2] [--samples N] [--passes 3] [--out DIR]
    python -m benchmarks.loader_throughput --root R --quick        # make demo: N=32, 1 pass, 2 workers
    python -m benchmarks.loader_throughput --root R --profile      # + where leadio cpu's time goes

Every row loads the same N samples (the first N of the ``full_pretrain`` shard set's epoch-0 plan, drawn with
perturbation_rate 0 so every row reads the normal view) into the same batch tensors, with the same batch size
and the same number of workers (DataLoader worker processes; leadio's decode threads; 0 = in the main thread):

=================  ===========================================================  ===========================
row                what it does per sample                                      bytes counted as read
=================  ===========================================================  ===========================
reference raw      LEAD's loader without caches: route files -> targets         the route files
reference cache    LEAD's persistent cache: lzma pickle -> PNG/JPEG decodes     the cache files
plain webdataset   ``WebDataset(shards)`` + ``select`` by key + PIL/lz4 decode  whole tars streamed
leadio cpu         ``open_dataset(backend="cpu")``: W decode threads            member byte ranges
leadio dali        ``open_dataset(backend="dali")``: ``mixed`` on a GPU, else   member byte ranges
                   CPU operators fed by W decode threads
decode ceiling     the member bytes already in memory, decoded into a reused    (in memory; member bytes)
                   buffer, one process per worker: the best any loader can do
=================  ===========================================================  ===========================

(See `benchmarks.reference_loaders` for the reference rows and where they differ from LEAD.) The DataLoader rows
use the same batch size, ``prefetch_factor`` 2 and persistent workers; the leadio rows iterate a one-bucket
collection of exactly the chosen frames (same work per sample as the full plan); plain webdataset is given only
the shards that hold chosen samples (it cannot seek, so it streams them whole). When the benchmark has to build
the shard set it uses ``--samples-per-shard`` 32: a small root in 256 MB shards would be one or two shards, and
plain webdataset hands whole shards to workers (a real dataset has thousands). Before timing,
a few samples of every row are compared with leadio cpu: ``rgb`` within ±1 (OpenCV, PIL and simplejpeg
are all libjpeg-turbo builds, but nothing promises the same IDCT), everything else exact (NaN == NaN). Each row
then runs an untimed warm-up pass (workers start, the page cache fills) and ``--passes`` timed passes; the
medians are reported. Only with ``--cold``, and where the OS allows (root, and dropping the page cache visibly
empties it), the machine's whole page cache is dropped before every timed pass and the run says "cold";
otherwise "warm" and why (a demo or a default run never touches the machine's state). Each row runs in a fresh
process forked from a fork server that has only imported this module, so no row inherits another's threads or
memory. Worker memory is the largest peak RSS (the kernel's VmHWM) over the row's worker processes (a forked
worker counts the pages it shares with its parent; the baseline is the same for every row); "main" is the
measuring process's peak (leadio's decode threads run there). The derived row "decode ceiling, all cores" is
the cores x the 1-process ceiling of the same run (the issue-10 target: leadio cpu >= 85% of it).

Outputs in ``--out`` (default ``benchmarks/results/``): ``loader_throughput.json``, ``loader_throughput.md``
(also printed) and ``loader_throughput.png``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import multiprocessing as mp
import os
import platform
import pstats
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.plot import plot_results
from benchmarks.reference_loaders import (
    ReferenceCacheDataset,
    ReferenceRawDataset,
    SampleRef,
    build_reference_cache,
    plain_webdataset,
    sample_refs,
)
from leadio.buckets import Bucket, BucketCollection
from leadio.dataset import LeadLoader, open_dataset
from leadio.decode.cpu import decode_batch, decode_into
from leadio.decode.fields import DEFAULT_KEYS, members_for_keys
from leadio.format import dataset_config_for_root
from leadio.plan import Shuffle
from leadio.preprocess import member_name
from leadio.shard import ShardSet, ShardSetError, build_shard_set, open_shard_set, shard_set_dir

__all__ = [
    "LOADERS",
    "TARGETS",
    "Bench",
    "Result",
    "ceiling_bytes",
    "check_rows",
    "chosen_collection",
    "choose_rows",
    "compare_samples",
    "ensure_shard_set",
    "load_samples",
    "main",
    "make_row",
    "measure",
    "measure_isolated",
    "page_cache_mode",
    "run_benchmark",
]

LOADERS = ("reference raw", "reference cache", "plain webdataset", "leadio cpu", "leadio dali", "decode ceiling")
#: opt-in rows (``--loaders``): leadio cpu reading the same samples in another epoch order, for the read cost of
#: the order (the "leadio cpu" row is the default order, uniform on a local set; see `leadio.plan.shuffle`)
ORDER_ROWS = {"leadio cpu block order": Shuffle("block", block_shards=4),
              "leadio cpu window order": Shuffle("window")}  # version 1
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


def _isolated(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
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
    print(_isolated(_build_set, root, workers, samples_per_shard), flush=True)  # LAZ reads stay out of here
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


def _member_bytes(bench: Bench) -> int:
    ss = bench.shard_set
    cols = [ss.members.index(member_name(m, "normal")) for m in members_for_keys(DEFAULT_KEYS, ss.layout).values()]
    return int(ss.catalog["member_size"][np.ix_(bench.rows, cols)].sum())


def _shard_urls(bench: Bench) -> list[str]:
    ss = bench.shard_set
    shards = sorted({int(ss.catalog["shard"][r]) for r in bench.rows})
    return [str(ss.shard_path(k)) for k in shards]


# ----------------------------------------------------------------------------------------------- rows
def _vm_hwm_mib(pid: int | str = "self") -> float | None:
    """Peak resident set (VmHWM) of a process in MiB, None where /proc cannot tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


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


class _LoaderRow(Row):
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
        if isinstance(self.loader, LeadLoader):
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


_CEILING: dict[str, Any] = {}  # set by the parent before it forks the ceiling's workers


def _ceiling_task(k: int) -> tuple[float, float, list[int]]:
    """Decode worker k's share of the in-memory samples in batches: (start, end, rows)."""
    c = _CEILING
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
    t1 = time.perf_counter()
    return t0, t1, [c["rows"][i] for i in mine]


class _CeilingRow(Row):
    """`decode_into` reused buffers over in-memory member bytes in W forked processes (W >= 1)."""

    def __init__(self, bench: Bench, workers: int):
        self.name, self.storage = "decode ceiling", "in memory (member bytes)"
        self.workers = max(1, workers)
        raw = ceiling_bytes(bench)
        self.storage_bytes = sum(len(b) for sample in raw for b in sample.values())
        ctx = mp.get_context("fork")  # as the DataLoader workers: the bytes are inherited, not sent
        _CEILING.update(raw=raw, rows=bench.rows, batch_size=bench.batch_size, workers=self.workers,
                        members=members_for_keys(DEFAULT_KEYS, bench.shard_set.layout),
                        barrier=ctx.Barrier(self.workers))
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


def make_row(bench: Bench, name: str, workers: int) -> Row:
    """The row ``name`` (one of `LOADERS`) over ``bench``'s samples with ``workers`` worker processes."""
    ss, b, cfg = bench.shard_set, bench.batch_size, bench.shard_set.config
    if name == "reference raw":
        ds = ReferenceRawDataset(bench.root, bench.samples, cfg)
        return _LoaderRow(name, "raw route files", ds.storage_bytes(), lambda: _data_loader(ds, b, workers), iter)
    if name == "reference cache":
        ds = ReferenceCacheDataset(bench.samples, cfg, bench.cache_dir)
        return _LoaderRow(name, "cache files", ds.storage_bytes(), lambda: _data_loader(ds, b, workers), iter)
    if name == "plain webdataset":
        urls = _shard_urls(bench)
        ds = plain_webdataset(urls, {s.key: s.row for s in bench.samples}, ss.layout)
        size = sum(Path(u).stat().st_size for u in urls)
        return _LoaderRow(name, "whole shards", size, lambda: _data_loader(ds, b, workers), iter)
    if name in ("leadio cpu", "leadio dali") or name in ORDER_ROWS:
        if len(bench.samples) % b:
            raise ValueError(f"{len(bench.samples)} samples are not whole batches of {b}")
        coll = chosen_collection(bench.samples)
        backend = name.split()[1]
        device = "cuda" if backend == "dali" and torch.cuda.is_available() else None  # mixed (nvJPEG) on a GPU

        order = ORDER_ROWS.get(name, "auto")

        def start() -> LeadLoader:
            return open_dataset(ss, collection=coll, keys=DEFAULT_KEYS, batch_size=b, backend=backend,
                                world_size=1, rank=0, seed=0, num_workers=workers, perturbation_rate=0.0,
                                persistent_workers=True, device=device, shuffle=order)

        return _LoaderRow(name, "shard member ranges", _member_bytes(bench), start, _leadio_epoch)
    if name == "decode ceiling":
        return _CeilingRow(bench, workers)
    raise ValueError(f"unknown loader {name!r}; known: {LOADERS + tuple(ORDER_ROWS)}")


# ----------------------------------------------------------------------------------------------- checks
def load_samples(bench: Bench, name: str, workers: int = 1) -> dict[int, dict[str, np.ndarray]]:
    """Every chosen sample as row ``name`` delivers it: catalog row -> key -> array.

    Loaders run with ``workers`` DataLoader workers (default 1: the reference rows read LAZ files, which must
    not happen in this process before it forks the timed rows' workers); the ceiling decodes here."""
    if name == "decode ceiling":
        members = members_for_keys(DEFAULT_KEYS, bench.shard_set.layout)
        raw_samples = ceiling_bytes(bench)
        raw: dict[str, Any] = {n: [s[n] for s in raw_samples] for n in members}
        raw["row"], raw["view"] = np.array(bench.rows), np.zeros(len(bench.rows), np.uint8)
        batch, failures = decode_batch(raw, members)
        if failures:
            raise RuntimeError(f"decode ceiling: samples do not decode: {failures}")
        batches = [{k: torch.from_numpy(v) for k, v in batch.items()}]
    else:
        with warnings.catch_warnings():
            _quiet_collate_warning()
            row = make_row(bench, name, workers)
            assert isinstance(row, _LoaderRow)
            try:
                batches = list(row.batches())
            finally:
                row.close()
    out: dict[int, dict[str, np.ndarray]] = {}
    for batch in batches:
        for i, r in enumerate(batch["row"].tolist()):
            out[int(r)] = {k: v[i].cpu().numpy() for k, v in batch.items() if isinstance(v, torch.Tensor)}
    return out


def compare_samples(got: dict[int, dict[str, np.ndarray]], ref: dict[int, dict[str, np.ndarray]]
                    ) -> tuple[bool, dict[str, float], list[str]]:
    """Compare per-sample arrays with the reference: (ok, max abs diff per key, problems).

    ``rgb`` may differ by `RGB_ATOL`; everything else must be equal (same dtype and shape, NaN == NaN)."""
    problems: list[str] = []
    diffs: dict[str, float] = {}
    if set(got) != set(ref):
        problems.append(f"samples differ: missing {sorted(set(ref) - set(got))}, extra {sorted(set(got) - set(ref))}")
    for r in sorted(set(got) & set(ref)):
        a, b = got[r], ref[r]
        if set(a) != set(b):
            problems.append(f"row {r}: keys differ: missing {sorted(set(b) - set(a))}, extra {sorted(set(a) - set(b))}")
        for k in sorted(set(a) & set(b)):
            x, y = a[k], b[k]
            if x.dtype != y.dtype or x.shape != y.shape:
                problems.append(f"row {r} {k}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
                continue
            xf, yf = x.astype(np.float64), y.astype(np.float64)
            nan = np.isnan(xf) | np.isnan(yf)
            if not np.array_equal(np.isnan(xf), np.isnan(yf)):
                problems.append(f"row {r} {k}: NaN in different places")
            d = float(np.abs(xf - yf)[~nan].max(initial=0.0))
            diffs[k] = max(diffs.get(k, 0.0), d)
            if d > (RGB_ATOL if k == "rgb" else 0):
                problems.append(f"row {r} {k}: max abs diff {d}")
    return not problems, {k: v for k, v in diffs.items() if v}, problems


def check_rows(bench: Bench, names: Sequence[str]) -> dict[str, dict]:
    """Compare every row's tensors for ``bench``'s samples with leadio cpu's: name -> {ok, max_abs_diff, ...}."""
    ref = load_samples(bench, BASELINE)
    report = {}
    for name in names:
        ok, diffs, problems = compare_samples(load_samples(bench, name), ref)
        report[name] = {"ok": ok, "samples": len(ref), "max_abs_diff": diffs, "problems": problems[:10]}
    return report


# ----------------------------------------------------------------------------------------------- timing
def _meminfo_cached_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Cached:"):
            return int(line.split()[1]) * 1024
    raise OSError("/proc/meminfo has no Cached line")


def drop_page_cache() -> None:
    """``sync; echo 3 > /proc/sys/vm/drop_caches`` (root only)."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def page_cache_mode(probe: Sequence[Path], want_cold: bool = True) -> tuple[str, str]:
    """("cold", how it was checked) when dropping the page cache works here, else ("warm", why not).

    Reads the ``probe`` files, drops the cache and checks /proc/meminfo's ``Cached`` fell by at least half of
    their size (a container may accept the write and do nothing)."""
    if not want_cold:
        return "warm", "the machine's page cache is left alone (--cold drops it before each pass)"
    if not sys.platform.startswith("linux"):
        return "warm", f"dropping the page cache is Linux-only (this is {sys.platform})"
    if os.geteuid() != 0:
        return "warm", "not root: cannot write /proc/sys/vm/drop_caches"
    size = 0
    for p in probe:
        size += len(Path(p).read_bytes())
    try:
        before = _meminfo_cached_bytes()
        drop_page_cache()
        after = _meminfo_cached_bytes()
    except OSError as e:
        return "warm", f"cannot drop the page cache ({type(e).__name__}: {e})"
    fell = before - after
    if fell < size / 2:
        return "warm", (f"drop_caches was accepted but Cached fell by only {fell / 1e6:.1f} MB after reading "
                        f"{size / 1e6:.1f} MB (a container or VM that ignores it)")
    return "cold", (f"page cache dropped before each timed pass (checked: Cached fell by {fell / 1e6:.0f} MB after "
                    f"reading {size / 1e6:.0f} MB); a virtual disk may still be cached by the host")


def measure_isolated(bench: Bench, name: str, workers: int, **kwargs: Any) -> Result:
    """`measure` in a fresh process (see `_isolated`), so no row inherits another's state."""
    return _isolated(measure, bench, name, workers, **kwargs)


@dataclass
class Result:
    """One row at one worker count."""

    loader: str
    workers: int
    samples: int
    pass_seconds: list[float]
    samples_per_s: float
    mb_per_s: float
    storage: str
    storage_bytes: int
    worker_peak_rss_mib: float | None
    main_peak_rss_mib: float | None
    ratio_to_leadio_cpu: float | None = None
    notes: list[str] = field(default_factory=list)


def _quiet_collate_warning() -> None:
    # PIL and np.frombuffer give read-only arrays; torch warns once per worker when it wraps them (harmless here)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def measure(bench: Bench, name: str, workers: int, *, passes: int, warmup: int = 1, cold: bool = False) -> Result:
    """Warm-up then ``passes`` timed passes of row ``name`` in this process; medians, MB/s and memory."""
    reset = _reset_peak_rss()
    notes = []
    with warnings.catch_warnings():
        _quiet_collate_warning()  # forked workers inherit the filter
        times, peaks, storage, size = _timed_passes(bench, name, workers, passes, warmup, cold)
    median = float(np.median(times))
    if name == "plain webdataset" and len(_shard_urls(bench)) < workers:
        notes.append(f"only {len(_shard_urls(bench))} shard(s) hold the samples: plain webdataset gives whole shards "
                     f"to workers, so some of the {workers} workers idle")
    return Result(name, workers, len(bench.samples), times, len(bench.samples) / median, size / median / 1e6,
                  storage, size, max(peaks, default=None), _vm_hwm_mib() if reset else None, notes=notes)


def _timed_passes(bench: Bench, name: str, workers: int, passes: int, warmup: int, cold: bool
                  ) -> tuple[list[float], list[float], str, int]:
    """(seconds of each timed pass, peak RSS of each worker, what is read, bytes read per pass)."""
    row = make_row(bench, name, workers)
    try:
        for _ in range(warmup):
            _, rows = row.run_pass()
            if sorted(rows) != sorted(bench.rows):
                raise RuntimeError(f"{name}: a pass delivered {len(rows)} samples, not the {len(bench.rows)} chosen")
        times = []
        for _ in range(passes):
            if cold:
                drop_page_cache()
            seconds, rows = row.run_pass()
            if sorted(rows) != sorted(bench.rows):
                raise RuntimeError(f"{name}: a pass delivered {len(rows)} samples, not the {len(bench.rows)} chosen")
            times.append(seconds)
        peaks = [m for m in map(_vm_hwm_mib, row.worker_pids()) if m is not None]
    finally:
        row.close()
    return times, peaks, row.storage, row.storage_bytes


# ----------------------------------------------------------------------------------------------- output
def _fmt(v: float | None, spec: str = ".0f") -> str:
    return "n/a" if v is None else format(v, spec)


def markdown_table(results: Sequence[Result], meta: dict) -> str:
    """The results as a markdown table plus the run's conditions."""
    lines = [
        f"Loader throughput: {meta['samples']} samples, batch {meta['batch_size']}, median of {meta['passes']} "
        f"pass(es), {meta['cache_mode']} page cache, {meta['cpu_count']} cores ({meta['cpu_model']})",
        "",
        "| loader | workers | samples/s | MB/s read | read from | worker peak RSS MiB | main peak RSS MiB "
        "| × leadio cpu |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.loader} | {r.workers} | {r.samples_per_s:.1f} | {r.mb_per_s:.1f} | {r.storage} "
                     f"| {_fmt(r.worker_peak_rss_mib)} "
                     f"| {_fmt(r.main_peak_rss_mib)} | {_fmt(r.ratio_to_leadio_cpu, '.2f')} |")
    lines.append("")
    lines.append(f"Page cache: {meta['cache_mode']} ({meta['cache_why']}).")
    notes = sorted({n for r in results for n in r.notes})
    lines += [f"Note: {n}." for n in notes]
    return "\n".join(lines) + "\n"


def targets_report(results: Sequence[Result]) -> list[dict]:
    """leadio cpu against each target, per worker count."""
    out = []
    by = {(r.loader, r.workers): r for r in results}
    for (loader, w), r in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        base = by.get((BASELINE, w))
        if loader not in TARGETS or base is None:
            continue
        achieved = base.samples_per_s / r.samples_per_s
        out.append({"workers": w, "against": loader, "target": TARGETS[loader], "achieved": round(achieved, 3),
                    "met": achieved >= TARGETS[loader]})
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _step_times(bench: Bench, rounds: int = 3) -> dict[str, float]:
    """In-process line timing, ms per sample: the reads a leadio worker does (`ShardSet.read_member_bytes` of
    every member), `decode_into` a reused buffer, and its JPEG share; CPU time of this thread (a busy machine
    slows the wall clock, not this)."""
    ss, b = bench.shard_set, bench.batch_size
    members = members_for_keys(DEFAULT_KEYS, ss.layout)
    jpeg = {k: m for k, m in members.items() if m.encoding == "jpeg"}
    totals = dict.fromkeys(("read", "decode", "decode_jpeg"), 0.0)
    buffers = {n: np.empty((b, *m.shape), m.dtype) for n, m in members.items()}  # reused, as the engine's ring
    for r in range(rounds + 1):  # round 0 warms up
        for a in range(0, len(bench.samples), b):
            rows = bench.rows[a:a + b]
            t0 = time.thread_time()
            raw: dict[str, Any] = {n: [ss.read_member_bytes(i, member_name(m, "normal")) for i in rows]
                                   for n, m in members.items()}
            raw["row"], raw["view"] = np.array(rows), np.zeros(len(rows), np.uint8)
            t1 = time.thread_time()
            decode_into(raw, members, buffers)
            t2 = time.thread_time()
            decode_into(raw, jpeg, buffers)
            t3 = time.thread_time()
            if r:
                for k, dt in (("read", t1 - t0), ("decode", t2 - t1), ("decode_jpeg", t3 - t2)):
                    totals[k] += dt
    return {k: v / (rounds * len(bench.samples)) * 1e3 for k, v in totals.items()}


def _loader_cpu(bench: Bench, workers: int) -> dict[str, float]:
    """CPU of a real leadio cpu pass with ``workers`` decode threads, ms per sample: the whole process (decode
    threads and the iterating thread); and the pass's wall time."""
    row = make_row(bench, BASELINE, workers)
    try:
        row.run_pass()  # warm-up: the threads start, the ring fills
        proc = psutil.Process()
        t0 = sum(proc.cpu_times()[:2])
        seconds, _ = row.run_pass()
        t1 = sum(proc.cpu_times()[:2])
    finally:
        row.close()
    n = len(bench.samples)
    return {"wall": seconds / n * 1e3, "process": (t1 - t0) / n * 1e3}


def profile_leadio(bench: Bench, out_dir: Path, top: int = 20, workers: int = 2) -> str:
    """Where leadio cpu's time goes (warm page cache): the process's CPU per sample with ``workers`` decode
    threads, split into read, decode (both timed in one thread, into a reused buffer) and the rest (the engine:
    batch views, the ring, handing batches between threads, the iteration), then cProfile of leadio cpu in one
    thread (0 workers). Writes the .pstats. For a per-thread view with the GIL, run py-spy (README)."""
    steps, cpu = _step_times(bench), _loader_cpu(bench, workers)
    rest = cpu["process"] - steps["read"] - steps["decode"]
    lines = [f"leadio cpu, {workers} decode threads, warm page cache, {len(bench.samples)} samples, batch "
             f"{bench.batch_size} (ms per sample; wall {cpu['wall']:.3f} ms = {1e3 / cpu['wall']:.0f} samples/s):",
             f"  process CPU {cpu['process']:6.3f} ms"]
    for k, v in (("read", steps["read"]), ("decode", steps["decode"]), ("engine + loop", rest)):
        lines.append(f"    {k:15s} {v:6.3f} ms  {v / cpu['process']:5.1%}")
    lines += [f"    (decode: JPEG {steps['decode_jpeg']:.3f} ms of it; read and decode timed in one thread, the rest "
              f"is the process's CPU minus both)"]
    row = make_row(bench, BASELINE, 0)
    try:
        row.run_pass()
        prof = cProfile.Profile()
        prof.enable()
        seconds, _ = row.run_pass()
        prof.disable()
    finally:
        row.close()
    prof.dump_stats(out_dir / f"{NAME}_leadio_cpu.pstats")
    lines.append(f"\ncProfile, leadio cpu, 0 workers: {len(bench.samples)} samples in {seconds:.2f} s")
    text = io.StringIO()
    text.write("\n".join(lines) + "\n")
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def _all_cores_ceiling(bench: Bench, results: list[Result], **kw: Any) -> Result:
    """The decode ceiling on all cores: ``os.cpu_count()`` x the single-process in-memory rate of this run."""
    one = next((r for r in results if r.loader == "decode ceiling" and r.workers == 1), None)
    if one is None:
        one = measure_isolated(bench, "decode ceiling", 1, **kw)
    cores = os.cpu_count() or 1
    return Result(ALL_CORES, cores, one.samples, [], one.samples_per_s * cores, one.mb_per_s * cores, one.storage,
                  one.storage_bytes, None, None, notes=[f"{ALL_CORES}: {cores} x the 1-process ceiling of this run "
                                                        f"({one.samples_per_s:.1f} samples/s), not measured"])


def run_benchmark(root: Path, *, workers: Sequence[int], samples: int, passes: int, batch_size: int,
                  out_dir: Path, loaders: Sequence[str] = LOADERS, warm: bool = True, warmup: int = 1,
                  build_workers: int = 2, samples_per_shard: int | None = 32, cache_dir: Path | None = None,
                  profile: bool = False, command: str = "") -> dict:
    """Run the whole benchmark and write its outputs; returns the JSON document."""
    t_start = time.perf_counter()
    root = Path(root)
    ss = ensure_shard_set(root, workers=build_workers, samples_per_shard=samples_per_shard)
    n = samples // batch_size * batch_size
    if n < batch_size:
        raise ValueError(f"--samples {samples} is less than one batch of {batch_size}")
    bench = Bench(root, ss, sample_refs(ss, choose_rows(ss, n)), batch_size,
                  Path(cache_dir) if cache_dir else root / "bench_reference_cache")
    loaders = [BASELINE] + [x for x in loaders if x != BASELINE] if BASELINE not in loaders else list(loaders)
    if "reference cache" in loaders:
        rep = build_reference_cache(root, bench.samples, ss.config, bench.cache_dir, workers=build_workers)
        print(f"reference cache: {rep.built} files built, {rep.reused} reused, {rep.bytes / 1e6:.1f} MB, "
              f"{rep.seconds:.1f} s (untimed) in {bench.cache_dir}", flush=True)
    checks = _isolated(check_rows, bench.subset(min(3, n)), loaders)
    for name, c in checks.items():
        print(f"check {name}: {'ok' if c['ok'] else 'MISMATCH'} on {c['samples']} samples"
              + (f" (max abs diff {c['max_abs_diff']})" if c["max_abs_diff"] else "")
              + ("" if c["ok"] else f": {'; '.join(c['problems'])}"), flush=True)
    if not all(c["ok"] for c in checks.values()):
        raise RuntimeError("rows do not deliver the same tensors; not timing them (see the check lines above)")
    probe = [Path(u) for u in _shard_urls(bench)]
    mode, why = page_cache_mode(probe, want_cold=not warm)
    print(f"page cache: {mode} ({why})", flush=True)
    results: list[Result] = []
    for w in workers:
        for name in loaders:
            r = measure_isolated(bench, name, w, passes=passes, warmup=warmup, cold=mode == "cold")
            results.append(r)
            print(f"  {name:17s} workers={w}: {r.samples_per_s:8.1f} samples/s {r.mb_per_s:7.1f} MB/s "
                  f"(passes {', '.join(f'{s:.2f}s' for s in r.pass_seconds)})", flush=True)
    if "decode ceiling" in loaders:
        results.append(_all_cores_ceiling(bench, results, passes=passes, warmup=warmup, cold=mode == "cold"))
    for r in results:
        base = next((b for b in results if b.loader == BASELINE and b.workers == r.workers), None)
        r.ratio_to_leadio_cpu = r.samples_per_s / base.samples_per_s if base else None
    meta = {
        "command": command, "root": str(root), "shard_set": str(ss.path), "shards": len(ss.manifest["shards"]),
        "samples": n, "batch_size": batch_size, "passes": passes, "warmup_passes": warmup,
        "workers": list(workers), "cache_mode": mode, "cache_why": why, "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(), "python": platform.python_version(), "torch": torch.__version__,
        "platform": platform.platform(), "rgb_atol": RGB_ATOL, "reference_cache_dir": str(bench.cache_dir),
        "seconds_total": None,
    }
    table = markdown_table(results, meta)
    doc = {"meta": meta, "rows": [asdict(r) for r in results], "checks": checks, "targets": targets_report(results)}
    out_dir.mkdir(parents=True, exist_ok=True)
    if profile:
        doc["profile"] = _isolated(profile_leadio, bench, out_dir)  # it forks a worker
        print(doc["profile"])
    meta["seconds_total"] = round(time.perf_counter() - t_start, 1)
    (out_dir / f"{NAME}.md").write_text(table)
    (out_dir / f"{NAME}.json").write_text(json.dumps(doc, indent=1) + "\n")
    plot_results(doc, out_dir / f"{NAME}.png")  # linear bars, ratios, machine/date/caveats caption
    print("\n" + table)
    for t in doc["targets"]:
        print(f"target leadio cpu >= {t['target']}x {t['against']} (workers={t['workers']}): "
              f"{t['achieved']:.2f}x {'met' if t['met'] else 'NOT met'}")
    print(f"wrote {out_dir / NAME}.json, .md, .png in {meta['seconds_total']} s")
    return doc


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2; got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"worker counts must be >= 0, got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loader_throughput",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, type=Path, help="dataset root (data/carla_leaderboard2)")
    parser.add_argument("--workers", type=_int_list, default=[1, 2],
                        help="worker counts (leadio: decode threads), e.g. 0,1,2")
    parser.add_argument("--samples", type=int, default=256, help="samples per pass (rounded down to whole batches)")
    parser.add_argument("--passes", type=int, default=3, help="timed passes per row (median reported)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="output folder")
    parser.add_argument("--loaders", default=",".join(LOADERS),
                        help=f"subset of: {', '.join(LOADERS + tuple(ORDER_ROWS))} (the order rows are opt-in)")
    parser.add_argument("--cold", action="store_true",
                        help="drop the WHOLE MACHINE's page cache (echo 3 > /proc/sys/vm/drop_caches, root only) "
                             "before each timed pass; it slows every other process on the machine. Default: warm")
    parser.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)  # the default; kept for old commands
    parser.add_argument("--build-workers", type=int, default=os.cpu_count() or 1,
                        help="processes for building the shard set and the reference cache (untimed)")
    parser.add_argument("--samples-per-shard", type=int, default=32,
                        help="shard size when the benchmark builds the set (small: plain webdataset needs several "
                             "shards per worker; the library default is 256 MB)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="reference cache folder (default <root>/bench_reference_cache; never LEAD's cache/)")
    parser.add_argument("--profile", action="store_true", help="also cProfile leadio cpu in one process")
    parser.add_argument("--quick", action="store_true", help="make demo: 32 samples, batch 8, 1 pass, 2 workers")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.batch_size, args.passes, args.workers = 32, 8, 1, [2]
    loaders = [x.strip() for x in args.loaders.split(",") if x.strip()]
    unknown = [x for x in loaders if x not in LOADERS and x not in ORDER_ROWS]
    if unknown:
        parser.error(f"unknown loaders {unknown}; choose from {', '.join(LOADERS + tuple(ORDER_ROWS))}")
    if args.passes < 1:
        parser.error("--passes must be >= 1")
    command = "python -m benchmarks.loader_throughput " + " ".join(sys.argv[1:] if argv is None else argv)
    run_benchmark(args.root, workers=args.workers, samples=args.samples, passes=args.passes,
                  batch_size=args.batch_size, out_dir=args.out, loaders=loaders, warm=not args.cold,
                  build_workers=args.build_workers, samples_per_shard=args.samples_per_shard,
                  cache_dir=args.cache_dir, profile=args.profile, command=command)
    return 0


if __name__ == "__main__":
    # Hand over to the importable module (see MODULE), and keep multiprocessing from re-running this file as
    # __mp_main__ in every process it starts (the fork server has the module preloaded, and runpy would warn).
    from benchmarks.loader_throughput import main as _main

    __spec__ = None
    globals().pop("__file__", None)
    raise SystemExit(_main())
