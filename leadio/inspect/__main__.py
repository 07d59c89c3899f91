"""``python -m leadio.inspect``: one sample as a PNG, or a gallery of many as static HTML.

    python -m leadio.inspect --root R [--collection full_pretrain] [--index 0 | --key S/R/0007] [--out x.png]
    python -m leadio.inspect --shards R/shards/full_pretrain-<hash> --key S/R/0007
    python -m leadio.inspect --root R --route S/R --frame 7              # a raw frame, no shard set needed
    python -m leadio.inspect --root R --samples 12 --html gallery/ [--screenshot gallery/screenshot.png]
    python -m leadio.inspect --root R --list                             # the set's sample keys
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from leadio.format.config import dataset_config_for_root
from leadio.inspect.render import save_png
from leadio.inspect.sample import InspectError, from_raw, from_shard_set
from leadio.shard.build import shard_set_dir
from leadio.shard.shardset import open_shard_set

__all__ = ["main"]


def _shard_set_path(args: argparse.Namespace) -> Path:
    if args.shards:
        return Path(args.shards)
    name = args.collection
    if name.endswith(".json"):
        import json

        name = json.loads(Path(name).read_text())["name"]
    config = dataset_config_for_root(args.root, args.dataset_config)
    path = shard_set_dir(args.root, name, config)
    if path.is_dir():
        return path
    pretrain = shard_set_dir(args.root, "full_pretrain", config)
    if pretrain.is_dir():  # as open_dataset(root, collection=...) does: the pretrain set serves every collection
        print(f"note: collection {name!r} has no shard set of its own; showing {pretrain.name}, the set training "
              f"plans it over (its rows, keys and buckets)", file=sys.stderr)
        return pretrain
    raise InspectError(f"no shard set {path}; build it with `python -m leadio.shard --root {args.root} "
                       f"--collection {args.collection}`, or inspect a raw frame with --route ROUTE --frame F")


def _default_out(key: str, view: str) -> Path:
    return Path("outputs") / "inspect" / f"{key.replace('/', '+')}{'' if view == 'normal' else '+' + view}.png"


def run(args: argparse.Namespace) -> int:
    from leadio.inspect.gallery import browser_screenshot, write_gallery

    if args.route is not None:
        if args.frame is None:
            raise InspectError(f"--route {args.route} needs --frame N (the frame number, from 0)")
        if args.html or args.list or args.index is not None or args.key is not None:
            raise InspectError("--route/--frame inspect one raw frame; --html, --list, --index and --key need a "
                               "shard set (leave out --route)")
        sample = from_raw(args.root, args.route, args.frame, view=args.view, dataset_config=args.dataset_config)
        print(save_png(sample, args.out or _default_out(sample.key, args.view)))
        return 0
    if args.frame is not None:
        raise InspectError("--frame goes with --route (a raw frame); for a shard set use --index or --key")
    ss = open_shard_set(_shard_set_path(args), root=None if args.shards else args.root)
    if args.list:
        cat = ss.catalog
        names = [b["name"] for b in ss.manifest.get("buckets", [])]
        for i, key in enumerate(cat["sample_key"]):
            b = int(cat["bucket"][i])
            print(f"{i}\t{key}\t{names[b] if b < len(names) else b}\t{'targets' if cat['has_waypoints'][i] else '-'}")
        return 0
    if args.html:
        report = write_gallery(ss, args.html, args.samples, view=args.view)
        print(f"gallery: {report.index} ({len(report.images)} samples, buckets {report.buckets})")
        if args.screenshot:
            try:
                print(f"screenshot: {browser_screenshot(report.index, args.screenshot)}")
            except RuntimeError as e:  # no browser, or it failed: the gallery itself is fine
                raise InspectError(f"gallery written, but {e}") from e
        return 0
    index = args.index if args.index is not None or args.key is not None else 0
    sample = from_shard_set(ss, index=index, key=args.key, view=args.view)
    print(save_png(sample, args.out or _default_out(sample.key, args.view), ss.config))
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "python -m leadio.inspect") -> int:
    from leadio.cli import DEFAULT_ROOT, make_parser, run_guarded

    parser = make_parser(prog, __doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1])
    src = parser.add_argument_group("where the sample comes from")
    src.add_argument("--root", default=DEFAULT_ROOT, help="dataset root holding data/<Scenario>/<Route>/ and "
                                                          "shards/; relative to the working directory")
    src.add_argument("--collection", default="full_pretrain",
                     help="with --root: the shard set of this collection, else the full_pretrain set that training "
                          "plans it over (default: %(default)s)")
    src.add_argument("--shards", help="a shard set folder, instead of --root/--collection (default: none)")
    src.add_argument("--index", type=int, help="sample row in the shard set (default: 0 when no --key)")
    src.add_argument("--key", help="sample key <Scenario>/<Route>/NNNN (see --list) (default: none)")
    src.add_argument("--route", help="a raw route: data/<Scenario>/<Route>, <Scenario>/<Route> or <Route> "
                                     "(with --frame) (default: none)")
    src.add_argument("--frame", type=int, help="frame of --route (default: none)")
    src.add_argument("--view", choices=("normal", "perturbated"), default="normal",
                     help="sensor view (default: %(default)s)")
    src.add_argument("--dataset-config", help="sensor setup name (default: from the root path)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", help="PNG path (default: outputs/inspect/<sample key>[+perturbated].png)")
    out.add_argument("--html", help="write a gallery (index.html + PNGs) to this folder (default: none)")
    out.add_argument("--samples", type=int, default=12, help="samples in the gallery (default: %(default)s)")
    out.add_argument("--screenshot", help="with --html: screenshot the gallery in headless Chromium to this PNG "
                                          "(default: none)")
    out.add_argument("--list", action="store_true", help="print the shard set's rows, sample keys and buckets")
    args = parser.parse_args(argv)
    try:
        return run_guarded(lambda: run(args), args.verbose, prog,
                           interrupted="interrupted (inspect changes no data; rerun it for the pictures)")
    except BrokenPipeError:  # output piped into head & co.
        sys.stdout = open(os.devnull, "w")  # keeps the interpreter from failing at exit
        return 0

if __name__ == "__main__":
    raise SystemExit(main())
