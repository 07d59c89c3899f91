"""``python -m leadio.shard``: preprocess a collection's frames once into bucket-grouped WebDataset shards.

    python -m leadio.shard --root R --collection full_pretrain [--workers N] [--shard-size 256MB]
    python -m leadio.shard --root R --collection full_pretrain --part 3/8     # one SLURM array task
    python -m leadio.shard --root R --collection full_pretrain --merge        # after all parts
    python -m leadio.shard verify R/shards/full_pretrain-<hash> [--deep]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence

from leadio.format import dataset_config_for_root

__all__ = ["main", "parse_size"]


def parse_size(text: str) -> int:
    """``256MB``, ``1.5GiB``, ``4096`` -> bytes."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"cannot parse size {text!r}; use e.g. 256MB or 1GiB")
    base = 1024 if (m[3] or "").lower() == "ib" else 1000
    return int(float(m[1]) * base ** " KMGT".index((m[2] or " ").upper()))


def _verify(argv: Sequence[str]) -> int:
    from leadio.shard.shardset import ShardSetError, open_shard_set
    from leadio.shard.verify import verify_shard_set

    parser = argparse.ArgumentParser(prog="python -m leadio.shard verify")
    parser.add_argument("shard_set", help="the shard set folder (<root>/shards/<collection>-<hash>)")
    parser.add_argument("--deep", action="store_true", help="also decode every member of every sample")
    args = parser.parse_args(argv)
    try:
        ss = open_shard_set(args.shard_set, check_routes=False)
    except ShardSetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = verify_shard_set(ss, deep=args.deep)
    print(report.summary())
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["verify"]:
        return _verify(argv[1:])
    from leadio.shard.build import DEFAULT_SHARD_SIZE, build_shard_set, merge_shard_set, shard_set_dir

    parser = argparse.ArgumentParser(prog="python -m leadio.shard", description=__doc__.split("\n\n")[0],
                                     epilog="Subcommand: verify <shard set> [--deep]")
    parser.add_argument("--root", required=True, help="dataset root (data/carla_leaderboard2)")
    parser.add_argument("--collection", default="full_pretrain",
                        help="bucket collection: full_pretrain, full_posttrain or a JSON spec")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes")
    parser.add_argument("--shard-size", type=parse_size, default=DEFAULT_SHARD_SIZE, help="target shard size")
    parser.add_argument("--samples-per-shard", type=int, default=None, help="fixed samples per shard")
    parser.add_argument("--part", default=None, help="i/N: write only part i of N (cluster mode)")
    parser.add_argument("--merge", action="store_true", help="write catalog and manifest from finished parts")
    parser.add_argument("--dataset-config", default=None, help="sensor setup (default: from the root path)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    if args.merge and args.part is None:
        from leadio.buckets import load_or_build

        config = dataset_config_for_root(args.root, args.dataset_config)
        coll, _ = load_or_build(args.root, args.collection)
        path = merge_shard_set(args.root, shard_set_dir(args.root, coll.name, config), config)
        print(f"merged: {path}")
        return 0
    report = build_shard_set(args.root, args.collection, workers=args.workers, shard_size=args.shard_size,
                             samples_per_shard=args.samples_per_shard, part=args.part,
                             merge=True if args.merge else None, progress=not args.quiet,
                             dataset_config=args.dataset_config)
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
