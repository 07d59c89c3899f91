"""The peer rows of benchmarks.loader_throughput (issue 25) kept honest without timing: every installed peer
delivers leadio cpu's tensors for the same samples, pass after pass; a peer that is not installed is skipped with
a one-line reason."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `benchmarks` is a folder of the repo, not installed

from benchmarks.loader_throughput import main
from benchmarks.loader_throughput import peers as peers_mod
from benchmarks.loader_throughput.bench import BASELINE, Bench, choose_rows, ensure_shard_set, isolated
from benchmarks.loader_throughput.checks import compare_samples, load_samples
from benchmarks.loader_throughput.peers import (
    DALI_WDS,
    ENERGON,
    FFCV,
    MDS,
    MDS_REMOTE,
    PEER_ROWS,
    best_peer_ratios,
    expand_loaders,
    peer_available,
    runnable_loaders,
)
from benchmarks.loader_throughput.rows import make_row
from benchmarks.loader_throughput.timing import Result
from benchmarks.reference_loaders import sample_refs

RUNNABLE = [p for p in PEER_ROWS if p != FFCV]


@pytest.fixture(scope="module")
def bench(tmp_path_factory, synth_root_template) -> Bench:
    """The template root's pretrain shard set (small shards) and the first 4 samples of its epoch-0 plan, in
    batches of 2 (so a pass is two batches and the workers share it)."""
    root = tmp_path_factory.mktemp("peers") / "data" / "carla_leaderboard2"
    shutil.copytree(synth_root_template, root)
    ss = ensure_shard_set(root, workers=1, samples_per_shard=8)
    return Bench(root, ss, sample_refs(ss, choose_rows(ss, 4)), 2, root / "bench_reference_cache")


@pytest.fixture(scope="module")
def reference(bench) -> dict:
    return isolated(load_samples, bench, BASELINE, 0)


def _two_passes(bench: Bench, name: str, workers: int) -> list[list[int]]:
    """The catalog rows each of two passes of the row delivers (as the timing harness runs it)."""
    row = make_row(bench, name, workers)
    try:
        return [row.run_pass()[1] for _ in range(2)]
    finally:
        row.close()


@pytest.mark.parametrize("name", RUNNABLE)
def test_each_installed_peer_delivers_leadio_cpus_tensors(bench, reference, name):
    ok, why = peer_available(name)
    if not ok:
        pytest.skip(why)
    workers = 2 if name in (MDS, DALI_WDS) else 1  # a multi-worker split for some, each peer at least once
    got = isolated(load_samples, bench, name, workers)  # in a fresh process, as check_rows does
    assert sorted(got) == sorted(bench.rows)
    ok, diffs, problems = compare_samples(got, reference)
    assert ok, (name, problems)
    assert set(diffs) <= {"rgb"} and diffs.get("rgb", 0) <= 1, (name, diffs)
    one = got[bench.rows[0]]
    assert one["rgb"].shape == (3, 384, 1152) and one["rgb"].dtype == np.uint8 and int(one["view"]) == 0
    # every pass delivers every chosen sample once (no padding, no repeats), as the timing harness checks
    passes = isolated(_two_passes, bench, name, 0 if name == ENERGON else 2)
    assert [sorted(p) for p in passes] == [sorted(bench.rows)] * 2, (name, passes)


def test_the_remote_row_reads_through_the_loopback_endpoint(bench):
    ok, why = peer_available(MDS_REMOTE)
    if not ok:
        pytest.skip(why)
    served, size = isolated(_served_bytes, bench)
    assert served >= size > 0  # every MDS shard came over http (on the demo set every pass downloads again)


def _served_bytes(bench: Bench) -> tuple[int, int]:
    """(bytes the loopback S3 endpoint served in two passes, the MDS shards' bytes)."""
    import http.server

    served = []
    orig = http.server.ThreadingHTTPServer.__init__

    def spy(self, address, handler, *a, **kw):
        served.append(handler)
        orig(self, address, handler, *a, **kw)

    http.server.ThreadingHTTPServer.__init__ = spy
    row = make_row(bench, MDS_REMOTE, 1)
    try:
        row.run_pass()
        row.run_pass()
        return served[0].served, row.storage_bytes
    finally:
        row.close()


def test_a_peer_not_installed_is_skipped_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(peers_mod, "_find", lambda module: module != "litdata")
    ok, why = peer_available("litdata")
    assert not ok and why == "litdata is not installed (pip install litdata, or the 'peers' extra)"
    lines: list[str] = []
    assert runnable_loaders([BASELINE, "litdata", FFCV], say=lines.append) == [BASELINE]
    assert lines == [f"skip litdata: {why}", f"skip {FFCV}: {peers_mod.FFCV_WHY}"]
    assert all("\n" not in line for line in lines)
    with pytest.raises(RuntimeError, match="^litdata: litdata is not installed"):
        peers_mod.make_peer_row(None, "litdata", 1)  # type: ignore[arg-type]


def test_the_command_line_names_peers_and_skips_them_without_a_traceback(monkeypatch, bench, capsys, tmp_path):
    assert expand_loaders(["leadio cpu", "peers", "litdata"]) == ["leadio cpu", *PEER_ROWS]
    monkeypatch.setattr(peers_mod, "_find", lambda module: False)  # no peer installed
    monkeypatch.setattr("benchmarks.loader_throughput.run_benchmark",
                        lambda root, **kw: print(runnable_loaders(kw["loaders"])))
    assert main(["--root", str(bench.root), "--loaders", "leadio cpu,peers", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out[:-1]] == [f"skip {p}" for p in PEER_ROWS]
    assert out[-1] == "['leadio cpu']"
    with pytest.raises(SystemExit):
        main(["--root", str(bench.root), "--loaders", "leadio cpu,nope"])


def test_the_report_gives_leadio_over_the_best_peer_per_worker_count():
    def r(loader, w, rate):
        return Result(loader, w, 8, [1.0], rate, 1.0, "", 0, None, None)

    results = [r(BASELINE, 0, 300), r(MDS, 0, 100), r(DALI_WDS, 0, 200), r("decode ceiling", 0, 900),
               r(BASELINE, 2, 600), r("litdata", 2, 300)]
    assert best_peer_ratios(results, BASELINE) == [
        {"workers": 0, "against": f"best peer ({DALI_WDS})", "target": 1.5, "achieved": 1.5, "met": True},
        {"workers": 2, "against": "best peer (litdata)", "target": 1.5, "achieved": 2.0, "met": True}]
