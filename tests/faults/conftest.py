"""Fixtures of the fault suite: a tiny synthetic root (3 routes x 8 frames) and its clean build."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faultlib import build, copy_root, make_root, snapshot


@pytest.fixture(scope="session")
def tiny_template(tmp_path_factory) -> Path:
    """Raw routes only (never modified: copy it)."""
    return make_root(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def reference(tiny_template, tmp_path_factory) -> tuple[Path, dict]:
    """(root, snapshot) of an uninterrupted build of the tiny root."""
    root = copy_root(tiny_template, tmp_path_factory.mktemp("reference"))
    build(root)
    return root, snapshot(root)


@pytest.fixture
def tiny_root(tiny_template, tmp_path) -> Path:
    return copy_root(tiny_template, tmp_path)
