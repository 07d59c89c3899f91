"""leadio.read: ranged reads (local, file://, http with and without Range support, fsspec), errors; and
leadio.session_cache: download-once, LRU bound, multi-process safety and recovery after a killed downloader
(of either temp-name convention: ``.tmp-`` now, ``.part-`` before), with faults injected through the cache's
``copy`` and ``before_download`` parameters. Dropped connections, trickling servers and unusable cache folders
are in tests/faults/test_network.py."""

from __future__ import annotations

import fcntl
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import fsspec
import numpy as np
import pytest
from http_server import serve_directory

from leadio.files import remove_stale_temps, temp_sibling, temp_target
from leadio.read import ReadError, copy_into, fetch_file, read_range, read_ranges, resolve
from leadio.session_cache import SessionCache

REPO = Path(__file__).resolve().parents[2]


def _blob(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(folder served, base URL, server) for a loopback HTTP server; shut down after the test."""
    root = tmp_path / "served"
    root.mkdir()
    with serve_directory(root, monkeypatch) as (url, server):
        yield root, url, server


RANGES = [(0, 10), (1000, 1), (4999, 1), (123, 4000), (17, 0), (0, 5000)]


@pytest.mark.parametrize("scheme", ["path", "file", "http", "http-200", "memory"])
def test_ranged_reads_equal_local_slices(scheme, served):
    root, base, server = served
    data = _blob(5000, 1)
    (root / "a.bin").write_bytes(data)
    location = {"path": str(root / "a.bin"), "file": (root / "a.bin").as_uri(), "http": f"{base}/a.bin",
                "http-200": f"{base}/a.bin", "memory": f"memory://read-test-{os.getpid()}/a.bin"}[scheme]
    if scheme == "memory":
        fsspec.filesystem("memory").pipe(location, data)
    server.mode = "ignore_range" if scheme == "http-200" else "range"
    for offset, size in RANGES:
        assert read_range(location, offset, size) == data[offset:offset + size]
    assert read_ranges(location, RANGES) == [data[o:o + s] for o, s in RANGES]


def test_coalescing_cuts_requests_and_keeps_caller_order(served):
    root, base, server = served
    data = _blob(1_000_000, 2)
    (root / "b.bin").write_bytes(data)
    # three clusters: near the start (gaps < 64 KiB, one overlapping), the middle, the end
    ranges = [(900_000, 50), (100, 10), (0, 20), (10, 100), (40_000, 5), (500_000, 7), (500_010, 3), (999_990, 10)]
    out = read_ranges(f"{base}/b.bin", ranges)
    assert out == [data[o:o + s] for o, s in ranges]
    assert len(server.requests) == 4  # [0..40005], [500000..500013], [900000..900050], [999990..1000000]
    server.requests.clear()
    assert read_ranges(f"{base}/b.bin", ranges, max_gap=0) == out
    assert len(server.requests) == 6  # overlapping ranges still share a request


@pytest.mark.parametrize("scheme", ["path", "http-206", "http-416", "http-200", "memory"])
def test_truncated_file_names_location_and_range(scheme, served):
    root, base, server = served
    (root / "short.tar").write_bytes(_blob(1000, 3))
    location = {"path": str(root / "short.tar"), "http-206": f"{base}/short.tar", "http-416": f"{base}/short.tar",
                "http-200": f"{base}/short.tar", "memory": f"memory://read-test-{os.getpid()}/short.tar"}[scheme]
    if scheme == "memory":
        fsspec.filesystem("memory").pipe(location, _blob(1000, 3))
    server.mode = "ignore_range" if scheme == "http-200" else "range"
    offset = 1500 if scheme == "http-416" else 900
    with pytest.raises(ReadError) as e:
        read_range(location, offset, 200)
    assert str(e.value) == f"{location}: needs bytes {offset}..{offset + 200}, the file ends at 1000 (truncated?)"


def test_http_errors_name_url_and_status(served, tmp_path):
    root, base, server = served
    with pytest.raises(ReadError, match=re.escape(f"{base}/missing.tar: HTTP 404")) as e:
        read_range(f"{base}/missing.tar", 0, 10)
    assert e.value.status == 404
    with pytest.raises(ReadError, match=re.escape(f"{base}/missing.tar: HTTP 404")):
        fetch_file(f"{base}/missing.tar", tmp_path / "x")
    (root / "c.bin").write_bytes(_blob(100, 4))
    server.mode = "bad_206"
    with pytest.raises(ReadError, match=r"HTTP 206 for bytes 10\.\.30 returned 19 bytes, expected 20"):
        read_range(f"{base}/c.bin", 10, 20)
    with pytest.raises(ReadError, match=r"http://127\.0\.0\.1:1/x\.tar: request failed"):
        read_range("http://127.0.0.1:1/x.tar", 0, 1)  # nothing listens on port 1


def test_read_errors_pickle_with_their_fields_and_hint():
    e = ReadError("http://h/a.tar: the connection dropped after 5 of 10 bytes", "http://h/a.tar", None, True,
                  hint="the connection kept dropping")
    clone = pickle.loads(pickle.dumps(e))  # noqa: S301 - our own bytes; what a process pool sends back
    assert (str(clone), clone.location, clone.status, clone.transient, clone.hint) == \
        (str(e), "http://h/a.tar", None, True, "the connection kept dropping")
    assert ReadError("x").hint == ""  # the default: the retry loop's own advice


def test_fetch_file_is_atomic_and_checks_size(served, tmp_path):
    root, base, _ = served
    data = _blob(9_000_000, 5)  # more than one streaming chunk
    (root / "d.tar").write_bytes(data)
    dst = tmp_path / "out" / "d.tar"
    assert fetch_file(f"{base}/d.tar", dst, expected_size=len(data)) == len(data)
    assert dst.read_bytes() == data
    for wrong, message in [(len(data) + 1, "the file ends at"), (len(data) - 1, "is larger than the expected")]:
        with pytest.raises(ReadError, match=message):
            fetch_file(str(root / "d.tar"), tmp_path / "out" / "e.tar", expected_size=wrong)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["d.tar"]  # no temp, no partial file


def test_resolve():
    assert resolve("/data/shards/set-1", "b0/000000.tar") == "/data/shards/set-1/b0/000000.tar"
    assert resolve("https://h/x/set-1/", "./b0/000000.tar") == "https://h/x/set-1/b0/000000.tar"
    assert resolve("s3://bucket/set-1", "manifest.json") == "s3://bucket/set-1/manifest.json"
    assert resolve("s3://bucket/set-1", "https://mirror/a.tar") == "https://mirror/a.tar"
    for bad in ["../other/000000.tar", "/etc/passwd"]:
        with pytest.raises(ValueError, match="must be relative"):
            resolve("https://h/set-1", bad)


def test_session_cache_downloads_once_then_hits(served, tmp_path):
    root, base, server = served
    data = _blob(300_000, 6)
    (root / "s.tar").write_bytes(data)
    cache = SessionCache(tmp_path / "cache", 10**6)
    for _ in range(3):
        path = cache.local_path(f"{base}/s.tar", len(data), key="set-1/b0/000000.tar")
        assert path == tmp_path / "cache" / "data" / "set-1" / "b0" / "000000.tar"
        assert path.read_bytes() == data
    assert server.requests == ["/s.tar"]
    assert cache.read_ranges(f"{base}/s.tar", len(data), [(5, 10), (0, 3)], key="set-1/b0/000000.tar") == \
        [data[5:15], data[:3]]
    assert (cache.stats.hits, cache.stats.misses, cache.stats.bytes_downloaded) == (3, 1, len(data))
    other = cache.local_path(f"{base}/s.tar", len(data))  # keyed by a hash of the location
    assert other.parent.name == "_by_location" and other.read_bytes() == data
    with pytest.raises(ValueError, match="relative path without"):
        cache.local_path(f"{base}/s.tar", len(data), key="../escape.tar")
    cache.before_download = print
    clone = pickle.loads(pickle.dumps(cache))  # noqa: S301 - our own bytes; what a DataLoader worker gets
    assert clone.stats.hits == 0 and clone.before_download is None and clone.directory == cache.directory
    assert clone.copy is copy_into


def test_lru_evicts_least_recently_used_and_respects_bound(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    blobs = {n: _blob(1000, i) for i, n in enumerate("abcde")}
    for n, b in blobs.items():
        (src / n).write_bytes(b)
    (src / "manifest.json").write_bytes(b"x" * 600)
    cache = SessionCache(tmp_path / "cache", 3500)
    cached = lambda n: (tmp_path / "cache" / "data" / "set" / n).exists()
    get = lambda n: cache.local_path(str(src / n), 1000, key=f"set/{n}")
    for n in "abc":
        get(n)
    get("a")  # a is now the most recent: b is the least recently used
    get("d")
    assert [cached(n) for n in "abcd"] == [True, False, True, True]
    assert cache.stats.evictions == 1 and cache.disk_bytes() == 3000
    meta = cache.fetch_small(str(src / "manifest.json"), "set/manifest.json")  # pinned, but counts: evicts c
    assert meta.read_bytes() == b"x" * 600 and cache.disk_bytes() == 2600 and not cached("c")
    assert cache.pinned_bytes() == 600  # what no eviction frees: a download fits only beside it
    get("e")  # evicts a (d and e remain, manifest stays)
    assert [cached(n) for n in "abcde"] == [False, False, False, True, True] and meta.exists()
    assert cache.disk_bytes() <= 3500
    with pytest.raises(ValueError, match="holds at most 3500 bytes"):
        cache.local_path(str(src / "a"), 4000, key="set/big")
    # a path evicted between local_path and the read is fetched again
    real, unlinked, misses = cache.local_path, [], cache.stats.misses

    def evicted_at_once(*args, **kwargs) -> Path:
        path = real(*args, **kwargs)
        if not unlinked:
            unlinked.append(path)
            path.unlink()
        return path

    cache.local_path = evicted_at_once
    assert cache.read_ranges(str(src / "a"), 1000, [(10, 5)], key="set/a") == [blobs["a"][10:15]]
    assert unlinked and cache.stats.misses == misses + 2


_HAMMER = """
import sys, numpy as np
from pathlib import Path

from leadio.session_cache import SessionCache
src, cache_dir, seed, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cache = SessionCache(cache_dir, int(sys.argv[5]))
sizes = {p.name: p.stat().st_size for p in src.iterdir()}
for name in np.random.default_rng(seed).choice(sorted(sizes), n):
    got = cache.read_ranges(str(src / name), sizes[name], [(0, sizes[name])], key=f"set/{name}")[0]
    assert got == (src / name).read_bytes(), name
print(cache.stats.misses, cache.stats.evictions)
"""


def _child(tmp_path: Path, code: str, *args) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_processes_share_a_cache_within_the_bound(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"{i:06d}.tar").write_bytes(_blob(200_000 + 10_000 * i, 10 + i))
    bound = 3 * 225_000  # about 3 of the 6 files
    cache_dir = tmp_path / "cache"
    SessionCache(cache_dir, bound)
    children = [_child(tmp_path, _HAMMER, src, cache_dir, seed, 60, bound) for seed in (1, 2)]
    entries, samples, peak = cache_dir / "data" / "set", 0, 0
    deadline = time.monotonic() + 30
    while any(c.poll() is None for c in children) and time.monotonic() < deadline:
        if entries.is_dir():  # all entries, temps and reservations sit in this one folder
            total = 0
            for e in os.scandir(entries):
                try:
                    total += e.stat().st_size
                except FileNotFoundError:
                    pass
            peak, samples = max(peak, total), samples + 1
            assert total <= bound
    outs = [c.communicate(timeout=30) for c in children]
    assert [c.returncode for c in children] == [0, 0], outs
    misses = [int(out.split()[0]) for out, _ in outs]
    assert sum(misses) >= 6 and samples >= 3 and 0 < peak <= bound
    assert SessionCache(cache_dir, bound).disk_bytes() <= bound


_HOLDER = """
import sys, time
from pathlib import Path

from leadio.session_cache import SessionCache
def hold(tmp):
    Path(sys.argv[3]).write_text(str(tmp))
    time.sleep(60)
cache = SessionCache(sys.argv[1], 10**6, before_download=hold)
cache.local_path(sys.argv[2], 1000, key="set/000000.tar")
"""


@pytest.mark.parametrize("next_entry", ["same", "other"])
def test_killed_downloader_leaves_no_stale_lock_and_its_temp_is_removed(tmp_path, next_entry):
    src = tmp_path / "000000.tar"
    src.write_bytes(_blob(1000, 7))
    cache_dir, ready = tmp_path / "cache", tmp_path / "ready"
    child = _child(tmp_path, _HOLDER, cache_dir, src, ready)
    deadline = time.monotonic() + 20
    while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready.exists(), child.communicate()
    temp = Path(ready.read_text())
    assert temp.exists() and temp.stat().st_size == 1000 and f".tmp-{child.pid}-" in temp.name
    lock = cache_dir / "locks" / "data" / "set" / ".000000.tar.lock"
    with open(lock) as f:  # the child holds the entry lock ...
        with pytest.raises(BlockingIOError):
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=10)
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ... and the kernel dropped it with the process
    cache = SessionCache(cache_dir, 1500, wait_s=5)  # the orphan's 1000 reserved bytes must be reclaimed to fit
    if next_entry == "same":
        assert cache.local_path(str(src), 1000, key="set/000000.tar").read_bytes() == src.read_bytes()
    else:
        other = tmp_path / "other.tar"
        other.write_bytes(_blob(800, 8))
        assert cache.local_path(str(other), 800, key="set/other.tar").read_bytes() == other.read_bytes()
    assert not temp.exists() and cache.stats.evictions == 0 and cache.disk_bytes() <= 1500


def test_temp_names_of_both_conventions_are_recognised_and_removed(tmp_path):
    target = tmp_path / "000000.tar"
    new = temp_sibling(target)
    assert new.parent == tmp_path and new.name.startswith(f".000000.tar.tmp-{os.getpid()}-")
    old = tmp_path / ".000000.tar.part-123-deadbeef"  # what the session cache wrote before the names were unified
    assert temp_target(new.name) == temp_target(old.name) == "000000.tar"
    assert temp_target("000000.tar") is None and temp_target(".000000.tar.lock") is None
    other = tmp_path / ".000001.tar.tmp-1-deadbeef"
    for p in (new, old, other, target):
        p.write_bytes(b"x")
    (tmp_path / ".000000.tar.tmp-7").mkdir()  # an older, shorter tag, and a folder
    assert sorted(p.name for p in remove_stale_temps(target)) == sorted([new.name, old.name, ".000000.tar.tmp-7"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, target.name]


@pytest.mark.parametrize("marker", [".tmp-", ".part-"])
def test_cache_reclaims_a_dead_downloads_temp_of_either_convention(tmp_path, marker):
    src = tmp_path / "000000.tar"
    src.write_bytes(_blob(1000, 9))
    entries = tmp_path / "cache" / "data" / "set"
    entries.mkdir(parents=True)
    orphan = entries / f".other.tar{marker}4242-0123abcd"  # a dead download of another entry: its lock is free
    orphan.write_bytes(b"\0" * 1000)
    cache = SessionCache(tmp_path / "cache", 1500, wait_s=5)
    assert cache.local_path(str(src), 1000, key="set/000000.tar").read_bytes() == src.read_bytes()
    assert not orphan.exists() and cache.disk_bytes() == 1000
    assert all(p.stat().st_size == 0 for p in (tmp_path / "cache" / "locks").rglob("*.lock"))  # no holder notes


def test_an_injected_copy_failure_stores_nothing(tmp_path):
    src = tmp_path / "000000.tar"
    src.write_bytes(_blob(1000, 10))
    seen = []

    def half_then_fail(location, dst, expected_size, checksum=None):
        seen.append(Path(dst.name))
        dst.write(src.read_bytes()[:500])
        raise ReadError(f"{location}: connection failed while reading (injected)", location)

    cache_dir = tmp_path / "cache"
    with pytest.raises(ReadError, match="injected"):
        SessionCache(cache_dir, 10**6, copy=half_then_fail).local_path(str(src), 1000, key="set/000000.tar")
    assert seen and temp_target(seen[0].name) == "000000.tar" and not seen[0].exists()
    assert not [p for p in (cache_dir / "data").rglob("*") if p.is_file()]
    cache = SessionCache(cache_dir, 10**6)  # the default copy
    assert cache.local_path(str(src), 1000, key="set/000000.tar").read_bytes() == src.read_bytes()
    assert cache.disk_bytes() == 1000
