"""Shared machinery of the fault suite: a tiny root, its clean build, tree snapshots, leftover checks, tmpfs.

The fault tests compare every repaired tree with a clean build of the same raw files, byte for byte
(`snapshot`): everything under the root except the stamp cache (which records mtimes) and lock files (empty
or holding the last holder's pid).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SPS = 3  # samples per shard: several shards from a few frames


def make_root(dst: Path) -> Path:
    from leadio.synth import generate_root

    root = dst / "data" / "carla_leaderboard2"
    generate_root(root, num_routes=3, frames_per_route=8, seed=5, workers=1, progress=False)
    return root


def build(root: Path, **kw) -> object:
    from leadio.shard.build import build_shard_set

    return build_shard_set(root, "full_pretrain", workers=kw.pop("workers", 1), samples_per_shard=SPS,
                           progress=False, **kw)


def is_lock(path: Path) -> bool:
    return path.name.endswith(".lock")


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root`` but the stamp cache and lock files."""
    out = {}
    for folder, _, names in os.walk(root, followlinks=True):  # a test may mount a tmpfs behind a symlink
        for name in names:
            p = Path(folder, name)
            rel = p.relative_to(root).as_posix()
            if not rel.startswith(".leadio/") and not is_lock(p) and name != "balloon":
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return dict(sorted(out.items()))


def diff(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def assert_no_leftovers(*folders: Path, tag: str | None = None) -> None:
    """No temp file or folder, no held lock, and (with ``tag``) no process started with that tag, is left."""
    for folder in folders:
        files = [Path(d, n) for d, _, names in os.walk(folder, followlinks=True) for n in names]
        temps = [p for p in files if ".tmp-" in p.name or ".part-" in p.name]
        assert not temps, f"leftover temps: {temps[:5]}"
        for lock in [p for p in files if is_lock(p)]:
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if someone holds it
            finally:
                os.close(fd)
    if tag is not None:
        deadline = time.time() + 10
        while True:
            alive = []
            for p in psutil.process_iter(["pid"]):
                with contextlib.suppress(psutil.Error):
                    if p.environ().get("LEADIO_FAULT_TAG") == tag and p.status() != psutil.STATUS_ZOMBIE:
                        alive.append(p)
            if not alive or time.time() > deadline:
                break
            time.sleep(0.1)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        assert not alive, f"processes left running: {[(p.pid, p.cmdline()[:3]) for p in alive]}"


def run_killed(point: str, *argv: str, nth: int = 1, pattern: str = "", timeout: float = 120) -> str:
    """Run ``python killer.py`` (a command that SIGKILLs itself at ``point``); returns its tag for
    `assert_no_leftovers`. Fails if the command did not die by SIGKILL (the point was never reached)."""
    tag = uuid.uuid4().hex
    env = {**os.environ, "LEADIO_FAULT_TAG": tag, "PYTHONPATH": f"{REPO}{os.pathsep}{HERE}"}
    proc = subprocess.run([sys.executable, str(HERE / "killer.py"), point, str(nth), pattern, *argv], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == -9, f"{point}: exit {proc.returncode}, kill point not reached:\n{proc.stderr[-3000:]}"
    return tag


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "32m"):
    """Mount a small tmpfs at ``path`` (skips the test when mounting is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for a real ENOSPC (needs root / CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path, leave_pages: int = 0) -> Path:
    """Fill ``folder``'s filesystem with a balloon file, then give back ``leave_pages`` pages; returns it."""
    balloon = folder / "balloon"
    with open(balloon, "wb", buffering=0) as f:
        for block in (b"\0" * (1 << 20), b"\0" * 4096):
            try:
                while f.write(block):
                    pass
            except OSError as e:
                assert e.errno == errno.ENOSPC
    size = balloon.stat().st_size
    os.truncate(balloon, max(0, size - leave_pages * 4096))
    return balloon


def copy_root(src: Path, dst_parent: Path) -> Path:
    root = dst_parent / "data" / "carla_leaderboard2"
    shutil.copytree(src, root)
    return root
