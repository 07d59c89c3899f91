"""Two builds of one set at once and two catalog scans at once: both succeed, the result is the clean build's,
and a build that finds the set busy says whom it waits for."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from faultlib import REPO, assert_no_leftovers, diff, snapshot


def _start(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_two_builds_at_once_both_succeed_with_the_clean_result(tiny_root, reference):
    argv = ("leadio.shard", "--root", str(tiny_root), "--workers", "1", "--samples-per-shard", "3", "--quiet")
    procs = [_start(*argv) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert_no_leftovers(tiny_root)
    assert diff(snapshot(tiny_root), reference[1]) == []


def test_two_catalog_scans_at_once(tiny_root, reference):
    procs = [_start("leadio.catalog", "--root", str(tiny_root), "--workers", "1", "--quiet") for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("up to date, nothing rewritten" in out for out, _ in outs) >= 1  # the second found it current
    got = {k: v for k, v in snapshot(tiny_root).items() if k.startswith("catalog.zarr/")}
    assert got == {k: v for k, v in reference[1].items() if k.startswith("catalog.zarr/")}


def test_a_build_waits_for_the_one_holding_the_set_and_says_so(tiny_root, reference):
    from leadio.files import file_lock

    set_dir = tiny_root / "shards" / next(iter({k.split("/")[1] for k in reference[1] if k.startswith("shards/")}))
    set_dir.mkdir(parents=True)
    with file_lock(set_dir / ".build.lock", "test"):
        proc = _start("leadio.shard", "--root", str(tiny_root), "--workers", "1", "--samples-per-shard", "3",
                      "--quiet")
        time.sleep(4.0)  # long enough to import, scan and reach the set's lock
        assert proc.poll() is None and not (set_dir / "assignment.json").exists()  # it waits, it does not crash
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"waiting for shard set {set_dir} (another build or merge): in use (pid {os.getpid()} on" in err
    assert diff(snapshot(tiny_root), reference[1]) == []
