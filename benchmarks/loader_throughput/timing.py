"""The timing harness: the page-cache mode (warm unless asked and allowed), one row measured in a fresh
process, warm-up and timed passes, peak memory of the row's processes.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.loader_throughput.bench import Bench, isolated, shard_urls
from benchmarks.loader_throughput.rows import make_row, quiet_collate_warning


# ----------------------------------------------------------------------------------------------- timing
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
    """`measure` in a fresh process (see `isolated`), so no row inherits another's state."""
    return isolated(measure, bench, name, workers, **kwargs)


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


def measure(bench: Bench, name: str, workers: int, *, passes: int, warmup: int = 1, cold: bool = False) -> Result:
    """Warm-up then ``passes`` timed passes of row ``name`` in this process; medians, MB/s and memory."""
    reset = _reset_peak_rss()
    notes = []
    with warnings.catch_warnings():
        quiet_collate_warning()  # forked workers inherit the filter
        times, peaks, storage, size = _timed_passes(bench, name, workers, passes, warmup, cold)
    median = float(np.median(times))
    if name == "plain webdataset" and len(shard_urls(bench)) < workers:
        notes.append(f"only {len(shard_urls(bench))} shard(s) hold the samples: plain webdataset gives whole shards "
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
