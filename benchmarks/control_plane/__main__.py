"""``python -m benchmarks.control_plane --frames 1000,10000,100000 --out benchmarks/results`` (see the package)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from benchmarks.control_plane.bench import ORDER, Options, run


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated frame counts, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"frame counts must be >= 1, got {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.control_plane", description=__package__ and
                                     sys.modules["benchmarks.control_plane"].__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--frames", type=_sizes, default=[1000, 10000, 100000], help="root sizes, comma-separated")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                        help="folder for control_plane.json and control_plane.md")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/leadio-control-plane"),
                        help="where the fabricated roots are written (each removed after its steps)")
    parser.add_argument("--frames-per-route", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1, help="catalog scan processes (1: per-core cost)")
    parser.add_argument("--shard-workers", type=int, default=2, help="shard build processes")
    parser.add_argument("--samples-per-shard", type=int, default=1500,
                        help="samples per shard (1500: what 256 MiB shards hold of real LEAD frames)")
    parser.add_argument("--world-size", type=int, default=8, help="ranks the loader plans for (it is rank 0)")
    parser.add_argument("--batch-size", type=int, default=8, help="per-rank batch (LEAD: 64 over 8 GPUs)")
    parser.add_argument("--fabricate-workers", type=int, default=2)
    parser.add_argument("--steps", default=",".join(ORDER), help="steps to run, in this order")
    parser.add_argument("--lock", default=None, help="flock this file around each timed step (e.g. /tmp/bench.lock)")
    parser.add_argument("--keep", action="store_true", help="keep the fabricated roots")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--verbose", action="store_true", help="on an error, show the traceback")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.control_plane " + shlex.join(sys.argv[1:] if argv is None else argv)
    opts = Options(frames=args.frames, out=args.out, scratch=args.scratch, frames_per_route=args.frames_per_route,
                   workers=args.workers, shard_workers=args.shard_workers, samples_per_shard=args.samples_per_shard,
                   world_size=args.world_size, batch_size=args.batch_size, fabricate_workers=args.fabricate_workers,
                   lock=args.lock, keep=args.keep, progress=not args.quiet, command=command,
                   steps=[s for s in args.steps.split(",") if s])
    try:
        doc = run(opts)
    except (ValueError, OSError, RuntimeError) as e:
        if args.verbose:
            raise
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was written to --out", file=sys.stderr)
        return 130
    print((args.out / "control_plane.md").read_text(), end="")
    print(f"wrote {args.out / 'control_plane.json'} and {args.out / 'control_plane.md'}; first to hurt: "
          f"{doc['summary']['first_to_hurt']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
