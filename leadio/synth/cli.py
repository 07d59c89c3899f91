"""``python -m leadio.synth`` / ``leadio synth``: the command line over `generate_root`.
"""

from __future__ import annotations

from leadio.synth.generate import foreign_routes, generate_root


def main(argv: list[str] | None = None, prog: str = "python -m leadio.synth") -> int:
    from leadio.cli import make_parser, run_guarded

    parser = make_parser(prog, "Write synthetic LEAD routes (same folders, files and encodings as real ones) under "
                               "<root>/data/. Same seed, same bytes.")
    # No default root on purpose: synthetic routes must never land in a real dataset by accident.
    parser.add_argument("--root", required=True, help="dataset root to write, e.g. demo/data/carla_leaderboard2")
    parser.add_argument("--routes", type=int, default=10, help="number of routes")
    parser.add_argument("--frames", type=int, default=40, help="saved frames (4 Hz) per route")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    parser.add_argument("--workers", type=int, default=1, help="processes")
    parser.add_argument("--force", action="store_true",
                        help="write into a root that already holds routes this command would not write")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    def run() -> int:
        foreign = foreign_routes(args.root, args.routes, args.seed)
        if foreign and not args.force:
            raise ValueError(
                f"{args.root} already holds {len(foreign)} route(s) that `synth --routes {args.routes} --seed "
                f"{args.seed}` does not write (e.g. {foreign[0]}): synthetic routes would mix with them, real data "
                f"perhaps; choose an empty --root, or pass --force to add them anyway")
        summary = generate_root(args.root, args.routes, args.frames, args.seed, args.workers, not args.quiet)
        rate = summary.frames / max(summary.seconds, 1e-9)
        print(f"wrote {summary.routes_written} routes ({summary.routes_skipped} already complete), {summary.frames} "
              f"frames, {summary.bytes / 1e6:.1f} MB in {summary.seconds:.1f} s ({rate:.1f} frames/s, "
              f"{summary.bytes / max(summary.frames, 1) / 1e3:.0f} KB/frame); {len(summary.passing)}/"
              f"{len(summary.routes)} routes pass LEAD's route filter")
        return 0

    return run_guarded(run, args.verbose, prog)
