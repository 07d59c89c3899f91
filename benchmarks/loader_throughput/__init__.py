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
leadio lead        (opt-in) ``open_dataset(output="lead")``, cpu backend: the   member byte ranges
                   decode threads also build LEAD's batch (pre-training keys)
lead ceiling       (opt-in) the decode ceiling plus ``to_lead_batch`` into      (in memory; member bytes)
                   reused buffers, one process (one torch thread) per worker
peers              (opt-in, ``--loaders peers``) MosaicML Streaming (local and  the peer's files (the same
                   a loopback S3 remote), LitData, Megatron Energon, DALI's     member bytes), or leadio's
                   webdataset reader; see `benchmarks.loader_throughput.peers`  tars
=================  ===========================================================  ===========================

(See `benchmarks.reference_loaders` for the reference rows and where they differ from LEAD.) The DataLoader rows
use the same batch size, ``prefetch_factor`` 2 and persistent workers; the leadio rows iterate a one-bucket
collection of exactly the chosen frames (same work per sample as the full plan); plain webdataset is given only
the shards that hold chosen samples (it cannot seek, so it streams them whole). When the benchmark has to build
the shard set it uses ``--samples-per-shard`` 32: a small root in 256 MB shards would be one or two shards, and
plain webdataset hands whole shards to workers (a real dataset has thousands). Before timing,
a few samples of every row are compared with leadio cpu (the LEAD rows with ``to_lead_batch`` of its batch,
the ``loading_*`` timing keys left out): ``rgb`` within ±1 (OpenCV, PIL and simplejpeg
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

This package: `bench` (set-up), `rows`, `peers` (issue 25's peer rows), `checks` (fairness), `timing`
(harness), `report` (table, targets, profile); the run and the command line are here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from benchmarks.loader_throughput.bench import (
    ALL_CORES,
    BASELINE,
    LEAD_ROWS,
    LOADERS,
    NAME,
    ORDER_ROWS,
    RGB_ATOL,
    Bench,
    choose_rows,
    ensure_shard_set,
    isolated,
    shard_urls,
)
from benchmarks.loader_throughput.checks import check_rows
from benchmarks.loader_throughput.peers import PEER_ROWS, expand_loaders, runnable_loaders
from benchmarks.loader_throughput.report import cpu_model, markdown_table, profile_leadio, targets_report
from benchmarks.loader_throughput.timing import (
    Result,
    measure_isolated,
    page_cache_mode,
)
from benchmarks.plot import plot_results
from benchmarks.reference_loaders import build_reference_cache, sample_refs

__all__ = ["main", "run_benchmark"]


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
    loaders = runnable_loaders(loaders)  # a peer that is not installed: one line saying why, no row
    if "reference cache" in loaders:
        rep = build_reference_cache(root, bench.samples, ss.config, bench.cache_dir, workers=build_workers)
        print(f"reference cache: {rep.built} files built, {rep.reused} reused, {rep.bytes / 1e6:.1f} MB, "
              f"{rep.seconds:.1f} s (untimed) in {bench.cache_dir}", flush=True)
    checks = isolated(check_rows, bench.subset(min(3, n)), loaders)
    for name, c in checks.items():
        print(f"check {name}: {'ok' if c['ok'] else 'MISMATCH'} on {c['samples']} samples"
              + (f" (max abs diff {c['max_abs_diff']})" if c["max_abs_diff"] else "")
              + ("" if c["ok"] else f": {'; '.join(c['problems'])}"), flush=True)
    if not all(c["ok"] for c in checks.values()):
        raise RuntimeError("rows do not deliver the same tensors; not timing them (see the check lines above)")
    probe = [Path(u) for u in shard_urls(bench)]
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
        "cpu_model": cpu_model(), "python": platform.python_version(), "torch": torch.__version__,
        "platform": platform.platform(), "rgb_atol": RGB_ATOL, "reference_cache_dir": str(bench.cache_dir),
        "seconds_total": None,
    }
    table = markdown_table(results, meta)
    doc = {"meta": meta, "rows": [asdict(r) for r in results], "checks": checks, "targets": targets_report(results)}
    out_dir.mkdir(parents=True, exist_ok=True)
    if profile:
        doc["profile"] = isolated(profile_leadio, bench, out_dir)  # it forks a worker
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
                        help=f"subset of: {', '.join(LOADERS + tuple(ORDER_ROWS) + LEAD_ROWS + PEER_ROWS)} (the "
                             f"order, LEAD and peer rows are opt-in; 'peers' names every peer row, see "
                             f"benchmarks.loader_throughput.peers)")
    parser.add_argument("--cold", action="store_true",
                        help="drop the WHOLE MACHINE's page cache (echo 3 > /proc/sys/vm/drop_caches, root only) "
                             "before each timed pass; it slows every other process on the machine. Default: warm")
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
    loaders = expand_loaders([x.strip() for x in args.loaders.split(",") if x.strip()])
    known = LOADERS + tuple(ORDER_ROWS) + LEAD_ROWS + PEER_ROWS
    unknown = [x for x in loaders if x not in known]
    if unknown:
        parser.error(f"unknown loaders {unknown}; choose from {', '.join(known)} or peers")
    if args.passes < 1:
        parser.error("--passes must be >= 1")
    command = "python -m benchmarks.loader_throughput " + " ".join(sys.argv[1:] if argv is None else argv)
    run_benchmark(args.root, workers=args.workers, samples=args.samples, passes=args.passes,
                  batch_size=args.batch_size, out_dir=args.out, loaders=loaders, warm=not args.cold,
                  build_workers=args.build_workers, samples_per_shard=args.samples_per_shard,
                  cache_dir=args.cache_dir, profile=args.profile, command=command)
    return 0
