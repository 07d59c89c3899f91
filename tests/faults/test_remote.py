"""Remote sets over loopback HTTP: servers that return 500s, send wrong bytes or die. Failures that may pass
are retried a bounded number of times (`leadio.read.RETRIES`), then a one-line error names the URL, the
failure and the attempts; wrong bytes never enter the session cache."""

from __future__ import annotations

import shutil

import pytest
from http_server import serve_directory
from remote_read import read_all

from leadio import read
from leadio.shard.shardset import ShardSetError


@pytest.fixture
def served(reference, tmp_path, monkeypatch):
    monkeypatch.setattr(read, "RETRY_BACKOFF_S", 0.01)
    set_dir = next((reference[0] / "shards").glob("*/manifest.json")).parent
    shutil.copytree(set_dir, tmp_path / "served" / set_dir.name)
    with serve_directory(tmp_path / "served", monkeypatch) as (url, server):
        yield f"{url}/{set_dir.name}", server, set_dir


def _local(set_dir, tmp_path):
    return read_all(str(set_dir), str(tmp_path / "unused"), 64 << 20)


def test_flaky_500s_are_retried_and_the_data_is_exact(served, tmp_path):
    url, server, set_dir = served
    server.mode = "flaky_500"
    assert read_all(url, str(tmp_path / "cache"), 64 << 20) == _local(set_dir, tmp_path)
    tars = [r for r in server.requests if r.endswith(".tar")]
    assert len(tars) == 3 * len(set(tars))  # two 500s, then the shard: bounded, each shard downloaded once


@pytest.mark.parametrize(("mode", "why"), [
    ("status_500", "HTTP 500"),
    ("corrupt", "the downloaded bytes differ from the manifest's checksum"),
    ("die", "request failed"),
])
def test_persistent_failures_end_in_a_clear_error_after_bounded_retries(mode, why, served, tmp_path):
    url, server, _ = served
    cache = tmp_path / "cache"
    from leadio.dataset import open_dataset

    # num_workers=0: one batch is read at a time, so the request count per read is exact
    loader = open_dataset(url, batch_size=2, backend="cpu", keys=["targets"], cache_dir=cache, cache_bytes=64 << 20,
                          num_workers=0)
    server.requests.clear()
    if mode == "die":
        server.shutdown()
        server.server_close()
    else:
        server.mode = mode
    with pytest.raises(ShardSetError) as e:
        next(iter(loader))
    loader.close()
    message = str(e.value)
    assert why in message and f"gave up after {read.RETRIES + 1} attempts" in message and "\n" not in message
    assert message.startswith(f"shard {url}/all/") and "check that the server is up" in message
    if mode != "die":
        first = next(r for r in server.requests if r.endswith(".tar"))
        tries = server.requests.count(first)  # bounded: RETRIES + 1 per read of it (a batch may read it twice)
        assert tries % (read.RETRIES + 1) == 0 and tries <= 2 * (read.RETRIES + 1)
    assert not list((cache / "data").rglob("*.tar"))  # nothing wrong or partial was stored
    assert not [p for p in cache.rglob("*") if ".tmp-" in p.name]
