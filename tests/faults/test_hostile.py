"""Hostile files are refused from their headers, before anything the size of their claims is allocated:
a JPEG declaring 60000x60000, a LAZ declaring a billion points, a Zarr catalog declaring absurd shapes.

Each runs in a child process whose address space is capped (RLIMIT_AS, 3 GiB): had the file's claim been
believed, the allocation (10.8 GB of pixels, 10^9 points, 10^12 rows) would fail there with a MemoryError
instead of the one-line refusal the test expects.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
from faultlib import HERE, REPO


def _run_capped(code: str) -> subprocess.CompletedProcess:
    prelude = "import resource; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=REPO, env={"PYTHONPATH": f"{REPO}:{HERE}", "PATH": "/usr/bin:/bin",
                                         "OMP_NUM_THREADS": "1"}, timeout=120)


def _jpeg_declaring(src: bytes, width: int, height: int) -> bytes:
    data = bytearray(src)
    i = 2
    while i < len(data):
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):  # SOFn: precision, height, width
            data[i + 5:i + 7] = height.to_bytes(2, "big")
            data[i + 7:i + 9] = width.to_bytes(2, "big")
            return bytes(data)
        i += 2 + length
    raise AssertionError("no SOF marker")


def test_jpeg_declaring_60000x60000_is_refused_before_decoding(tiny_root):
    route = next(p for p in sorted((tiny_root / "data").glob("*/*")) if (p / "rgb" / "0001.jpg").exists())
    path = route / "rgb" / "0001.jpg"
    path.write_bytes(_jpeg_declaring(path.read_bytes(), 60000, 60000))
    proc = _run_capped(f"""
        from leadio.format.config import DATASET_CONFIGS
        from leadio.format.errors import FrameReadError
        from leadio.format.frame import read_frame
        try:
            read_frame({str(route)!r}, 1, DATASET_CONFIGS["carla_leaderboard2"], modalities=["rgb"])
        except FrameReadError as e:
            print(e)
        """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rgb/0001.jpg: JPEG header declares 60000x60000, expected 1152x384 (carla_leaderboard2)" in proc.stdout


def test_laz_declaring_a_billion_points_is_refused_before_reading(tiny_root):
    route = sorted((tiny_root / "data").glob("*/*"))[0]
    path = route / "lidar" / "0001.laz"
    data = bytearray(path.read_bytes())
    data[107:111] = (0).to_bytes(4, "little")  # legacy count 0: LAS 1.4 readers use the 64-bit one
    data[247:255] = (10**9).to_bytes(8, "little")
    import laspy

    header = laspy.open(path).header
    if header.version.minor < 4:
        data[107:111] = (10**9).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    proc = _run_capped(f"""
        from leadio.format.frame import read_lidar
        from leadio.format.errors import FrameReadError
        try:
            read_lidar({str(route)!r}, 1)
        except FrameReadError as e:
            print(e)
        """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "lidar/0001.laz: LAZ header declares 1000000000 points in a" in proc.stdout
    assert "the file is damaged or not a LiDAR sweep" in proc.stdout


@pytest.mark.parametrize("where", ["root", "set"])
def test_zarr_catalog_with_absurd_shapes_is_refused_then_rebuilt(where, reference, tmp_path):
    root = tmp_path / "data" / "carla_leaderboard2"
    shutil.copytree(reference[0], root)
    base = root if where == "root" else next((root / "shards").glob("*/manifest.json")).parent
    meta = base / "catalog.zarr" / "speed" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["shape"] = [10**12]
    meta.write_text(json.dumps(doc))
    call = ("from leadio.catalog_store import load_catalog as f; f" if where == "root" else
            "from leadio.shard.shardset import open_shard_set as f; f")
    proc = _run_capped(f"""
        {call}({str(base)!r})
        """)
    assert proc.returncode == 1 and "MemoryError" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "array speed declares shape (1000000000000,), which no catalog has" in last
    fix = "python -m leadio.catalog --root" if where == "root" else "python -m leadio.shard --root"
    assert fix in last
    from faultlib import build, diff, snapshot

    build(root)  # the rerun rewrites the catalog
    assert diff(snapshot(root), reference[1]) == []
