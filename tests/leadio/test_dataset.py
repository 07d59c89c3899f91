"""leadio.open_dataset: the loader end to end on a real shard set: plans, backends, resume, bad input."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from leadio.buckets.builders import load_or_build
from leadio.dataset import SampleDataset, open_dataset
from leadio.shard.shardset import ShardSetError, StaleShardSetError, open_shard_set


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, make_built_root) -> Path:
    root = tmp_path_factory.mktemp("ds") / "data" / "carla_leaderboard2"
    return make_built_root(root, 5)


def _rows(loader) -> list[int]:
    return [r for batch in loader for r in batch["row"].tolist()]


def test_loader_yields_the_plan_in_order_and_new_orders_per_epoch(shard_dir):
    ld = open_dataset(shard_dir, batch_size=4, backend="cpu", num_workers=2, keys=["lidar", "targets"], seed=5)
    plan0 = ld.plan(0)
    epoch0 = _rows(ld)
    assert epoch0 == plan0.rows[: len(plan0) // 4 * 4].tolist()
    assert ld.state_dict()["epoch"] == 1  # a finished epoch moves the position on
    ld.set_epoch(1)
    epoch1 = _rows(ld)  # persistent workers: the new epoch reaches them with each request
    assert epoch1 == ld.plan(1).rows[: len(epoch1)].tolist() and epoch1 != epoch0
    again = open_dataset(shard_dir, batch_size=4, backend="cpu", num_workers=0, keys=["lidar"], seed=5)
    assert _rows(again) == epoch0  # identical across runs and worker counts


def test_batch_content_matches_random_access(shard_dir):
    ld = open_dataset(shard_dir, batch_size=3, backend="cpu", num_workers=0, perturbation_rate=1.0)
    batch = next(iter(ld))
    assert batch["rgb"].shape == (3, 3, 384, 1152) and batch["rgb"].dtype == torch.uint8
    assert batch["lidar"].shape == (3, 1, 320, 384) and batch["waypoints"].shape == (3, 8, 2)
    assert batch["view"].tolist() == [1, 1, 1]
    ds = SampleDataset(open_shard_set(shard_dir), view="perturbated")
    one = ds[int(batch["row"][1])]
    for key in ("rgb", "lidar", "bev_semantic", "boxes", "waypoints", "radar"):
        torch.testing.assert_close(batch[key][1], one[key], rtol=0, atol=0, equal_nan=True)
    assert isinstance(one["sample_key"], str) and len(ds) == len(open_shard_set(shard_dir))
    assert one["speed"].shape == () and one["row"].shape == () and one["rgb"].is_contiguous()


def test_cpu_and_dali_backends_give_identical_tensors(shard_dir):
    kw = {"batch_size": 4, "num_workers": 0, "seed": 2}
    cpu = list(open_dataset(shard_dir, backend="cpu", **kw))
    dali = list(open_dataset(shard_dir, backend="dali", **kw))
    assert len(cpu) == len(dali) > 0
    for a, b in zip(cpu, dali, strict=True):
        assert set(a) == set(b)
        for key in a:
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True)


def test_equal_batches_on_every_rank_and_union_is_the_plan(shard_dir):
    n = len(open_shard_set(shard_dir))
    for world in (1, 2, 3, 5):
        per_rank = [_rows(open_dataset(shard_dir, batch_size=2, backend="cpu", world_size=world, rank=r,
                                       keys=["targets"])) for r in range(world)]
        assert len({len(p) for p in per_rank}) == 1
        flat = [r for p in per_rank for r in p]
        assert len(flat) == len(set(flat)) and len(flat) >= n - world * 2 * 2


KILL_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from leadio.dataset import open_dataset
    ld = open_dataset(sys.argv[1], batch_size=2, backend="cpu", num_workers=1, keys=["targets"], seed=9)
    with open(sys.argv[2], "a") as log:
        for i, batch in enumerate(ld):
            log.write(json.dumps({"rows": batch["row"].tolist(), "state": ld.state_dict()}) + "\\n")
            log.flush()
            if i == 3:
                time.sleep(60)  # killed here
""")


def test_kill9_mid_epoch_then_resume_yields_exactly_the_rest(shard_dir, tmp_path):
    script, log = tmp_path / "run.py", tmp_path / "log.jsonl"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(shard_dir), str(log)])
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == 4
    seen = [r for x in lines for r in x["rows"]]
    full = open_dataset(shard_dir, batch_size=2, backend="cpu", keys=["targets"], seed=9)
    uninterrupted = _rows(full)
    resumed = open_dataset(shard_dir, batch_size=2, backend="cpu", num_workers=1, keys=["targets"], seed=9)
    resumed.load_state_dict(lines[-1]["state"])
    rest = _rows(resumed)
    assert seen == uninterrupted[:8] and rest == uninterrupted[8:]


def test_resume_with_another_world_size_finishes_the_epoch(shard_dir):
    kw = {"batch_size": 2, "backend": "cpu", "keys": ["targets"], "seed": 4}
    loaders = [open_dataset(shard_dir, world_size=2, rank=r, **kw) for r in range(2)]
    seen = []
    for ld in loaders:
        it = iter(ld)
        for _ in range(3):
            seen += next(it)["row"].tolist()
    state = loaders[0].state_dict()
    assert state["consumed"] == 12
    rest = []
    for r in range(3):
        ld = open_dataset(shard_dir, world_size=3, rank=r, **kw)
        ld.load_state_dict(state)
        rest += _rows(ld)
    everything = seen + rest
    assert len(everything) == len(set(everything))  # nothing twice
    plan = open_dataset(shard_dir, world_size=1, rank=0, **kw).plan(0).rows.tolist()
    # nothing lost: all but the tail that equal batches on 3 ranks cannot hold
    assert set(everything) <= set(plan) and len(plan) - len(everything) < 3 * 2


def test_posttrain_collection_over_the_pretrain_set(shard_dir):
    root = shard_dir.parent.parent
    post, _ = load_or_build(root, "full_posttrain")
    ld = open_dataset(shard_dir, collection="full_posttrain", batch_size=1, backend="cpu", keys=["targets"])
    rows = _rows(ld)
    assert len(rows) == len(post) > 0  # 20-frame routes keep frames 8..11: never vacuous
    assert all(h == 1.0 for b in open_dataset(shard_dir, collection="full_posttrain", batch_size=1,
                                              backend="cpu", keys=["targets"]) for h in b["has_targets"].tolist())
    spec = {"name": "everything", "group_by": ["town"], "skip_first": 0, "skip_last": 0}
    with pytest.raises(ValueError, match=r"collection 'everything' names \d+ frames that shard set .* lacks, from "
                                         r"\d+ routes: data/"):
        open_dataset(shard_dir, collection=spec, backend="cpu")


def _copy(shard_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data" / "carla_leaderboard2"
    shutil.copytree(shard_dir.parent.parent, root)
    return root / "shards" / shard_dir.name


def test_bad_input_errors_name_shard_and_sample(shard_dir, tmp_path):
    set_dir = _copy(shard_dir, tmp_path)
    ss = open_shard_set(set_dir)
    kw = {"batch_size": 4, "backend": "cpu", "keys": ["lidar", "targets"], "perturbation_rate": 0.0}
    first = open_dataset(set_dir, **kw).plan(0).rows[0]
    shard = ss.shard_path(int(ss.catalog["shard"][first]))
    key = ss.catalog["sample_key"][first]
    # corrupted member: lz4 stream garbage
    col = ss.members.index("lidar_n.lz4")
    off = int(ss.catalog["member_offset"][first, col])
    data = bytearray(shard.read_bytes())
    data[off:off + 8] = b"\xff" * 8
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardSetError, match=rf"shard {shard}, sample {key}: .*"):
        next(iter(open_dataset(set_dir, **kw)))
    # opted in: skipped, counted, batches keep their size
    ld = open_dataset(set_dir, on_error="skip", **kw)
    batch = next(iter(ld))
    assert len(batch["row"]) == 4 and ld.stats.skipped == 1 and key in ld.stats.skipped_samples[0]
    # truncated shard
    shard.write_bytes(bytes(data[: off - 100]))
    with pytest.raises(ShardSetError, match=rf"sample {key}: member lidar_n.lz4 needs bytes .* \(truncated\)"):
        next(iter(open_dataset(set_dir, **kw)))
    # missing shard
    shard.unlink()
    with pytest.raises(ShardSetError, match=rf"shard {shard}, sample {key}: shard file is missing"):
        next(iter(open_dataset(set_dir, **kw)))


def test_stale_set_and_forced_backend_errors(shard_dir, tmp_path):
    set_dir = _copy(shard_dir, tmp_path)
    route = sorted((set_dir.parent.parent / "data").glob("*/*"))[0]
    shutil.rmtree(route)
    with pytest.raises(StaleShardSetError, match="was removed"):
        open_dataset(set_dir)
    with pytest.raises(ValueError, match="backend must be 'auto', 'cpu' or 'dali'"):
        open_dataset(shard_dir, backend="gpu")
    with pytest.raises(ValueError, match=r"unknown keys \['thermal'\]"):
        open_dataset(shard_dir, keys=["rgb", "thermal"], backend="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            open_dataset(shard_dir, backend="dali", device="cuda")
    # device has one meaning, where batches are made: the cpu backend's compact batches are made on the CPU
    with pytest.raises(ValueError, match=r"device='cuda' makes batches on the GPU, which the cpu backend does not "
                                         r"do: use backend='dali' \(nvJPEG\), output='lead'"):
        open_dataset(shard_dir, backend="cpu", device="cuda")
    with pytest.raises(ValueError, match=r"device must be None, 'cpu', 'cuda' or 'cuda:N', got 'gpu'"):
        open_dataset(shard_dir, backend="cpu", device="gpu")
    with pytest.raises(TypeError, match=r"unknown option\(s\) 'batchsize' \(did you mean 'batch_size'\?\)"):
        open_dataset(shard_dir, batchsize=4)


REMOTE_SCRIPT = textwrap.dedent("""
    import json, sys
    from leadio.dataset import open_dataset
    ld = open_dataset(sys.argv[1], batch_size=2, backend="cpu", keys=["lidar", "targets"], seed=1,
                      cache_dir=sys.argv[2], cache_bytes=int(sys.argv[3]))
    out = [[int(r), int(l.sum())] for b in ld for r, l in zip(b["row"], b["lidar"])]
    print(json.dumps({"rows": out, "misses": ld.shard_set.cache.stats.misses,
                      "downloaded": ld.shard_set.cache.stats.bytes_downloaded, "shuffle": ld.shuffle.state()}))
""")


def test_http_shard_set_through_a_shared_bounded_session_cache(shard_dir, tmp_path, monkeypatch):
    from http_server import serve_directory

    sizes = sorted(s["bytes"] for s in json.loads((shard_dir / "manifest.json").read_text())["shards"])
    meta = sum(p.stat().st_size for p in (shard_dir / "catalog.zarr").rglob("*") if p.is_file())
    meta += (shard_dir / "manifest.json").stat().st_size
    bound = meta + 3 * sizes[-1]  # the catalog plus about 3 of the shards
    assert bound < meta + sum(sizes)  # eviction is needed
    cache_dir = tmp_path / "cache"
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    with serve_directory(shard_dir.parent, monkeypatch) as (url, server):
        procs = [subprocess.Popen([sys.executable, str(script), f"{url}/{shard_dir.name}", str(cache_dir),
                                   str(bound)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        peak = 0
        while any(p.poll() is None for p in procs):
            if (cache_dir / "data").exists():
                total = 0
                for f in (cache_dir).rglob("*"):
                    try:
                        total += f.stat().st_size if f.is_file() and not f.name.endswith(".lock") else 0
                    except FileNotFoundError:
                        pass
                peak = max(peak, total)
            time.sleep(0.01)
        outs = [p.communicate() for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        shard_requests = [r for r in server.requests if r.endswith(".tar")]
    results = [json.loads(out) for out, _ in outs]
    from leadio.plan import Shuffle

    # a remote set is read in blocks of shards that fit the cache (twice): here 1 shard per block
    assert results[0]["shuffle"] == {"algorithm": "block", "block_shards": 1}
    local = [[int(r), int(x.sum())] for b in open_dataset(shard_dir, batch_size=2, backend="cpu",
                                                          keys=["lidar", "targets"], seed=1,
                                                          shuffle=Shuffle.from_state(results[0]["shuffle"]))
             for r, x in zip(b["row"], b["lidar"], strict=True)]
    for res in results:
        assert res["rows"] == local  # same samples, same content, over HTTP
        # (each shard fetched once per epoch is asserted for one process in test_shuffle_loader; two processes at
        # different positions of the epoch may evict each other's shard from a 3-shard cache)
    assert peak <= bound
    from leadio.session_cache import SessionCache

    assert SessionCache(cache_dir, bound).disk_bytes() <= bound
    assert len(shard_requests) >= len(sizes)  # every shard came over HTTP at least once


# issue 22, item 9
def test_a_world_size_larger_than_the_epoch_is_refused_at_open(shard_dir):
    n = len(open_dataset(shard_dir, batch_size=1, backend="cpu", keys=["targets"]).plan(0))
    with pytest.raises(ValueError, match=rf"^world_size={n + 1} exceeds the {n} samples of epoch 0 of 'full_pretrain' "
                                         rf"\({shard_dir.name}\): every rank would get 0 batches of 2; run at most "
                                         rf"{n // 2} ranks at batch_size=2$"):
        open_dataset(shard_dir, batch_size=2, backend="cpu", world_size=n + 1, rank=n, keys=["targets"])
    with pytest.raises(ValueError, match=rf"world_size={2 * n} exceeds the {n} samples .* of 1; run at most {n} "
                                         r"ranks at batch_size=1$"):
        open_dataset(shard_dir, batch_size=1, backend="cpu", world_size=2 * n, rank=0, keys=["targets"])
    last = open_dataset(shard_dir, batch_size=1, backend="cpu", world_size=n, rank=n - 1, keys=["targets"])
    assert len(_rows(last)) == 1  # as many ranks as samples: one batch each


# issue 22, item 10
def test_a_second_iteration_while_one_is_open_is_refused(shard_dir):
    import gc
    import threading

    kw = {"batch_size": 4, "backend": "cpu", "num_workers": 1, "keys": ["targets"], "seed": 4}
    plan = open_dataset(shard_dir, **kw).plan(0)
    expected = plan.rows[: len(plan) // 4 * 4].tolist()
    ld = open_dataset(shard_dir, **kw)
    peek = iter(ld)
    first = next(peek)["row"].tolist()  # a kept peek iterator ...
    with pytest.raises(RuntimeError, match=r"^this loader is already being iterated \(an iterator started in thread "
                                           r"'MainThread' is still open: another thread's loop, or a kept "
                                           r"iter\(loader\)\); a second iteration would deliver every sample twice"):
        for _ in ld:  # ... beside a for loop
            pass
    errors = []

    def other_thread() -> None:
        try:
            next(iter(ld))
        except RuntimeError as e:
            errors.append(str(e))

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "already being iterated" in errors[0]
    assert ld.state_dict()["consumed"] == 4  # the refused iterations consumed nothing
    peek.close()  # a closed iterator ends its iteration
    second = next(iter(ld))["row"].tolist()  # (a dropped one too: this one is garbage at once)
    peek = iter(ld)
    third = next(peek)["row"].tolist()
    del peek
    gc.collect()
    rest = []
    for batch in ld:  # a break, then a new for loop, continue where the last one stopped
        rest += batch["row"].tolist()
        break
    for batch in ld:
        rest += batch["row"].tolist()
    assert first + second + third + rest == expected and ld.epoch == 1
    assert len(_rows(ld)) == len(expected)  # an exhausted iterator ended its iteration: epoch 1 runs
    lead = open_dataset(shard_dir, output="lead", **kw)  # output="lead" wraps the same loader
    it = iter(lead)
    next(it)
    with pytest.raises(RuntimeError, match="already being iterated"):
        next(iter(lead))
    it.close()
    assert len(list(lead)) == len(expected) // 4 - 1


# issue 22, item 12
def test_a_remote_set_opens_for_the_collection_it_was_built_for_without_a_root(shard_dir, tmp_path, monkeypatch):
    from http_server import serve_directory

    kw = {"batch_size": 2, "backend": "cpu", "num_workers": 0, "keys": ["targets"], "shuffle": "uniform"}
    local = _rows(open_dataset(shard_dir, **kw))
    with serve_directory(shard_dir.parent, monkeypatch) as (url, _):
        remote = open_dataset(f"{url}/{shard_dir.name}", collection="full_pretrain", cache_dir=tmp_path / "c", **kw)
        assert remote.collection.name == "full_pretrain" and _rows(remote) == local
        with pytest.raises(ValueError, match=r"collection='full_posttrain' is built from a dataset root, but the "
                                             r"shard set is remote"):
            open_dataset(f"{url}/{shard_dir.name}", collection="full_posttrain", cache_dir=tmp_path / "c", **kw)
