"""``python -m leadio.shard``: preprocess a collection's frames once into bucket-grouped WebDataset shards.

    python -m leadio.shard [--root R] [--collection full_pretrain] [--workers N] [--shard-size 256MiB]
    python -m leadio.shard --root R --collection full_pretrain --part 3/8     # one SLURM array task (0/8..7/8)
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
from pathlib import Path

from leadio.format.config import dataset_config_for_root

__all__ = ["main", "parse_size"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_size(text: str) -> int:
    """``256MB``, ``1.5GiB``, ``4096`` -> bytes."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"cannot parse size {text!r}; use e.g. 256MB or 1GiB")
    base = 1024 if (m[3] or "").lower() == "ib" else 1000
    return int(float(m[1]) * base ** " KMGT".index((m[2] or " ").upper()))


DESCRIPTION = "Preprocess a bucket collection's frames once into bucket-grouped WebDataset tar shards."
EXAMPLES = """examples:
  python -m leadio.shard                                      # data/carla_leaderboard2, full_pretrain
  python -m leadio.shard --root R --part 3/8                  # one SLURM array task (parts count from 0)
  python -m leadio.shard --root R --merge                     # after all parts
  python -m leadio.shard verify R/shards/full_pretrain-<hash> [--deep]"""


def _verify(argv: Sequence[str], prog: str) -> int:
    from leadio.cli import make_parser, run_guarded
    from leadio.shard.shardset import open_shard_set
    from leadio.shard.verify import verify_shard_set

    parser = make_parser(prog, "Check every shard of a set against its manifest and catalog; exit 1 on a problem.")
    parser.add_argument("shard_set", help="the shard set folder (<root>/shards/<collection>-<hash>)")
    parser.add_argument("--deep", action="store_true", help="also decode every member of every sample")
    args = parser.parse_args(argv)

    def run() -> int:
        from leadio.shard.shardset import ShardSetError, StaleShardSetError

        stale = None
        try:
            try:  # the check open_dataset makes: routes added, removed or changed since the build
                ss = open_shard_set(args.shard_set, verify=False)
            except StaleShardSetError as e:
                stale = e
                ss = open_shard_set(args.shard_set, check_routes=False, verify=False)
        except ShardSetError as e:  # a set whose manifest and catalog disagree: that is verification's finding
            if not (Path(args.shard_set) / "manifest.json").is_file():
                raise
            print(f"verified 0 shards: 1 problem(s)\n  - {e}")
            return 1
        report = verify_shard_set(ss, deep=args.deep)
        if stale is not None:  # its bytes may be intact, but open_dataset refuses it
            report.problems.insert(0, str(stale))
        print(report.summary())
        return 0 if report.ok else 1

    return run_guarded(run, args.verbose, prog, interrupted="interrupted (verify changes nothing; rerun it to check "
                                                           "again)")


def main(argv: Sequence[str] | None = None, prog: str = "python -m leadio.shard") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["verify"]:
        return _verify(argv[1:], prog if prog.endswith("verify") else f"{prog} verify")
    from leadio.cli import add_root, make_parser, run_guarded, workers_help
    from leadio.shard.build import build_shard_set, merge_shard_set, shard_set_dir

    parser = make_parser(prog, DESCRIPTION, epilog=EXAMPLES)
    add_root(parser)
    parser.add_argument("--collection", default="full_pretrain",
                        help="bucket collection: full_pretrain, full_posttrain or a JSON spec")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help=workers_help())
    parser.add_argument("--shard-size", type=parse_size, default=None,
                        help="target shard size (e.g. 256MB = 256e6 bytes, 1GiB = 2^30); an existing set keeps its "
                             "own size unless this or --samples-per-shard is given (default: 256MiB)")
    parser.add_argument("--samples-per-shard", type=_positive, default=None,
                        help="fixed samples per shard (overrides --shard-size)")
    parser.add_argument("--skip-bad-routes", action="store_true",
                        help="leave unreadable routes out of the set (counted and reported) instead of stopping")
    parser.add_argument("--part", default=None,
                        help="i/N: write only part i of N, counting from 0 (0/N .. N-1/N; cluster mode, then --merge)")
    parser.add_argument("--merge", action="store_true", help="write catalog and manifest from finished parts")
    parser.add_argument("--dataset-config", default=None, help="sensor setup name (default: from the root path)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)

    def run() -> int:
        if args.merge and args.part is None:
            from leadio.buckets.builders import load_or_build

            config = dataset_config_for_root(args.root, args.dataset_config)
            coll, _ = load_or_build(args.root, args.collection, dataset_config=config.name,
                                    on_error="skip" if args.skip_bad_routes else "raise")
            path = merge_shard_set(args.root, shard_set_dir(args.root, coll.name, config), config)
            print(f"merged: {path}")
            return 0
        report = build_shard_set(args.root, args.collection, workers=args.workers, shard_size=args.shard_size,
                                 samples_per_shard=args.samples_per_shard, part=args.part,
                                 merge=True if args.merge else None, progress=not args.quiet,
                                 on_error="skip" if args.skip_bad_routes else "raise",
                                 dataset_config=args.dataset_config)
        print(report.summary())
        return 0

    return run_guarded(run, args.verbose, prog)


if __name__ == "__main__":
    raise SystemExit(main())
