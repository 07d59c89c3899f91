"""The network and the cache folder as a cluster has them: connections that drop mid-body, servers that trickle,
a read-only or blocked ``cache_dir``, a ``cache_bytes`` below one shard. Servers are loopback HTTP servers made
here (`http_server.FaultyConnectionHandler`); deadlines are short `leadio.read.Deadline`s passed in, so every
case takes seconds.

- A response cut before its declared Content-Length is the network: retried, a whole-file copy resuming from
  the bytes it has; a server that keeps cutting ends in one line that says so (URL, bytes got of expected,
  attempts). A file that is really shorter stays "the file ends at", after one request.
- A request over its wall-clock deadline is retried with a warning naming the URL and the rate; then one line
  names URL, bytes received and the deadline.
- A cache folder that cannot be written, and a cache too small for the largest shard, are refused at open.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import shutil
import subprocess
import time

import pytest
from http_server import FaultyConnectionHandler, serve_directory
from remote_read import read_all

from leadio import read
from leadio.read import Deadline, ReadError, copy_into, read_range
from leadio.shard.shardset import ShardSetError, open_shard_set

FAST = Deadline(base_s=0.3, min_rate=1e9)  # a trickling server (1 byte/s) is over it within 0.3 s


@pytest.fixture
def served(reference, tmp_path, monkeypatch):
    """(set URL, server, local set folder): the reference set on a loopback server that can misbehave."""
    monkeypatch.setattr(read, "RETRY_BACKOFF_S", 0.01)
    set_dir = next((reference[0] / "shards").glob("*/manifest.json")).parent
    shutil.copytree(set_dir, tmp_path / "served" / set_dir.name)
    with serve_directory(tmp_path / "served", monkeypatch, handler=FaultyConnectionHandler) as (url, server):
        server.ranges = []
        yield f"{url}/{set_dir.name}", server, set_dir


def _shards(set_dir) -> list[dict]:
    return json.loads((set_dir / "manifest.json").read_text())["shards"]


def _local(set_dir, tmp_path) -> dict:
    return read_all(str(set_dir), str(tmp_path / "unused"), 64 << 20)


# --- item 2: a connection dropped mid-body ---------------------------------------------------------------------

def test_a_connection_dropped_mid_body_is_resumed_and_the_loader_delivers_exact_data(served, tmp_path):
    url, server, set_dir = served
    server.mode = "drop_once"  # each shard: the first response stops after half its declared length
    assert read_all(url, str(tmp_path / "cache"), 64 << 20) == _local(set_dir, tmp_path)
    sizes = {f"/{set_dir.name}/{e['path']}": e["bytes"] for e in _shards(set_dir)}
    tars = [r for r in server.requests if r.endswith(".tar")]
    assert sorted(tars) == sorted(2 * list(sizes))  # each shard: the cut response, then the rest of it
    resumed = [r for r in server.ranges if r is not None]
    assert sorted(resumed) == sorted(f"bytes={n // 2}-{n - 1}" for n in sizes.values())  # from the bytes it had


@pytest.mark.parametrize("honour_range", [True, False])
def test_a_dropped_range_or_whole_file_request_is_retried(served, honour_range):
    url, server, set_dir = served
    server.mode, server.honour_range = "drop_once", honour_range
    entry = _shards(set_dir)[0]
    data = (set_dir / entry["path"]).read_bytes()
    dst = io.BytesIO()
    assert copy_into(f"{url}/{entry['path']}", dst, len(data), entry["xxh3_128"]) == len(data)
    assert dst.getvalue() == data  # a server that ignores Range sends it all again: the copy starts over
    server.failures.clear()
    size = len(data) * 3 // 4  # past the half the server sends before it drops
    assert read_range(f"{url}/{entry['path']}", 10, size) == data[10:10 + size]


def test_a_connection_that_keeps_dropping_ends_in_one_line_that_says_so(served, tmp_path):
    url, server, set_dir = served
    from leadio.dataset import open_dataset

    loader = open_dataset(url, batch_size=2, backend="cpu", keys=["targets"], cache_dir=tmp_path / "cache",
                          cache_bytes=64 << 20, num_workers=0)
    server.mode = "drop"
    with pytest.raises(ShardSetError) as e:
        next(iter(loader))
    loader.close()
    message = str(e.value)
    sizes = {e["path"]: e["bytes"] for e in _shards(set_dir)}
    m = re.search(rf"{re.escape(url)}/(\S+\.tar): the connection dropped after (\d+) of (\d+) bytes - gave up "
                  rf"after {read.RETRIES + 1} attempts \(whole file\); the connection kept dropping", message)
    assert m, message
    assert int(m[3]) == sizes[m[1]] and 0 < int(m[2]) < int(m[3])  # resumed: more than half by now
    assert "truncated" not in message and "file ends" not in message and "\n" not in message
    assert not list((tmp_path / "cache" / "data").rglob("*.tar"))  # nothing partial was stored


def test_a_file_really_shorter_than_the_manifest_says_is_truncated_at_once(served, tmp_path):
    url, server, set_dir = served
    entry = _shards(set_dir)[0]
    shard = tmp_path / "served" / set_dir.name / entry["path"]  # the server's copy
    data = shard.read_bytes()
    shard.write_bytes(data[:1000])  # the server declares 1000 bytes and sends them: a truncated file
    with pytest.raises(ReadError) as e:
        copy_into(f"{url}/{entry['path']}", io.BytesIO(), len(data))
    assert str(e.value) == f"{url}/{entry['path']}: needs bytes 0..{len(data)}, the file ends at 1000 (truncated?)"
    assert server.requests == [f"/{set_dir.name}/{entry['path']}"]  # not retried


# --- item 3: a trickling server -------------------------------------------------------------------------------

def test_a_trickling_range_request_is_cut_at_its_deadline_retried_with_warnings_then_refused(served, caplog):
    url, server, set_dir = served
    server.mode = "trickle"  # 1 byte/s
    location = f"{url}/{_shards(set_dir)[0]['path']}"
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="leadio.read"), pytest.raises(ReadError) as e:
        read_range(location, 0, 1000, deadline=Deadline(base_s=0.3, min_rate=1e6))
    assert time.monotonic() - started < 5  # 4 attempts of about 0.3 s each, not 1000 s
    message = str(e.value)
    assert re.fullmatch(rf"{re.escape(location)}: the request took longer than its deadline of 0\.3s: got \d+ of "
                        rf"1000 bytes in [\d.]+s \([\d.]+ B/s; .*\) - gave up after {read.RETRIES + 1} attempts "
                        rf"\(bytes 0\.\.1000\); the server or the network is too slow: .*", message), message
    warnings = [r.getMessage() for r in caplog.records if r.name == "leadio.read" and r.levelno == logging.WARNING]
    assert len(warnings) == read.RETRIES and all(location in w and " B/s" in w for w in warnings)
    assert server.requests.count(location.removeprefix(url.rsplit("/", 1)[0])) == read.RETRIES + 1


def test_a_trickling_shard_download_is_refused_by_the_loader_and_stores_nothing(served, tmp_path):
    url, server, _ = served
    from leadio.dataset import open_dataset

    loader = open_dataset(url, cache_dir=tmp_path / "cache", cache_bytes=64 << 20, deadline=FAST,  # the user's knob
                          batch_size=2, backend="cpu", keys=["targets"], num_workers=0)
    server.mode = "trickle"
    started = time.monotonic()
    with pytest.raises(ShardSetError) as e:
        next(iter(loader))
    loader.close()
    assert time.monotonic() - started < 10
    message = str(e.value)
    assert re.search(rf"{re.escape(url)}/\S+\.tar: the request took longer than its deadline of 0\.3s: got \d+ of "
                     rf"\d+ bytes .* gave up after {read.RETRIES + 1} attempts \(whole file\)", message), message
    assert not list((tmp_path / "cache" / "data").rglob("*.tar"))
    assert not [p for p in (tmp_path / "cache").rglob("*") if ".tmp-" in p.name]


def test_a_deadline_grows_with_the_bytes_and_a_slow_but_steady_transfer_passes(served):
    url, server, set_dir = served
    assert Deadline().seconds(256 * 1024**2) == 60 + 256  # the default: 60 s plus 1 s per MiB
    with pytest.raises(ValueError, match="min_rate > 0"):
        Deadline(min_rate=0)
    server.mode, server.trickle_s = "trickle", 0.01  # about 100 bytes/s
    entry = _shards(set_dir)[0]
    data = (set_dir / entry["path"]).read_bytes()
    # 20 bytes at ~100 B/s take ~0.2 s: over the 0.1 s base alone, within 0.1 s + 20 B / (20 B/s)
    assert read_range(f"{url}/{entry['path']}", 100, 20, deadline=Deadline(base_s=0.1, min_rate=20)) == data[100:120]
    assert len(server.requests) == 1


# --- item 12: the cache folder and the cache size, refused at open --------------------------------------------

def test_a_cache_dir_under_a_file_is_refused_at_open_naming_the_path_and_the_fix(served, tmp_path):
    url, _, _ = served
    (tmp_path / "afile").write_text("x")
    cache = tmp_path / "afile" / "cache"
    with pytest.raises(ShardSetError) as e:
        open_shard_set(url, cache_dir=cache, cache_bytes=64 << 20)
    assert str(e.value) == (f"cannot open remote shard set {url}: session cache folder {cache} cannot be created: "
                            f"{tmp_path / 'afile'} is a file, not a folder; pass cache_dir=<a writable folder on a "
                            f"local disk> (the session cache copies remote shards there)")


def _read_only_folder(path):
    """``path`` made a folder nobody may write: chmod 0o555 for a user; root ignores modes, so a read-only
    tmpfs is mounted there (skips where mounting is not permitted). Yields it; unmounts after."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"running as root, where chmod does not stop writes, and a read-only tmpfs cannot be mounted: "
                    f"{proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def read_only_folder(tmp_path):
    yield from _read_only_folder(tmp_path / "readonly")


def test_a_read_only_cache_dir_is_refused_at_open_naming_the_path_and_the_fix(served, read_only_folder):
    url, _, _ = served
    with pytest.raises(OSError) as probe:  # it is really read-only
        (read_only_folder / "x").write_text("x")
    assert probe.value.errno in (errno.EROFS, errno.EACCES)
    for cache in (read_only_folder, read_only_folder / "sub" / "cache"):
        with pytest.raises(ShardSetError) as e:
            open_shard_set(url, cache_dir=cache, cache_bytes=64 << 20)
        message = str(e.value)
        assert message.startswith(f"cannot open remote shard set {url}: session cache folder {cache} is not "
                                  f"writable (") and "pass cache_dir=<a writable folder" in message, message
        assert str(read_only_folder) in message and "\n" not in message


def test_cache_bytes_below_the_largest_shard_is_refused_at_open_naming_shard_size_and_minimum(served, tmp_path):
    url, _, set_dir = served
    largest = max(_shards(set_dir), key=lambda e: e["bytes"])
    cache = tmp_path / "cache"
    with pytest.raises(ShardSetError) as e:
        open_shard_set(url, cache_dir=cache, cache_bytes=largest["bytes"] - 1)
    message = str(e.value)
    m = re.fullmatch(rf"remote shard set {re.escape(url)}: cache_bytes={largest['bytes'] - 1} cannot hold its "
                     rf"largest shard {re.escape(largest['path'])} \({largest['bytes']} bytes\) beside the (\d+) bytes "
                     rf"of metadata \(manifests, catalogs\) that the session cache {re.escape(str(cache))} keeps; "
                     rf"pass cache_bytes >= (\d+) .*", message)
    assert m, message
    minimum = int(m[2])
    assert minimum == int(m[1]) + largest["bytes"] and int(m[1]) > 0
    with pytest.raises(ShardSetError, match=f"pass cache_bytes >= {minimum} "):
        open_shard_set(url, cache_dir=cache, cache_bytes=minimum - 1)
    # the minimum is enough: the whole epoch reads through a cache of exactly that size
    assert read_all(url, str(cache), minimum) == _local(set_dir, tmp_path)
