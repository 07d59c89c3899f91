"""The loading engine: decode threads in the training process filling a ring of reused batch buffers.

Why threads. simplejpeg (libjpeg-turbo), lz4, ``os.pread`` and numpy's copies all release the GIL, so threads
of one process decode in parallel, and a decoded batch reaches the training loop with no hand-off at all: no
shared-memory segment allocated and first-touched per batch, no pickling, no queue. Nothing is forked from a
process that already runs threads (zarr's I/O loop, DALI), and a killed process leaves nothing behind (no
/dev/shm files, no orphaned workers). Worker processes decoding into a ring of shared buffers handed back by
the main process were measured against this design and were slower (README, "Benchmarks"). The trade-off is
the GIL: the Python glue of a batch (plan slicing, one read call per member, a few numpy calls) competes with
the training loop's own Python; ``benchmarks/train_stall.py`` measures what that costs the trainer.

Buffers. A ring slot is one allocation holding every member's (B, *shape) buffer; a batch's tensors are views
of it. A slot is reused only once nothing refers to it: each lending wraps the slot in a fresh numpy view
whose finalizer returns the slot to the ring, and ``torch.from_numpy`` keeps that view alive for as long as any
tensor sharing its storage lives. A batch the user keeps, or one image sliced out of it, is never overwritten.
When every slot is held the ring grows instead of blocking, so ``list(loader)`` still works; in steady state
it holds ``prefetch`` + 2 slots and allocates nothing. With a GPU the slots are pinned, and a released slot
first waits for an event recorded on the current CUDA stream when it was released, so a ``non_blocking``
host-to-device copy issued before the batch was dropped completes before the slot is written again.

Order and errors. Batches are submitted in order, at most ``prefetch`` ahead of the consumer, and taken in
order; an exception raised while loading a batch is raised by the iteration at that batch's turn. `close`
(also run when the owning loader is garbage collected) cancels what is queued and joins the threads.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from leadio.decode.cpu import torch_dtype
from leadio.schema import Member

__all__ = ["BatchRing", "DecodeThreads", "Slot", "default_workers"]

ALIGN = 64  # bytes: every member buffer starts on a cache line


def default_workers() -> int:
    """Decode threads per process: the cores this process may use, shared by the ranks on this machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, cores // max(1, local))


class Slot:
    """One batch's worth of buffer memory (a flat uint8 tensor) and its per-member views."""

    __slots__ = ("arrays", "base", "event", "tensors")

    def __init__(self, base: torch.Tensor, layout: dict[str, tuple[int, int, torch.dtype, tuple]]):
        self.base, self.event = base, None
        self.tensors = {name: base[off:off + n].view(dt).view(shape) for name, (off, n, dt, shape) in layout.items()}
        self.arrays = {name: t.numpy() for name, t in self.tensors.items()}  # what the decoders write into


class BatchRing:
    """Reused batch buffers for ``members`` at ``batch_size``; a slot is reused only when nothing refers to it.

    Args:
        members: the members a batch holds (name -> layout member).
        batch_size: samples per batch.
        pin: allocate pinned (page-locked) memory, for fast ``non_blocking`` copies to a GPU.
    """

    def __init__(self, members: dict[str, Member], batch_size: int, *, pin: bool = False):
        self.batch_size, self.pin = batch_size, pin
        self._layout, total = {}, 0
        for name, m in members.items():
            n = batch_size * m.nbytes
            self._layout[name] = (total, n, torch_dtype(m.dtype), (batch_size, *m.shape))
            total += -(-n // ALIGN) * ALIGN
        self.slot_bytes = max(total, ALIGN)
        self._free: deque[Slot] = deque()
        self._lock = threading.Lock()
        self.allocated = 0  # slots ever allocated (steady state: prefetch + 2)

    def acquire(self) -> Slot:
        """A slot nothing refers to (a new one when all are held); call `lend` or `give_back` on it."""
        with self._lock:
            slot = self._free.pop() if self._free else None  # LIFO: the most recently used is warm in cache
            if slot is None:
                self.allocated += 1
        if slot is None:
            base = torch.empty(self.slot_bytes, dtype=torch.uint8, pin_memory=self.pin)
            return Slot(base, self._layout)
        if slot.event is not None:  # a copy to the GPU may still be reading it
            slot.event.synchronize()
            slot.event = None
        return slot

    def lend(self, slot: Slot) -> dict[str, torch.Tensor]:
        """The slot's member buffers as tensors for the user; the slot returns to the ring when the last tensor
        sharing their storage is gone."""
        view = slot.base.numpy().view()  # a fresh object: it lives exactly as long as the lent storage
        weakref.finalize(view, self._release, slot).atexit = False
        lent = torch.from_numpy(view)
        return {name: lent[off:off + n].view(dt).view(shape) for name, (off, n, dt, shape) in self._layout.items()}

    def give_back(self, slot: Slot) -> None:
        """Return a slot that was never lent (its batch failed)."""
        with self._lock:
            self._free.append(slot)

    def _release(self, slot: Slot) -> None:
        if self.pin and torch.cuda.is_initialized():
            slot.event = torch.cuda.Event()
            slot.event.record()  # on the current stream, after the copies the user issued
        self.give_back(slot)


class DecodeThreads:
    """``workers`` threads running ``fn(item)`` at most ``prefetch`` items ahead of the consumer, in order.

    ``workers=0`` runs ``fn`` in the caller's thread, one item at a time. The threads start with the first
    iteration and persist until `close`.
    """

    def __init__(self, workers: int, prefetch: int):
        if workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {workers}")
        self.workers, self.prefetch = workers, max(prefetch, workers, 1)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """``fn(item)`` for each item, in order; the first exception is raised at its item's turn."""
        if self.workers == 0:
            for item in items:
                yield fn(item)
            return
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="leadio-decode")
            pool = self._pool
        pending: deque[Future] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= self.prefetch:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:  # abandoned mid-epoch: queued items are dropped, running ones finish unseen
                f.cancel()

    def close(self) -> None:
        """Cancel queued work and join the threads (a later `map` starts new ones)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    @property
    def threads(self) -> list[threading.Thread]:
        """The live decode threads."""
        pool = self._pool
        return [t for t in (getattr(pool, "_threads", ()) if pool else ()) if t.is_alive()]

