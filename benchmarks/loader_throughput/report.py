"""The outputs: the markdown table, the targets met or not, the machine's CPU, and the optional profile of
leadio cpu (where its time goes).
"""

from __future__ import annotations

import cProfile
import io
import platform
import pstats
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from benchmarks.loader_throughput.bench import BASELINE, NAME, TARGETS, Bench
from benchmarks.loader_throughput.peers import best_peer_ratios
from benchmarks.loader_throughput.rows import make_row
from benchmarks.loader_throughput.timing import Result
from leadio.decode.cpu import decode_into
from leadio.schema import DEFAULT_KEYS, member_name, members_for_keys


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
    lines += [f"leadio cpu / {t['against']} at {t['workers']} workers: {t['achieved']:.2f}x (target {t['target']}x)"
              for t in best_peer_ratios(results, BASELINE)]
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
    return out + best_peer_ratios(results, BASELINE)  # leadio cpu / the fastest peer row (issue 25)


def cpu_model() -> str:
    """The machine's CPU model name (/proc/cpuinfo, else `platform.processor`)."""
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
