"""Small filesystem helpers shared by the writers: atomic file and directory replacement."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

__all__ = ["atomic_write_bytes", "replace_dir", "temp_sibling"]


def temp_sibling(path: str | Path) -> Path:
    """A unique hidden temp name next to ``path`` (same filesystem, so a rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_dir(tmp_dir: str | Path, final_dir: str | Path) -> None:
    """Move a completely written ``tmp_dir`` to ``final_dir``, replacing what was there.

    A directory cannot be renamed over a non-empty one, so the old one is first renamed aside and deleted
    after the swap; a crash in between leaves either the old or the new directory plus hidden leftovers that
    the next writer ignores.
    """
    final_dir = Path(final_dir)
    old = None
    if final_dir.exists():
        old = temp_sibling(final_dir)
        os.rename(final_dir, old)
    os.rename(tmp_dir, final_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
