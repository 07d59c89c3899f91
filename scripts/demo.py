"""`make demo`: the main job on the embedded default, end to end, with a summary a newcomer can read.

Steps (each is also a command of its own, printed in the summary):
  1. synthetic LEAD-format routes  (python -m leadio.synth)
  2. the catalog                    (python -m leadio.catalog)
  3. pretrain and posttrain buckets (python scripts/build_buckets_pretrain.py / _posttrain.py)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from leadio.buckets import load_or_build
from leadio.buckets.__main__ import format_table
from leadio.catalog import build_catalog
from leadio.synth import generate_root


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="demo/data/carla_leaderboard2")
    parser.add_argument("--routes", type=int, default=12)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    root = Path(args.root)
    steps: list[tuple[str, str, float, str]] = []

    t = time.perf_counter()
    synth = generate_root(root, args.routes, args.frames, args.seed, workers=args.workers)
    dt = time.perf_counter() - t
    raw_bytes = _dir_bytes(root / "data")
    frames = args.routes * args.frames
    steps.append(("synthetic routes", f"python -m leadio.synth --root {root} --routes {args.routes} --frames "
                  f"{args.frames} --seed {args.seed}", dt,
                  f"{args.routes} routes, {frames} frames, {raw_bytes / frames / 1e3:.0f} KB/frame"
                  + (f", {frames / dt:.0f} frames/s" if getattr(synth, "routes_written", 1) else " (already there)")))

    t = time.perf_counter()
    report = build_catalog(root, workers=args.workers)
    dt = time.perf_counter() - t
    steps.append(("catalog", f"python -m leadio.catalog --root {root}", dt,
                  f"{report.rows} frames of {report.routes_trainable}/{report.routes_found} trainable routes"
                  + ("" if report.rewritten else " (up to date)")))

    tables = []
    for name, script in (("full_pretrain", "build_buckets_pretrain.py"), ("full_posttrain",
                                                                           "build_buckets_posttrain.py")):
        t = time.perf_counter()
        collection, path = load_or_build(root, name, workers=args.workers)
        dt = time.perf_counter() - t
        steps.append((f"{name} buckets", f"python scripts/{script} --root {root}", dt,
                      f"{len(collection)} samples -> {path}"))
        tables.append(f"{name} ({path.name}):\n{format_table(collection)}")

    print("\n" + "=" * 100)
    print(f"leadio demo - dataset root: {root.resolve()}")
    print("=" * 100)
    width = max(len(s[0]) for s in steps)
    for what, _, seconds, result in steps:
        print(f"  {what.ljust(width)}  {seconds:6.1f}s  {result}")
    print()
    for table in tables:
        print(table + "\n")
    print("Rerun a step on its own:")
    for _, cmd, _, _ in steps:
        print(f"  .venv/bin/{cmd}" if cmd.startswith("python") else f"  {cmd}")
    print("\nNext: point --root at a real LEAD root (data/carla_leaderboard2) and run the same commands; "
          "`make test` runs the test suite.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
