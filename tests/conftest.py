"""Shared fixtures: a small synthetic LEAD root, generated once per test session (per xdist worker)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_root_template(tmp_path_factory) -> Path:
    """A read-only template root: 4 synthetic routes x 20 frames (seed 3). Copy it before modifying."""
    from leadio.synth import generate_root

    root = tmp_path_factory.mktemp("template") / "data" / "carla_leaderboard2"
    generate_root(root, num_routes=4, frames_per_route=20, seed=3, workers=1, progress=False)
    return root


@pytest.fixture
def synth_root(synth_root_template, tmp_path) -> Path:
    """A private copy of the template root that a test may change."""
    root = tmp_path / "data" / "carla_leaderboard2"
    shutil.copytree(synth_root_template, root)
    return root


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (model tests on 2 shared cores), restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def make_built_root(synth_root_template):
    """``make(root, samples_per_shard=8)``: copies the template root to ``root`` (a new folder) and builds its
    full_pretrain shard set there (one worker); returns the set's folder."""
    from leadio.shard.build import build_shard_set

    def make(root: Path, samples_per_shard: int = 8) -> Path:
        shutil.copytree(synth_root_template, root)
        return build_shard_set(root, "full_pretrain", workers=1, samples_per_shard=samples_per_shard,
                               progress=False).set_dir

    return make
