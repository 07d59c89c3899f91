"""benchmarks.loader_throughput kept honest without timing: every row delivers leadio cpu's tensors for the same
samples, the ceiling decodes exactly the bytes the shards hold, and the outputs carry every row and ratio."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `benchmarks` is a folder of the repo, not installed

from benchmarks.loader_throughput import run_benchmark
from benchmarks.loader_throughput.bench import (
    ALL_CORES,
    BASELINE,
    LEAD_ROWS,
    LOADERS,
    TARGETS,
    Bench,
    ceiling_bytes,
    choose_rows,
    ensure_shard_set,
)
from benchmarks.loader_throughput.checks import compare_samples, load_samples
from benchmarks.reference_loaders import build_reference_cache, cache_path, sample_refs
from leadio.format.pickles import load_lzma_pickle
from leadio.schema import DEFAULT_KEYS, member_name, members_for_keys


@pytest.fixture(scope="module")
def bench(tmp_path_factory, synth_root_template) -> Bench:
    """The template root's pretrain shard set (small shards) and the first 3 samples of its epoch-0 plan."""
    root = tmp_path_factory.mktemp("bench") / "data" / "carla_leaderboard2"
    shutil.copytree(synth_root_template, root)
    ss = ensure_shard_set(root, workers=1, samples_per_shard=8)
    b = Bench(root, ss, sample_refs(ss, choose_rows(ss, 3)), 3, root / "bench_reference_cache")
    build_reference_cache(root, b.samples, ss.config, b.cache_dir, workers=1)
    return b


def test_every_row_delivers_leadio_cpus_tensors_for_the_same_samples(bench):
    # workers=0: in this process (these samples are read once; nothing forks after the LAZ reads)
    ref = load_samples(bench, BASELINE, workers=0)
    assert sorted(ref) == sorted(bench.rows)
    one = ref[bench.rows[0]]
    assert one["rgb"].shape == (3, 384, 1152) and one["rgb"].dtype == np.uint8
    assert one["lidar"].shape == (1, 320, 384) and one["waypoints"].shape == (8, 2) and int(one["view"]) == 0
    for name in LOADERS:
        ok, diffs, problems = compare_samples(load_samples(bench, name, workers=0), ref)
        assert ok, (name, problems)
        assert set(diffs) <= {"rgb"} and diffs.get("rgb", 0) <= 1, (name, diffs)


def test_the_lead_rows_deliver_to_lead_batch_of_leadio_cpus_batch(bench):
    """The opt-in LEAD rows (issue 24): ``open_dataset(output="lead")`` and the in-memory decode + conversion
    give `to_lead_batch` of leadio cpu's batch, sample by sample (timing keys left out)."""
    ref = load_samples(bench, BASELINE, workers=0, lead=True)
    assert sorted(ref) == sorted(bench.rows) and ref[bench.rows[0]]["depth"].shape == (384, 1152)
    assert not any(k.startswith("loading") for k in ref[bench.rows[0]])
    for name in LEAD_ROWS:
        for workers in (0, 2):
            ok, diffs, problems = compare_samples(load_samples(bench, name, workers=workers), ref)
            assert ok and not diffs, (name, workers, problems, diffs)


def test_the_comparison_catches_a_different_tensor(bench):
    ref = load_samples(bench, "decode ceiling")
    bad = {r: {k: v.copy() for k, v in s.items()} for r, s in ref.items()}
    row = bench.rows[1]
    bad[row]["bev_semantic"][0, 0] += 1
    bad[row]["rgb"][0, 0, 0] ^= 2  # beyond the ±1 JPEG tolerance
    ok, diffs, problems = compare_samples(bad, ref)
    assert not ok and diffs == {"bev_semantic": 1.0, "rgb": 2.0} and len(problems) == 2
    del bad[row]
    assert not compare_samples(bad, ref)[0]


def test_the_ceiling_decodes_the_bytes_the_shards_hold(bench):
    ss = bench.shard_set
    members = members_for_keys(DEFAULT_KEYS, ss.layout)
    for sample, got in zip(bench.samples, ceiling_bytes(bench), strict=True):
        shard = ss.shard_path(int(ss.catalog["shard"][sample.row]))
        with tarfile.open(shard) as tar:
            for name, member in members.items():
                stored = tar.extractfile(f"{sample.key}.{member_name(member, 'normal')}").read()
                assert got[name] == stored, (sample.key, name)


def test_the_reference_cache_is_plain_data_in_leads_layout(bench):
    sample = bench.samples[0]
    path = cache_path(bench.cache_dir, sample, bench.shard_set.config)
    scenario, route = sample.route.split("/")[1:]
    assert path.relative_to(bench.cache_dir).parts == (
        scenario, route, "1152", "384", "-32", "64", "-40", "40", "True", "True", "True", "True", "False", "10",
        "normal", f"{sample.frame:04d}.pkl")
    entry = load_lzma_pickle(path)  # leadio's restricted unpickler: builtins and bytes only
    assert isinstance(entry, dict) and entry["image"][:2] == b"\xff\xd8" and len(entry["radars"]) == 4


def test_outputs_have_every_row_and_ratio(bench, tmp_path):
    out = tmp_path / "results"
    doc = run_benchmark(bench.root, workers=[1], samples=4, passes=1, batch_size=2, out_dir=out, warm=True,
                        build_workers=1, samples_per_shard=8, cache_dir=bench.cache_dir)
    on_disk = json.loads((out / "loader_throughput.json").read_text())
    assert on_disk["rows"] == doc["rows"]
    rows = {r["loader"]: r for r in on_disk["rows"]}
    assert set(rows) == set(LOADERS) | {ALL_CORES}
    cores = os.cpu_count() or 1
    all_cores = rows.pop(ALL_CORES)  # derived: cores x the 1-process ceiling of the same run
    assert all_cores["workers"] == cores and all_cores["pass_seconds"] == []
    assert all_cores["samples_per_s"] == pytest.approx(cores * rows["decode ceiling"]["samples_per_s"])
    for r in rows.values():
        assert r["workers"] == 1 and r["samples"] == 4 and r["samples_per_s"] > 0 and r["mb_per_s"] > 0
        assert r["ratio_to_leadio_cpu"] == pytest.approx(r["samples_per_s"] / rows[BASELINE]["samples_per_s"])
        assert len(r["pass_seconds"]) == 1
        if r["loader"].startswith("leadio"):  # decode threads: no worker process, the memory is the main's
            assert r["worker_peak_rss_mib"] is None and r["main_peak_rss_mib"] > 0
        else:
            assert r["worker_peak_rss_mib"] > 0
    assert rows[BASELINE]["ratio_to_leadio_cpu"] == 1.0
    assert all(c["ok"] for c in on_disk["checks"].values()) and set(on_disk["checks"]) == set(LOADERS)
    # the all-cores target compares leadio cpu at `cores` workers, measured here only on a 1-core machine
    assert {t["against"] for t in on_disk["targets"]} == set(TARGETS) - ({ALL_CORES} if cores > 1 else set())
    assert on_disk["meta"]["cache_mode"] == "warm" and on_disk["meta"]["samples"] == 4
    table = (out / "loader_throughput.md").read_text()
    assert all(f"| {name} | 1 |" in table for name in LOADERS)
    assert (out / "loader_throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
