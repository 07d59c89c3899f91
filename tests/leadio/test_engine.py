"""leadio.engine: reused batch buffers are never overwritten while referenced; threads and memory end cleanly."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from leadio.dataset import open_dataset
from leadio.engine import BatchRing, DecodeThreads
from leadio.schema import Member
from leadio.shard.build import build_shard_set


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, synth_root_template) -> Path:
    root = tmp_path_factory.mktemp("engine") / "data" / "carla_leaderboard2"
    shutil.copytree(synth_root_template, root)
    return build_shard_set(root, "full_pretrain", workers=1, samples_per_shard=5, progress=False).set_dir


def _shm() -> set[str]:
    """/dev/shm entries, less the ``sem.mp-*`` locks that multiprocessing in tests running beside this one
    (pytest-xdist) creates and removes at any moment; the engine creates no multiprocessing objects."""
    names = os.listdir("/dev/shm") if os.path.isdir("/dev/shm") else []
    return {n for n in names if not n.startswith("sem.mp-")}


def _native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("leadio-decode")]


def test_ring_reuses_a_slot_only_when_no_tensor_refers_to_it():
    ring = BatchRing({"x": Member("x", "f32", "raw", "float32", (3,)), "y": Member("y", "u8", "raw", "uint8", (5,))},
                     batch_size=2)
    slot = ring.acquire()
    batch = ring.lend(slot)
    assert batch["x"].shape == (2, 3) and batch["x"].dtype == torch.float32 and batch["y"].shape == (2, 5)
    kept = batch["y"][1:]  # a view of one sample outlives the batch dict
    del batch
    other = ring.acquire()
    assert other is not slot and ring.allocated == 2  # still referenced: a new slot, never the kept one
    ring.give_back(other)
    del kept
    again = [ring.acquire(), ring.acquire()]
    assert {id(s) for s in again} == {id(slot), id(other)} and ring.allocated == 2  # both reused, none new


def test_a_kept_batch_is_unchanged_while_the_loader_runs_on(shard_dir):
    ld = open_dataset(shard_dir, batch_size=2, backend="cpu", num_workers=2, keys=["rgb", "lidar", "targets"],
                      seed=3)
    it = iter(ld)
    first = next(it)
    copy = {k: v.clone() for k, v in first.items()}
    one_image = next(it)["rgb"][0]  # only a slice of the second batch is kept
    image_copy = one_image.clone()
    later = [next(it)["row"].tolist() for _ in range(12)]  # many batches through the ring meanwhile
    for k, v in copy.items():
        torch.testing.assert_close(first[k], v, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(one_image, image_copy)
    rest = [b["row"].tolist() for b in it]
    assert len(later) + len(rest) + 2 == ld.batches_in_epoch(0) > ld.ring.allocated  # slots were reused
    assert ld.ring.allocated <= 2 * 2 + 4  # prefetch + the kept batches + the one being handed over


def test_worker_counts_and_backends_give_identical_tensors(shard_dir):
    kw = {"batch_size": 3, "seed": 1, "keys": ["rgb", "depth", "radar", "boxes", "targets"]}
    ref = list(open_dataset(shard_dir, backend="cpu", num_workers=0, **kw))
    for backend, workers in (("cpu", 1), ("cpu", 2), ("dali", 2)):
        got = list(open_dataset(shard_dir, backend=backend, num_workers=workers, **kw))  # all kept: the ring grows
        assert len(got) == len(ref) > 0
        for a, b in zip(ref, got, strict=True):
            assert set(a) == set(b)
            for key in a:
                assert a[key].shape == b[key].shape and a[key].dtype == b[key].dtype, (backend, key)
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True)


def test_errors_are_raised_at_their_batch_turn_and_the_threads_keep_serving():
    threads = DecodeThreads(2, prefetch=4)

    def load(i: int) -> int:
        if i == 3:
            raise ValueError(f"batch {i} is bad")
        return i * 10

    got = []
    with pytest.raises(ValueError, match="batch 3 is bad"):
        for x in threads.map(load, range(8)):
            got.append(x)
    assert got == [0, 10, 20]
    assert list(threads.map(load, [5, 6, 7])) == [50, 60, 70]
    assert len(threads.threads) == 2
    threads.close()
    assert threads.threads == []


@pytest.mark.parametrize("backend", ["cpu", "dali"])  # dali: its pipeline holds threads too
def test_no_threads_or_shared_memory_left_after_the_loader_is_deleted(shard_dir, backend):
    warm = open_dataset(shard_dir, batch_size=2, backend=backend, num_workers=2, keys=["rgb", "targets"])
    assert next(iter(warm))["rgb"].sum() > 0  # libraries (and torch's OpenMP pool) start lazy pools once per process
    del warm
    gc.collect()
    shm, native = _shm(), _native_threads()
    assert _decode_threads() == []
    for persistent in (True, False):
        ld = open_dataset(shard_dir, batch_size=2, backend=backend, num_workers=2, keys=["rgb", "targets"],
                          persistent_workers=persistent)
        it = iter(ld)
        batch = next(it)
        assert len(_decode_threads()) == 2  # the engine runs in this process: threads, no worker processes
        del it  # abandoned mid-epoch, batches still queued
        if not persistent:
            assert _decode_threads() == []
        del ld  # no reference cycle: the loader ends here, and with it its threads
        assert _decode_threads() == []
        assert batch["rgb"].sum() > 0  # a batch held past the loader's end stays valid
        del batch
    gc.collect()
    deadline = time.monotonic() + 5  # a joined thread's OS thread may take a moment to exit
    while _native_threads() != native and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _shm() == shm and _native_threads() == native


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from leadio.dataset import open_dataset
    ld = open_dataset(sys.argv[1], batch_size=2, backend="cpu", num_workers=2, keys=["rgb", "lidar", "targets"],
                      output=sys.argv[2])
    for i, batch in enumerate(ld):
        if i == 2:
            print("ready", flush=True)
            time.sleep(60)  # killed here, with batches being decoded ahead
""")


@pytest.mark.parametrize("output", ["compact", "lead"])  # lead: the decode threads also build LEAD batches
def test_nothing_left_behind_when_the_process_is_killed(shard_dir, tmp_path, output):
    import psutil

    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    shm = _shm()
    proc = subprocess.Popen([sys.executable, str(script), str(shard_dir), output], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.2)
    assert children == []  # nothing was forked, so nothing can be orphaned
    assert _shm() == shm


def test_lz4_straight_into_the_buffer_equals_lz4_block_and_names_bad_blocks(shard_dir):
    import numpy as np

    import leadio.decode.cpu as cpu
    from leadio.shard.shardset import open_shard_set

    assert cpu.INFLATES_IN_PLACE  # python-lz4 exports the symbol: the fast path is the one tested here
    ss = open_shard_set(shard_dir)
    members = {k: m for k, m in ss.layout.items() if m.encoding != "jpeg"}
    raw = {name: [ss.read_member_bytes(r, f"{name}_n.{m.ext}") for r in range(3)] for name, m in members.items()}
    raw["semantic"][1] = raw["semantic"][1][:-40]  # a truncated block
    raw["row"], raw["view"] = np.arange(3), np.zeros(3, np.uint8)
    fast, fast_bad = cpu.decode_batch(raw, members)
    slow, slow_bad = cpu.decode_batch(raw, members, in_place=False)
    assert set(fast_bad) == set(slow_bad) == {1} and "member semantic does not decode" in fast_bad[1]
    for key in fast:
        np.testing.assert_array_equal(fast[key], slow[key])
    assert fast["lidar"][0].any() and not fast["lidar"][1].any()  # decoded, and the failed sample zeroed
