"""``python killer.py POINT NTH PATTERN MODULE [ARGS...]``: run MODULE's ``__main__`` and SIGKILL this process at
POINT (the NTH time it is reached; PATTERN is an fnmatch of the file being renamed, for the rename points).

The kill is real (``os.kill(os.getpid(), SIGKILL)``: no handler, no cleanup, no atexit), only its moment is
chosen. Points:

- ``rename``: just before ``os.replace``/``os.rename`` onto a path matching PATTERN (its temp is complete);
- ``scan``: in the NTH route scan of a catalog;
- ``tar``: after the NTH sample was added to a shard's temp tar (mid-shard);
- ``torch_save``: halfway through writing a ``torch.save`` file matching PATTERN;
- ``download``: halfway through a session-cache download;
- ``build_pool``: in the main process, once the NTH shard of a ``--workers 2`` build is written (its pool
  workers and fork server are alive and busy).
"""

from __future__ import annotations

import fnmatch
import os
import runpy
import signal
import sys

point, nth, pattern, module, *args = sys.argv[1:]
nth = int(nth)
count = 0


def die_at_nth() -> None:
    global count
    count += 1
    if count >= nth:
        os.kill(os.getpid(), signal.SIGKILL)


if point == "rename":
    real_replace, real_rename = os.replace, os.rename

    def replace(src, dst, *a, **k):
        if fnmatch.fnmatch(str(dst), pattern):
            die_at_nth()
        return real_replace(src, dst, *a, **k)

    def rename(src, dst, *a, **k):
        if fnmatch.fnmatch(str(dst), pattern):
            die_at_nth()
        return real_rename(src, dst, *a, **k)

    os.replace, os.rename = replace, rename
elif point == "scan":
    import leadio.catalog as catalog

    real_scan = catalog.scan_route

    def scan(*a, **k):
        die_at_nth()
        return real_scan(*a, **k)

    catalog.scan_route = scan
elif point == "tar":
    from leadio.shard.tarwriter import ShardTarWriter

    real_add = ShardTarWriter.add_sample

    def add(self, *a, **k):
        real_add(self, *a, **k)
        self._out.f.flush()
        die_at_nth()

    ShardTarWriter.add_sample = add
elif point == "torch_save":
    import torch

    real_save = torch.save

    def save(obj, f, *a, **k):
        name = getattr(f, "name", f)
        if fnmatch.fnmatch(str(name), pattern):
            import io

            buf = io.BytesIO()
            real_save(obj, buf, *a, **k)
            with open(name, "wb") as out:
                out.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            die_at_nth()
        return real_save(obj, f, *a, **k)

    torch.save = save
elif point == "download":
    from leadio.read import copy_into, read_small
    from leadio.session_cache import SessionCache

    real_init = SessionCache.__init__

    def copy(location, dst, expected_size, checksum=None):
        data = read_small(location)
        dst.write(data[: len(data) // 2])
        dst.flush()
        die_at_nth()
        return copy_into(location, dst, expected_size, checksum)

    def init(self, *a, **k):  # every cache the module opens gets the dying copy through its public parameter
        real_init(self, *a, **{**k, "copy": copy})

    SessionCache.__init__ = init
elif point == "build_pool":
    import leadio.shard.build as build

    real_update = build.tqdm.update

    def update(self, n=1):
        die_at_nth()
        return real_update(self, n)

    build.tqdm.update = update
else:
    raise SystemExit(f"unknown kill point {point!r}")

sys.argv = [module, *args]
if module.endswith(".py"):
    runpy.run_path(module, run_name="__main__")
else:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
