"""``python -m leadio.plan simulate``: the shuffle simulator (see `leadio.plan.simulate`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from leadio.plan.shuffle import Shuffle
from leadio.plan.simulate import as_dicts, plot, simulate, synthetic_catalog, table


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m leadio.plan",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                 description="Measure the epoch plan's shuffle algorithms on a synthetic catalog "
                                             "(no I/O): distinct routes per batch against a uniform shuffle, "
                                             "route correlation, shards per batch, peak resident shards.")
    ap.add_argument("command", choices=["simulate"])
    ap.add_argument("--frames", type=int, default=1_000_000, help="catalog size (LEAD: ~1M)")
    ap.add_argument("--route-frames", type=int, default=330, help="mean frames per route")
    ap.add_argument("--shard-samples", type=int, default=1500, help="samples per shard")
    ap.add_argument("--rates", type=_floats, default=[1.0], help="one rate per bucket, e.g. 1,0.5,2")
    ap.add_argument("--world", type=int, default=8, help="world size")
    ap.add_argument("--batch", type=int, default=64, help="batch size per rank")
    ap.add_argument("--epochs", type=int, default=1, help="epochs to average over")
    ap.add_argument("--block-shards", type=_ints, default=[4, 16, 64, 128, 256, 1024],
                    help="block sizes (shards) to simulate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--png", type=Path, default=None, help="write the quality/residency plot here")
    ap.add_argument("--json", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    try:
        cat = synthetic_catalog(args.frames, route_frames=args.route_frames, shard_samples=args.shard_samples,
                                rates=args.rates, seed=args.seed)
        specs = [Shuffle("uniform")] + [Shuffle("block", block_shards=k) for k in args.block_shards]
        t0 = time.perf_counter()
        results = [simulate(cat, s, world=args.world, batch=args.batch, epochs=range(args.epochs), seed=args.seed)
                   for s in tqdm(specs, desc="simulating", unit="plan", disable=None)]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    title = (f"{args.frames:,} frames, {cat.num_routes:,} routes, {cat.num_shards:,} shards of "
             f"{args.shard_samples:,}; world {args.world}, batch {args.batch}")
    print(title)
    print(table(results))
    print(f"({len(specs)} plans in {time.perf_counter() - t0:.1f} s)")
    if args.png:
        plot(results, args.png, title)
        print(f"wrote {args.png}")
    if args.json:
        args.json.write_text(json.dumps({"title": title, "rows": as_dicts(results)}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
