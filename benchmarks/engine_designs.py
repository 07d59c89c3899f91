"""The two loading-engine designs of issue 10, side by side: ``python -m benchmarks.engine_designs --root R``.

(a) threads     leadio's engine: `open_dataset(backend="cpu", num_workers=W)`, W decode threads in this
                process filling a ring of reused batch buffers (`leadio.engine`).
(b) processes   W forked worker processes decoding into a ring of slots in one anonymous shared mapping,
                allocated once; the main process hands each slot back after use (a prototype of that
                design: the same read and decode code, slot numbers through pipes, no arrays pickled).
ceiling         one thread decoding the member bytes already in memory into a reused buffer; times the cores
                it is the decode ceiling of the machine, and with W threads it is what threads can reach.

Every row loads the benchmark's samples (the first ``--samples`` of the pretrain set's epoch-0 plan, normal
view, batch 16, as `benchmarks.loader_throughput`). The rows alternate round by round so that load from
other processes hits them alike; each round reports its rates and ratios, then the medians of the ratios.
"""

from __future__ import annotations

import argparse
import mmap
import multiprocessing as mp
import os
import threading
import time
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np

from benchmarks.loader_throughput.bench import choose_rows, chosen_collection, ensure_shard_set
from benchmarks.reference_loaders import sample_refs
from leadio.batch_reader import BatchReader
from leadio.dataset import open_dataset
from leadio.decode.cpu import CpuBackend, decode_into

_STATE: dict = {}  # set before forking the (b) workers: they inherit it


def _slot_arrays(buf, members: dict, batch: int) -> dict[str, np.ndarray]:
    out, off = {}, 0
    for name, m in members.items():
        out[name] = np.frombuffer(buf, np.dtype(m.dtype), batch * m.nbytes // np.dtype(m.dtype).itemsize,
                                  off).reshape(batch, *m.shape)
        off += -(-batch * m.nbytes // 64) * 64
    return out


def _slot_bytes(members: dict, batch: int) -> int:
    return sum(-(-batch * m.nbytes // 64) * 64 for m in members.values())


def _fill(b: int, arrays: dict) -> None:
    s = _STATE
    sl = slice(b * s["batch"], (b + 1) * s["batch"])
    raw, failures = s["reader"].read_raw(s["rows"][sl], s["views"][sl])
    if decode_into(raw, s["members"], arrays, failures):
        raise RuntimeError(f"batch {b} does not decode")


def _worker(tasks, results) -> None:
    while (task := tasks.recv()) is not None:
        b, k = task
        _fill(b, _STATE["slots"][k])
        results.send((b, k))


class ProcessRing:
    """Design (b): W forked workers, K slots of one shared anonymous mapping, slots handed back after use."""

    def __init__(self, workers: int, slots: int):
        s = _STATE
        self.mapping = mmap.mmap(-1, slots * s["slot_bytes"])  # MAP_SHARED | MAP_ANONYMOUS: no /dev/shm file
        s["slots"] = [_slot_arrays(memoryview(self.mapping)[k * s["slot_bytes"]:(k + 1) * s["slot_bytes"]],
                                   s["members"], s["batch"]) for k in range(slots)]
        ctx = mp.get_context("fork")
        self.pipes = [ctx.Pipe() for _ in range(workers)]  # (main end, worker end) per worker, both directions
        self.procs = [ctx.Process(target=_worker, args=(w, w), daemon=True) for _, w in self.pipes]
        for p in self.procs:
            p.start()
        self.slots, self.workers = slots, workers

    def run_pass(self) -> int:
        nb, free, done, sent, nxt, seen = _STATE["batches"], list(range(self.slots)), {}, 0, 0, 0
        while nxt < nb:
            while free and sent < nb and sent - nxt < 2 * self.workers:
                self.pipes[sent % self.workers][0].send((sent, free.pop()))
                sent += 1
            while nxt not in done:
                for conn in wait([m for m, _ in self.pipes]):
                    b, k = conn.recv()
                    done[b] = k
            k = done.pop(nxt)
            seen += int(_STATE["slots"][k]["targets"].shape[0])  # the consumer uses the batch, then hands it back
            free.append(k)
            nxt += 1
        return seen

    def close(self) -> None:
        for m, _ in self.pipes:
            m.send(None)
        for p in self.procs:
            p.join()


def _ceiling(raws: list[dict], buffers: list[dict], threads: int) -> None:
    def run(k: int) -> None:
        for raw in raws[k::threads]:
            decode_into(raw, _STATE["members"], buffers[k])

    if threads == 1:
        run(0)
        return
    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    batch, w, cores = 16, args.workers, os.cpu_count() or 1
    ss = ensure_shard_set(args.root, workers=w, samples_per_shard=32)
    samples = sample_refs(ss, choose_rows(ss, args.samples // batch * batch))
    loader = open_dataset(ss, collection=chosen_collection(samples), batch_size=batch, backend="cpu",
                          num_workers=w, perturbation_rate=0.0, seed=0, world_size=1, rank=0)
    plan = loader.plan(0)
    # the loader's read step, built from its public parts (the (b) workers and the ceiling read with it too)
    reader = BatchReader(ss, loader.members, CpuBackend(batch, "cpu", 0), on_error="raise")
    _STATE.update(reader=reader, members=loader.members, rows=plan.rows, views=plan.views, batch=batch,
                  batches=len(plan) // batch, slot_bytes=_slot_bytes(loader.members, batch))
    ring = ProcessRing(w, 2 * w + 2)  # forked before this process starts decode threads
    n = _STATE["batches"] * batch
    raws = [_STATE["reader"].read_raw(plan.rows[i * batch:(i + 1) * batch], plan.views[i * batch:(i + 1) * batch])[0]
            for i in range(_STATE["batches"])]
    buffers = [{k: np.empty((batch, *m.shape), m.dtype) for k, m in loader.members.items()} for _ in range(w)]

    def threads_pass() -> int:
        loader.load_state_dict({**loader.state_dict(), "epoch": 0, "consumed": 0})
        return sum(len(b["row"]) for b in loader)

    rows = {"ceiling 1 thread": lambda: _ceiling(raws, buffers, 1),
            f"ceiling {w} threads": lambda: _ceiling(raws, buffers, w),
            f"(a) threads, {w}": threads_pass, f"(b) processes, {w}": ring.run_pass}
    for fn in rows.values():
        fn()  # warm-up: threads and workers start, the page cache fills
    rates: dict[str, list[float]] = {k: [] for k in rows}
    print(f"{n} samples, batch {batch}, {w} workers, {cores} cores, {args.rounds} rounds (samples/s)")
    for r in range(args.rounds):
        for name, fn in rows.items():
            t0 = time.perf_counter()
            fn()
            rates[name].append(n / (time.perf_counter() - t0))
        print(f"round {r}: " + " | ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()), flush=True)
    ring.close()
    one = np.array(rates["ceiling 1 thread"])
    print(f"\nmedian ratios over {args.rounds} rounds (each against the same round's rows):")
    for name in list(rows)[1:]:
        x = np.array(rates[name])
        print(f"  {name:22s} {np.median(x):7.0f}/s  = {np.median(x / (cores * one)):5.1%} of the decode ceiling "
              f"({cores} x 1 thread), {np.median(x / np.array(rates[f'ceiling {w} threads'])):5.1%} of "
              f"{w} threads in memory")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
