"""The one home of leadio's file-safety rules: temp names, atomic writes, locks, leftovers and full disks.

Owns: the temp-name convention (`temp_sibling`, recognised by `temp_target`), atomic replacement of files
(`atomic_write_bytes`) and folders (`replace_dir`), the lock helper (`file_lock`), the removal of what killed
writers left (`remove_stale_temps`), the full-disk error (`DiskFullError`, raised by `writing`) and whole-file
hashing (`file_xxh3`). Every writer (catalog, buckets, shard builds, checkpoints, the session cache's
downloads, `leadio.read.fetch_file`) uses these, so a leftover of any of them is found and removed the same way.

Every writer writes a hidden temp sibling ``.<name>.tmp-<pid>-<tag>`` and renames it into place. A writer
killed in between leaves the temp behind; the next writer of the same path removes it (`remove_stale_temps`)
while holding the lock that makes it the only writer (`file_lock`: ``fcntl.flock``, which the kernel drops when
its holder dies, kill -9 included, so a lock is never stale). Releases before the temp names were unified named
the session cache's downloads ``.<name>.part-<pid>-<tag>``; such temps may still sit on users' disks, so both
`remove_stale_temps` and `temp_target` still recognise them (nothing writes them any more). A full disk surfaces
as `DiskFullError`, which names the file being written and says what to do (`writing`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DiskFullError", "LockedError", "atomic_write_bytes", "file_lock", "file_xxh3", "remove_stale_temps",
           "replace_dir", "temp_sibling", "temp_target", "writing"]

log = logging.getLogger(__name__)
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_TEMP_MARKERS = (".tmp-", ".part-")  # ".part-": the session cache's downloads before the names were unified
_TEMP = re.compile(r"\.(?P<target>.+)(?:\.tmp|\.part)-\d+-[0-9a-f]{8}")  # exactly what temp_sibling makes


class DiskFullError(OSError):
    """A write failed for lack of space (or a file-size limit); names the file and the fix."""

    def __init__(self, code: int, path: str | Path, detail: str = ""):
        super().__init__(code, detail or os.strerror(code))
        self.path = str(path)
        try:
            free = shutil.disk_usage(next(p for p in Path(path).parents if p.exists())).free
            room = f"{free / 1e6:.1f} MB free there"
        except (OSError, StopIteration):
            room = "free space unknown"
        why = "the file-size limit (ulimit -f) was reached" if code == errno.EFBIG else "no space left on the device"
        self.message = (f"cannot write {self.path}: {why} ({room}); free space and rerun the same command (finished "
                        f"work is kept, the partial file was removed)")

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable across process pools
        return type(self), (self.errno, self.path, self.strerror)


class LockedError(OSError):
    """Another process holds a lock that was requested without waiting."""


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an ENOSPC/EDQUOT/EFBIG raised inside the block into a `DiskFullError` naming ``path``."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError) as e:  # torch.save wraps the OSError of a file object in a RuntimeError
        cause: BaseException | None = e
        while cause is not None and not (isinstance(cause, OSError) and cause.errno in _FULL):
            cause = cause.__context__
        if isinstance(cause, OSError):
            raise DiskFullError(cause.errno, path, cause.strerror or "") from e
        raise


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete the temp siblings (files or folders) that killed writers of ``path`` left; call with its lock held.

    Removes every ``.<name>.tmp-*`` and ``.<name>.part-*`` beside ``path`` (any tail: older releases and the
    benchmarks wrote shorter tags), where ``<name>`` is ``path``'s name.

    Returns:
        The paths removed.
    """
    path = Path(path)
    prefixes = tuple(f".{path.name}{marker}" for marker in _TEMP_MARKERS)
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for stale in path.parent.iterdir():
            if not stale.name.startswith(prefixes):
                continue
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
            removed.append(stale)
    if removed:
        log.info("removed %d leftover(s) of a killed writer of %s", len(removed), path)
    return removed


@contextlib.contextmanager
def file_lock(path: str | Path, what: str, *, shared: bool = False, wait: bool = True,
              brief: bool = False, record_holder: bool = True) -> Iterator[None]:
    """Hold an flock on ``path`` (created if missing, with its folder) for the block.

    Args:
        path: the lock file.
        what: what the lock guards, for the messages (``"catalog <path>"``).
        shared: take a shared lock instead of an exclusive one.
        wait: wait for the lock; False raises `LockedError` at once when another process holds it.
        brief: the lock is held only for moments (e.g. one small file write by a build's own workers): waiting
            for it is logged at debug level instead of as a warning.
        record_holder: an exclusive holder writes ``pid <pid> on <host> since <time>`` into the file, so that a
            process that has to wait (or is refused) can say who it waits for. False keeps the file empty, for
            folders that account for every byte they hold (the session cache).

    Lock files stay on disk (deleting one races with its next user); a lock file nobody holds is free, never
    stale.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            if not wait:
                raise LockedError(errno.EWOULDBLOCK, f"{what} is in use ({holder}; lock file {path}); wait for it "
                                                     f"to finish, then rerun") from None
            log.log(logging.DEBUG if brief else logging.WARNING, "waiting for %s: in use (%s; lock file %s)",
                    what, holder, path)
            fcntl.flock(fd, mode)
        if not shared and record_holder:
            with contextlib.suppress(OSError):  # who holds it is only a courtesy (and a full disk must not fail here)
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}"
                          .encode(), 0)
        yield
    finally:
        os.close(fd)  # the only fd of this open file description: closing it releases the lock


def temp_sibling(path: str | Path) -> Path:
    """A unique hidden temp name next to ``path`` (same filesystem, so a rename is atomic):
    ``.<name>.tmp-<pid>-<8 hex>``, the only temp-name convention of leadio."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def temp_target(name: str) -> str | None:
    """The file name a temp sibling called ``name`` was written for, or None if ``name`` is no such temp.

    Recognises exactly the names `temp_sibling` makes, and the session cache's former
    ``.<name>.part-<pid>-<8 hex>``: a scan that meets a temp can tell which entry (and lock) it belongs to.
    """
    m = _TEMP.fullmatch(name)
    return m["target"] if m else None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with writing(path), open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _exchange(a: str | Path, b: str | Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_dir(tmp_dir: str | Path, final_dir: str | Path) -> None:
    """Move a completely written ``tmp_dir`` to ``final_dir``, replacing what was there.

    A directory cannot be renamed over a non-empty one. On Linux the two are swapped atomically
    (``renameat2(RENAME_EXCHANGE)``) and the old one, now under the temp name, is deleted: readers always see a
    complete directory. Elsewhere the old one is first renamed aside and deleted after the rename; a crash in
    between leaves no directory under ``final_dir`` (the next writer removes the leftovers).
    """
    final_dir = Path(final_dir)
    if final_dir.exists() and _exchange(tmp_dir, final_dir):
        shutil.rmtree(tmp_dir, ignore_errors=True)
        return
    old = None
    if final_dir.exists():
        old = temp_sibling(final_dir)
        os.rename(final_dir, old)
    os.rename(tmp_dir, final_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def file_xxh3(path: str | Path, *, bits: int = 128) -> str:
    """xxh3 hex digest of a whole file, read in 4 MiB chunks: 128 bits for shard checksums in manifests and
    sidecars, ``bits=64`` for the raw-file stamps."""
    import xxhash

    h = xxhash.xxh3_128() if bits == 128 else xxhash.xxh3_64()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()
