"""Process pools that are safe to start from a process that already runs threads (zarr's I/O loop, tqdm).

Forking a process whose other threads hold locks can deadlock the child; "forkserver" starts workers from
a clean single-threaded server instead, at the cost of importing the worker's module once per worker.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

__all__ = ["process_pool"]


def process_pool(workers: int, **kwargs) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` with ``workers`` processes started through a fork server."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"), **kwargs)
