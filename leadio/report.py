"""``python -m leadio.report --root R [--collection C ...] [--epochs E]``: what a dataset root holds and what an
epoch will draw from it, without writing code.

- every route found, kept or dropped by LEAD's failed-route filter, each dropped one with its reason;
- frames per scenario, town and weather (catalog rows = frames of the kept routes), and each collection's;
- per bucket of each collection: routes, frames, the frames without planning targets, and the samples the
  epoch plan draws in epochs 0..E under the collection's rates (`leadio.plan.bucket_counts`, the function
  `global_sequence` uses: the counts are exact, whatever the shuffle);
- how many of a collection's frames have no planning targets, and why: the reason is recomputed from the
  frame's meta (`leadio.targets.planning_targets`) for up to ``--check-metas`` of them, so it is the real one.

Output: a terminal table (stdout), ``--json PATH`` (everything, machine-readable) and ``--png PATH`` (bar
charts). Collections are loaded as the loader loads them (`leadio.buckets.load_or_build`): a current bucket
file is only read (no lock, no write: a read-only root can be reported on), a missing or stale catalog or
bucket file is (re)built first, as training would. A root where no route passes LEAD's filter has no catalog
to build: the report then lists every route and why it was dropped, and nothing else.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from leadio.buckets.builders import load_or_build
from leadio.buckets.collection import BucketCollection
from leadio.catalog_store import Catalog, load_catalog
from leadio.files import atomic_write_bytes
from leadio.format.routes import discover_routes
from leadio.plan import bucket_counts

__all__ = ["DEFAULT_COLLECTIONS", "build_report", "format_report", "main", "plot_report"]

DEFAULT_COLLECTIONS = ("full_pretrain", "full_posttrain")
BY_COLUMNS = ("scenario", "town", "weather")


def _no_target_reason(root: Path, route: str, frame: int) -> str:
    """Why planning_targets fails for a frame, as a reason shared by similar frames (numbers elided)."""
    from leadio.format.frame import read_meta
    from leadio.targets import planning_targets

    try:
        planning_targets(read_meta(root / route, frame), perturbated=False)
    except ValueError as e:
        text = str(e)
        if "too close to the end" in text:
            return "fewer than 41 future positions: the frame is too close to the end of its route"
        return re.sub(r"\d+(\.\d+)?", "#", text.split(";")[0])
    return "targets compute now: the catalog is older than the route (rebuild it)"


def _no_targets(root: Path, catalog: Catalog, rows: np.ndarray, check_metas: int) -> dict:
    """The frames among ``rows`` without planning targets, where they sit and why."""
    rows = rows[~catalog["has_waypoints"][rows].astype(bool)]
    to_end = catalog["route_num_frames"][rows].astype(np.int64) - 1 - catalog["frame"][rows]
    out = {"frames": int(len(rows)), "frames_to_route_end": {str(k): int(v) for k, v in
                                                             sorted(Counter(to_end.tolist()).items())},
           "checked": 0, "reasons": []}
    if not len(rows) or check_metas <= 0:
        return out
    checked = rows[np.unique(np.linspace(0, len(rows) - 1, min(check_metas, len(rows))).round().astype(int))]
    reasons: dict[str, list] = {}
    for r in checked:
        route, frame = str(catalog["route"][r]), int(catalog["frame"][r])
        reasons.setdefault(_no_target_reason(root, route, frame), []).append(f"{route} frame {frame}")
    out["checked"] = int(len(checked))
    out["reasons"] = [{"reason": k, "count": len(v), "example": v[0]}
                      for k, v in sorted(reasons.items(), key=lambda kv: -len(kv[1]))]
    return out


def _collection(root: Path, catalog: Catalog, coll: BucketCollection, path: Path, epochs: int,
                check_metas: int) -> tuple[dict, np.ndarray]:
    bucket_rows = coll.rows(catalog.route_rows())
    sizes = [len(r) for r in bucket_rows]
    planned = [bucket_counts(sizes, coll.rates_at(e)) for e in range(epochs + 1)]  # [epoch][bucket]
    has = catalog["has_waypoints"].astype(bool)
    buckets = [{"name": b.name, "routes": len(b.members), "frames": sizes[i],
                "no_targets": int((~has[bucket_rows[i]]).sum()),
                "rates": [coll.rates_at(e)[i] for e in range(epochs + 1)],
                "planned": [planned[e][i] for e in range(epochs + 1)]} for i, b in enumerate(coll.buckets)]
    rows = np.unique(np.concatenate(bucket_rows)) if bucket_rows else np.zeros(0, np.int64)
    doc = {"name": coll.name, "file": str(path), "frames": int(len(rows)), "bucket_members": int(sum(sizes)),
           "epochs": list(range(epochs + 1)), "buckets": buckets, "planned": [int(sum(p)) for p in planned],
           "no_targets": _no_targets(root, catalog, rows, check_metas)}
    return doc, rows


def build_report(root: str | Path, collections: Sequence[str] = DEFAULT_COLLECTIONS, *, epochs: int = 0,
                 workers: int = 1, check_metas: int = 2000) -> dict:
    """The report as a JSON-able dict (see the module docstring); ``collections`` are names or JSON specs.

    Raises:
        FileNotFoundError: no routes under the root; ValueError: an unknown collection or negative epochs.
    """
    if epochs < 0:
        raise ValueError(f"--epochs must be >= 0, got {epochs}")
    root = Path(root)
    try:
        loaded = [load_or_build(root, c, workers=workers) for c in collections]
    except ValueError:
        found = discover_routes(root)
        if found and not any(r.trainable for r in found):  # no catalog can exist: say why each route is dropped
            return _all_dropped(root, found)
        raise
    catalog = load_catalog(root)
    t = catalog.routes
    routes = [{"route": str(p), "scenario": str(s), "frames": int(n), "reason": str(why)}
              for p, s, n, ok, why in zip(t["rel_path"], t["scenario"], t["num_frames"], t["trainable"],
                                          t["filter_reason"], strict=True)]
    kept = [r for r in routes if not r["reason"]]
    dropped_kinds = Counter(re.sub(r"-?\d+(\.\d+)?", "#", r["reason"]) for r in routes if r["reason"])
    dropped = [r for r in routes if r["reason"]]
    for r in kept:
        del r["reason"]
    colls, frames_by = [], {c: {} for c in BY_COLUMNS}
    for c in BY_COLUMNS:
        for value, n in Counter(str(v) for v in catalog[c]).most_common():
            frames_by[c][value] = {"frames": n}
    for coll, path in loaded:
        doc, rows = _collection(root, catalog, coll, path, epochs, check_metas)
        colls.append(doc)
        for c in BY_COLUMNS:
            counts = Counter(str(v) for v in catalog[c][rows])
            for value in frames_by[c]:
                frames_by[c][value][coll.name] = counts.get(value, 0)
    return {
        "root": str(root),
        "catalog": {"path": str(root / "catalog.zarr"), "frames": len(catalog), "routes_found": len(routes),
                    "routes_kept": len(kept), "routes_dropped": len(dropped),
                    "frames_without_targets": int((~catalog["has_waypoints"].astype(bool)).sum())},
        "routes": {"kept": kept, "dropped": dropped,
                   "dropped_by_reason": dict(dropped_kinds.most_common())},
        "frames_by": frames_by,
        "collections": colls,
    }


def _all_dropped(root: Path, found: list) -> dict:
    """The report of a root where LEAD's filter drops every route: the routes and why, no catalog."""
    dropped = [{"route": r.rel_path, "scenario": r.scenario, "frames": int(r.num_frames), "reason": r.filter_reason}
               for r in found]
    kinds = Counter(re.sub(r"-?\d+(\.\d+)?", "#", r["reason"]) for r in dropped)
    return {
        "root": str(root),
        "catalog": {"path": None, "frames": 0, "routes_found": len(dropped), "routes_kept": 0,
                    "routes_dropped": len(dropped), "frames_without_targets": 0},
        "routes": {"kept": [], "dropped": dropped, "dropped_by_reason": dict(kinds.most_common())},
        "frames_by": {c: {} for c in BY_COLUMNS},
        "collections": [],
    }


# ------------------------------------------------------------------------------------------------ output
def _table(rows: list[Sequence], align: str = "") -> str:
    """Rows of cells -> aligned text; the first row is the header. ``align`` has an ``l`` or ``r`` per column
    (default: the first column left, the others right)."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    align = align or "l" + "r" * (len(widths) - 1)
    lines = ["  ".join(c.ljust(w) if a == "l" else c.rjust(w) for a, c, w in zip(align, r, widths, strict=True))
             .rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _epoch_groups(planned: list[list[int]]) -> list[tuple[int, int]]:
    """Runs of consecutive epochs whose per-bucket counts are equal: [(first, last), ...]."""
    groups: list[tuple[int, int]] = []
    for e, p in enumerate(planned):
        if groups and planned[groups[-1][0]] == p:
            groups[-1] = (groups[-1][0], e)
        else:
            groups.append((e, e))
    return groups


def format_report(doc: dict) -> str:
    """The report as terminal text."""
    c = doc["catalog"]
    catalog = (f"catalog: {c['frames']} frames of the kept routes, {c['frames_without_targets']} without planning "
               f"targets" if c["routes_kept"] else "no catalog, no collection: there is nothing to train on")
    out = [f"leadio report: {doc['root']}",
           f"routes: {c['routes_found']} found, {c['routes_kept']} kept, {c['routes_dropped']} dropped by LEAD's "
           f"failed-route filter; {catalog}", ""]
    if doc["routes"]["dropped"]:
        out += ["Dropped routes:", _table([("route", "frames", "reason")] + [
            (r["route"], r["frames"], r["reason"]) for r in doc["routes"]["dropped"]], "lrl"), ""]
    else:
        out += ["Dropped routes: none", ""]
    names = [k["name"] for k in doc["collections"]]
    for col in BY_COLUMNS if c["frames"] else ():
        rows = [(col, "frames", *names)] + [(v, d["frames"], *(d.get(n, 0) for n in names))
                                             for v, d in doc["frames_by"][col].items()]
        rows.append(("TOTAL", sum(d["frames"] for d in doc["frames_by"][col].values()),
                     *(k["frames"] for k in doc["collections"])))
        out += [f"Frames per {col} (catalog, and the frames of each collection):", _table(rows), ""]
    for k in doc["collections"]:
        planned = [[b["planned"][e] for b in k["buckets"]] for e in k["epochs"]]
        groups = _epoch_groups(planned)
        label = [f"samples e{a}" + (f"-{b}" if b > a else "") for a, b in groups]
        rate = [f"rate e{a}" + (f"-{b}" if b > a else "") for a, b in groups]
        header = ("bucket", "routes", "frames", "no targets", *[x for pair in zip(rate, label, strict=True)
                                                                 for x in pair])
        rows = [header] + [(b["name"], b["routes"], b["frames"], b["no_targets"],
                            *[x for a, _ in groups for x in (f"{b['rates'][a]:g}", b["planned"][a])])
                           for b in k["buckets"]]
        rows.append(("TOTAL", "", k["bucket_members"], sum(b["no_targets"] for b in k["buckets"]),
                     *[x for a, _ in groups for x in ("", k["planned"][a])]))
        total = sum(k["planned"])
        out += [f"Collection {k['name']} ({k['file']}): samples planned per epoch, epochs "
                f"{k['epochs'][0]}..{k['epochs'][-1]} ({total} in all):", _table(rows)]
        nt = k["no_targets"]
        if nt["frames"]:
            ends = [int(d) for d in nt["frames_to_route_end"]]
            out.append(f"  {nt['frames']} of its {k['frames']} frames have no planning targets, {min(ends)} to "
                       f"{max(ends)} frames before the end of their route; why (from the metas of {nt['checked']} "
                       f"of them):")
            out += [f"    {r['count']}x {r['reason']} (e.g. {r['example']})" for r in nt["reasons"]]
        else:
            out.append(f"  every one of its {k['frames']} frames has planning targets")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def plot_report(doc: dict, path: str | Path) -> Path:
    """Bar charts of the report (routes, frames by scenario/town/weather, planned samples per bucket) as PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    colls = doc["collections"]
    heights = [3.2, 3.2] + [1.4 + 0.28 * len(k["buckets"]) for k in colls]
    fig = plt.figure(figsize=(15, sum(heights) + 1.1), dpi=100)
    grid = fig.add_gridspec(len(heights), 3, height_ratios=heights, hspace=0.55, wspace=0.45, left=0.2, right=0.97,
                            top=1 - 0.9 / (sum(heights) + 1.1), bottom=0.4 / (sum(heights) + 1.1))
    integer = MaxNLocator(integer=True)
    fig.suptitle(f"leadio report: {doc['root']}", fontsize=12, weight="bold")

    ax = fig.add_subplot(grid[0, :2])
    labels = ["kept"] + list(doc["routes"]["dropped_by_reason"])
    values = [doc["catalog"]["routes_kept"]] + list(doc["routes"]["dropped_by_reason"].values())
    labels = ["\n".join(textwrap.wrap(x, 45)[:3]) for x in labels]
    bars = ax.barh(labels[::-1], values[::-1], color=["#c44"] * (len(labels) - 1) + ["#4a4"])
    ax.bar_label(bars, fontsize=8, padding=2)
    ax.xaxis.set_major_locator(integer)
    ax.set_title(f"routes: {doc['catalog']['routes_found']} found, kept or dropped (by reason, # = any number)",
                 fontsize=10)
    ax.tick_params(labelsize=8)
    ax = fig.add_subplot(grid[0, 2])
    names = [k["name"] for k in colls]
    nt = [k["no_targets"]["frames"] for k in colls]
    ok = [k["frames"] - n for k, n in zip(colls, nt, strict=True)]
    ax.bar(names, ok, color="#4a4", label="with targets")
    bars = ax.bar(names, nt, bottom=ok, color="#c44", label="no planning targets")
    ax.bar_label(bars, labels=[str(n) for n in nt], fontsize=8)
    ax.set_title("frames with / without planning targets", fontsize=10)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=8)
    for i, col in enumerate(BY_COLUMNS):
        ax = fig.add_subplot(grid[1, i])
        values = list(doc["frames_by"][col].items())[:15][::-1]
        y = np.arange(len(values))
        series = ["frames"] + names
        h = 0.8 / len(series)
        for j, s in enumerate(series):
            bars = ax.barh(y + (j - (len(series) - 1) / 2) * h, [d.get(s, 0) for _, d in values], h, label=s)
            if s == "frames":
                ax.bar_label(bars, fontsize=7, padding=2)
        ax.set_yticks(y, [v for v, _ in values], fontsize=8)
        ax.set_title(f"frames per {col}" + (" (top 15)" if len(doc["frames_by"][col]) > 15 else ""), fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=8)
    for i, k in enumerate(colls):
        ax = fig.add_subplot(grid[2 + i, :])
        groups = _epoch_groups([[b["planned"][e] for b in k["buckets"]] for e in k["epochs"]])[:6]
        series = [("frames", [b["frames"] for b in k["buckets"]])] + [
            (f"planned e{a}" + (f"-{b}" if b > a else ""), [bk["planned"][a] for bk in k["buckets"]])
            for a, b in groups]
        y = np.arange(len(k["buckets"]))[::-1]
        h = 0.8 / len(series)
        for j, (label, vals) in enumerate(series):
            bars = ax.barh(y - (j - (len(series) - 1) / 2) * h, vals, h, label=label)
            ax.bar_label(bars, fontsize=7, padding=2)
        ax.set_yticks(y, [b["name"] for b in k["buckets"]], fontsize=8)
        ax.set_title(f"{k['name']}: frames and samples planned per bucket (epochs with equal counts merged)",
                     fontsize=10)
        ax.legend(fontsize=7, loc="best", framealpha=0.9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def main(argv: Sequence[str] | None = None, prog: str = "python -m leadio.report") -> int:
    from leadio.cli import add_root, make_parser, run_guarded

    parser = make_parser(prog, __doc__.split("\n\n")[0])
    add_root(parser)
    parser.add_argument("--collection", action="append", default=None,
                        help="a collection: full_pretrain, full_posttrain or a JSON spec; repeat for several "
                             f"(default: {' and '.join(DEFAULT_COLLECTIONS)})")
    parser.add_argument("--epochs", type=int, default=0, help="plan epochs 0..E (default: %(default)s)")
    parser.add_argument("--check-metas", type=int, default=2000,
                        help="frames without targets whose meta is read to tell why")
    parser.add_argument("--workers", type=int, default=1, help="catalog scan processes if one is needed")
    parser.add_argument("--json", help="also write the report as JSON here (default: none)")
    parser.add_argument("--png", help="also write bar charts here (default: none)")
    args = parser.parse_args(argv)

    def run() -> int:
        doc = build_report(args.root, args.collection or DEFAULT_COLLECTIONS, epochs=args.epochs,
                           workers=args.workers, check_metas=args.check_metas)
        print(format_report(doc), end="")
        if args.json:
            atomic_write_bytes(args.json, (json.dumps(doc, indent=1) + "\n").encode())
            print(f"wrote {args.json}")
        if args.png:
            print(f"wrote {plot_report(doc, args.png)}")
        return 0

    return run_guarded(run, args.verbose, prog, interrupted="interrupted (report writes nothing until it is done)")

if __name__ == "__main__":
    raise SystemExit(main())
