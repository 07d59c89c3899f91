"""Shard build rate: ``python -m benchmarks.shard_build --root R [--workers 1,2]``.

Builds the ``full_pretrain`` shard set of root R from scratch once per worker count (into a scratch copy of
the set folder, removed afterwards) and reports samples/s, MB/s, the speed-up over the first worker count,
and the bytes a sample takes in the shards against the raw route files it came from.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from leadio.buckets.builders import load_or_build
from leadio.format.config import dataset_config_for_root
from leadio.shard.build import build_shard_set, shard_set_dir


def _raw_bytes(root: Path, routes: set[str], frames_per_route: dict[str, list[int]]) -> int:
    total = 0
    for route in routes:
        for folder in (root / route).iterdir():
            if folder.is_dir():
                for f in folder.iterdir():
                    if f.stem.isdigit() and int(f.stem) in frames_per_route[route]:
                        total += f.stat().st_size
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--shard-size", type=int, default=64_000_000)
    args = parser.parse_args(argv)
    root = Path(args.root)
    coll, _ = load_or_build(root, "full_pretrain")
    set_dir = shard_set_dir(root, coll.name, dataset_config_for_root(root))
    backup = set_dir.with_name(set_dir.name + ".bench-backup")
    if set_dir.exists():
        set_dir.rename(backup)
    rows = []
    try:
        for w in [int(x) for x in args.workers.split(",")]:
            shutil.rmtree(set_dir, ignore_errors=True)
            t = time.perf_counter()
            report = build_shard_set(root, "full_pretrain", workers=w, shard_size=args.shard_size, progress=False)
            dt = time.perf_counter() - t
            rows.append({"workers": w, "samples": report.samples_written, "seconds": dt,
                         "samples_per_s": report.samples_written / dt, "mb_per_s": report.bytes_written / 1e6 / dt,
                         "shards": report.shards_total, "bytes": report.bytes_written})
    finally:
        shutil.rmtree(set_dir, ignore_errors=True)
        if backup.exists():
            backup.rename(set_dir)
    members = {r: f.tolist() for b in coll.buckets for r, f in b.members.items()}
    raw = _raw_bytes(root, set(members), members)
    n = rows[0]["samples"]
    print(f"{n} samples; raw route files {raw / n / 1e3:.0f} KB/frame, shards {rows[0]['bytes'] / n / 1e3:.0f} "
          f"KB/sample (both views)")
    print("| workers | samples/s | samples/s per worker | MB/s | speed-up |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['samples_per_s']:.1f} | {r['samples_per_s'] / r['workers']:.1f} | "
              f"{r['mb_per_s']:.1f} | {r['samples_per_s'] / rows[0]['samples_per_s']:.2f}x |")
    print(json.dumps({"raw_bytes_per_frame": raw / n, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
