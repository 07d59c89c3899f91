"""``python -m leadio.buckets [--root R] [--collection full_pretrain|full_posttrain|spec.json] [--force-rebuild]``.

Builds (or reuses, when current) a bucket collection under ``<root>/buckets/`` and prints its table.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from leadio.buckets.builders import load_or_build
from leadio.buckets.collection import BucketCollection

__all__ = ["format_table", "main"]

DESCRIPTION = ("Build (or reuse, when the routes on disk are unchanged) a bucket collection under <root>/buckets/ "
               "and print its table.")


def format_table(collection: BucketCollection, epoch: int = 0) -> str:
    """A per-bucket table: routes, frames, rate and samples drawn in ``epoch``."""
    rows = [("bucket", "routes", "frames", f"rate@{epoch}", f"samples@{epoch}")]
    for b in collection.buckets:
        rate = b.rate_at(epoch)
        rows.append((b.name, str(len(b.members)), str(len(b)), f"{rate:g}", str(round(len(b) * rate))))
    t = collection.totals
    rows.append(("TOTAL", f"{t.get('trainable_routes', '?')}/{t.get('total_routes', '?')} trainable",
                 f"{len(collection)} of {t.get('all_frames', '?')}", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, default_collection: str = "full_pretrain",
         prog: str = "python -m leadio.buckets") -> int:
    from leadio.cli import add_root, make_parser, run_guarded, workers_help

    parser = make_parser(prog, DESCRIPTION)
    add_root(parser)
    parser.add_argument("--collection", default=default_collection,
                        help="full_pretrain, full_posttrain, or a JSON collection spec file")
    parser.add_argument("--force-rebuild", action="store_true", help="rebuild even if the stored file is current")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help=workers_help("catalog scan processes"))
    parser.add_argument("--dataset-config", default=None, help="sensor setup name (default: from the root path)")
    parser.add_argument("--skip-bad-routes", action="store_true",
                        help="leave unreadable routes out (counted and reported) instead of stopping")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)

    def run() -> int:
        collection, path = load_or_build(args.root, args.collection, force_rebuild=args.force_rebuild,
                                         workers=args.workers, progress=True, dataset_config=args.dataset_config,
                                         on_error="skip" if args.skip_bad_routes else "raise")
        print(f"collection {collection.name!r}: {path}")
        print(format_table(collection))
        return 0

    return run_guarded(run, args.verbose, prog)


if __name__ == "__main__":
    raise SystemExit(main())
