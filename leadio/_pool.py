"""Process pools that are safe to start from a process that already runs threads (zarr's I/O loop, tqdm),
and that do not outlive the process that started them.

Forking a process whose other threads hold locks can deadlock the child; "forkserver" starts workers from
a clean single-threaded server instead, at the cost of importing the worker's module once per worker.

A pool's workers are children of the fork server, not of the process that owns the pool, so when that owner
is killed (kill -9 of a build's main PID) nothing tells them: they would finish their task and then wait for
work forever, with the fork server beside them. Each worker therefore watches its owner (a pidfd, or a poll
where pidfds are missing) and, when the owner is gone, kills the fork server and exits.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor

__all__ = ["process_pool"]


def _wait_for_exit(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # no pidfd (old kernel, macOS): poll
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                pass
            time.sleep(0.5)
    select.select([fd], [], [])


def _orphan_guard(owner: int) -> None:
    def watch() -> None:
        _wait_for_exit(owner)
        parent = os.getppid()
        if parent not in (1, owner):  # the fork server: it would wait for its dead owner forever too
            with contextlib.suppress(OSError):
                os.kill(parent, signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=watch, name="leadio-orphan-guard", daemon=True).start()


def _init(owner: int, initializer, initargs) -> None:
    _orphan_guard(owner)
    if initializer is not None:
        initializer(*initargs)


def process_pool(workers: int, **kwargs) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` with ``workers`` processes started through a fork server; they exit when the
    calling process dies."""
    initializer, initargs = kwargs.pop("initializer", None), kwargs.pop("initargs", ())
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"), initializer=_init,
                               initargs=(os.getpid(), initializer, initargs), **kwargs)
