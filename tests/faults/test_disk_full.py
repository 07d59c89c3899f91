"""A real ENOSPC on every write path (a small tmpfs filled by a balloon file), then space freed and a rerun.

Each case mounts a tmpfs where one step writes, fills it so that the step's first write (or the one after a
measured number of pages) fails, and checks: the error is `DiskFullError` naming the file and saying what
to do, no partial file is left, and after the balloon is deleted a rerun gives the clean build's bytes.
Skipped with a reason where mounting is not permitted (not root).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from faultlib import assert_no_leftovers, build, diff, fill, snapshot, tmpfs

from leadio.files import DiskFullError


def _pages(paths) -> int:
    return sum(-(-p.stat().st_size // 4096) for p in paths if p.is_file())


def _set_files(reference_root: Path, exclude: tuple[str, ...]) -> list[Path]:
    set_dir = next((reference_root / "shards").glob("*/manifest.json")).parent
    return [p for p in set_dir.rglob("*") if p.is_file() and not p.name.endswith(".lock")
            and not any(part in exclude for part in p.relative_to(set_dir).parts)]


#: case -> (folder of the root to mount the tmpfs on, pages to leave free (callable), fragment of the failing file)
CASES = {
    "root-catalog": ("", lambda ref: 0, "catalog.zarr"),
    "bucket-file": ("buckets", lambda ref: 0, "full_pretrain_buckets.gz"),
    "assignment": ("shards", lambda ref: 0, "assignment.json"),
    "shard-tar": ("shards", lambda ref: 2, "000000.tar"),
    "set-catalog": ("shards", lambda ref: _pages(_set_files(ref, ("catalog.zarr", "manifest.json"))) + 2,
                    "catalog.zarr"),
    "manifest": ("shards", lambda ref: _pages(_set_files(ref, ("manifest.json",))) + 3, "manifest.json"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_full_disk_during_build_then_rerun(case, tiny_template, reference, tmp_path):
    folder, leave, fragment = CASES[case]
    mnt = tmp_path / "mnt"
    with tmpfs(mnt, "16m"):
        if folder:
            root = tmp_path / "data" / "carla_leaderboard2"
            shutil.copytree(tiny_template, root)
            (root / folder).mkdir()
            (root / folder).rmdir()
            (root / folder).symlink_to(mnt)
        else:
            root = mnt / "data" / "carla_leaderboard2"
            shutil.copytree(tiny_template, root)
        balloon = fill(mnt, leave(reference[0]))
        with pytest.raises(DiskFullError) as e:
            build(root)
        message = str(e.value)
        assert fragment in e.value.path and message.startswith(f"cannot write {e.value.path}: no space left")
        assert "free space and rerun the same command" in message and "\n" not in message
        assert not [p for p in root.rglob("*") if ".tmp-" in p.name]  # the partial file was removed
        balloon.unlink()
        build(root)
        assert_no_leftovers(root)
        got = snapshot(root)
    assert diff(got, reference[1]) == []


def test_full_disk_in_session_cache_then_rerun(reference, tmp_path, monkeypatch):
    from http_server import serve_directory
    from remote_read import read_all

    set_dir = next((reference[0] / "shards").glob("*/manifest.json")).parent
    served = tmp_path / "served"
    shutil.copytree(set_dir, served / set_dir.name)
    cache = tmp_path / "cache"
    with tmpfs(cache, "8m"), serve_directory(served, monkeypatch) as (url, _):
        location = f"{url}/{set_dir.name}"
        from leadio.session_cache import SessionCache

        SessionCache(cache, 64 << 20).fetch_small(f"{location}/manifest.json", "probe/x")  # folders and locks first
        balloon = fill(cache, 0)
        with pytest.raises(Exception) as e:
            read_all(location, str(cache), 64 << 20)
        assert "no space left on the device" in str(e.value) and str(cache) in str(e.value)
        balloon.unlink()
        assert read_all(location, str(cache), 64 << 20) == read_all(str(set_dir), str(tmp_path / "x"), 64 << 20)
        assert_no_leftovers(cache)


@pytest.mark.parametrize("what", ["checkpoint", "resume-state"])
def test_full_disk_during_checkpoint_saves_then_rerun(what, tmp_path):
    import torch
    from ckpt import write

    clean = tmp_path / "clean"
    write(clean)
    before = [p for p in clean.iterdir() if p.is_file()]
    logdir = tmp_path / "logdir"
    with tmpfs(logdir, "16m"):
        balloon = fill(logdir, 0 if what == "checkpoint" else _pages(before) + 1)
        with pytest.raises(DiskFullError) as e:
            write(logdir)
        expected = "model_0000.pth" if what == "checkpoint" else "resume/state.pth"
        assert e.value.path.endswith(expected), e.value.path
        assert not [p for p in logdir.rglob("*") if ".tmp-" in p.name]
        balloon.unlink()
        write(logdir)
        assert_no_leftovers(logdir)
        a = torch.load(clean / "resume" / "state.pth", weights_only=True)
        b = torch.load(logdir / "resume" / "state.pth", weights_only=True)
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
