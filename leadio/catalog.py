"""Catalog: one scan of the raw routes -> a Zarr v3 group with one row per frame.

``python -m leadio.catalog --root R [--workers N]`` writes ``<root>/catalog.zarr``. Rows are the frames of
the routes LEAD's filter keeps, in LEAD's order (scenario, route, frame); the ``routes/`` subgroup lists every
route found, kept or not, with the reason it was dropped. Everything is plain Zarr v3 (1-D/N-D arrays plus
group attributes), readable without leadio::

    g = zarr.open_group("<root>/catalog.zarr", mode="r")
    g["route"][:], g["frame"][:], g["speed"][:], g["waypoints"][:]   # (N,), (N,), (N,), (N, 8, 2)

Only metas are read (the expensive modalities are the shard builder's business), and the scan is
incremental: each route carries a fingerprint of what its rows are made from (the names of its frame files,
the content of its metas and results.json, through `leadio.stamps`: an edit of any size is found, a copied
root stays current); a rescan re-reads only routes whose fingerprint changed and rewrites nothing when none did.

Robustness: a scan holds ``<root>/.catalog.lock`` (two scans at once: the second waits, then finds the catalog
current) and removes the temp folders of killed writers. The catalog lists its own files in its attributes;
a reader refuses a catalog with a missing or damaged chunk, or with shapes no catalog has, before allocating
anything (`CatalogError`, which names the file and the command that rewrites it), and a rescan rebuilds such
a catalog from the routes.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xxhash
from tqdm import tqdm

from leadio._pool import process_pool
from leadio.catalog_store import (
    CATALOG_NAME,
    CATALOG_VERSION,
    Catalog,
    load_catalog,
    write_catalog,
)
from leadio.files import file_lock, remove_stale_temps
from leadio.format.errors import FrameReadError, RouteError
from leadio.format.frame import read_meta
from leadio.format.routes import FRAME_FOLDERS, RouteInfo, discover_routes, frame_names
from leadio.schema import scenario_type
from leadio.targets.planning import has_planning_targets, planning_targets

__all__ = ["ScanReport", "build_catalog", "main", "route_fingerprint"]

log = logging.getLogger(__name__)

#: Boolean flags copied from every meta (docs/format.md §2 required keys).
FLAG_KEYS = (
    "is_intersection", "changed_route", "vehicle_hazard", "walker_hazard", "light_hazard", "stop_sign_hazard",
    "stop_sign_close", "does_emergency_brake_for_pedestrians", "rear_danger_8", "rear_danger_16", "brake_cutin",
    "emergency_brake_for_special_vehicle", "construction_obstacle_two_ways_stuck", "accident_two_ways_stuck",
    "parked_obstacle_two_ways_stuck", "vehicle_opens_door_two_ways_stuck", "slower_bad_visibility",
    "slower_clutterness", "slower_occluded_junction",
)
STRING_COLUMNS = ("route", "scenario", "town", "weather", "scenario_type")


def route_fingerprint(route_dir: Path, root: Path | None = None) -> str:
    """Hash of what a route's catalog rows are made from: the file names of every frame folder, and the content
    of ``results.json`` and of every meta (`leadio.stamps` digests: unchanged mtime+size reuse the recorded
    digest, anything else is re-hashed). Any edit of a meta is found whatever its size, and a root copied
    elsewhere keeps its fingerprints (digests do not depend on times or places)."""
    from leadio.stamps import RouteStamps

    route_dir = Path(route_dir)
    root = Path(root) if root is not None else route_dir.parent.parent.parent
    h = xxhash.xxh3_64()
    with RouteStamps(root, route_dir.relative_to(root).as_posix()) as stamps:
        h.update(f"results.json:{stamps.digest('results.json')};".encode())
        for folder in sorted(FRAME_FOLDERS):
            try:
                names = sorted(e.name for e in os.scandir(route_dir / folder) if e.is_file())
            except FileNotFoundError:
                h.update(f"{folder}:missing;".encode())
                continue
            for name in names:
                digest = stamps.digest(f"{folder}/{name}") if folder == "metas" else ""
                h.update(f"{folder}/{name}:{digest};".encode())
    return h.hexdigest()


def check_frame_sets(route_dir: Path) -> int:
    """Check that every per-frame folder holds the frames 0..n-1, one ``NNNN.<ext>`` file each; return n.

    Raises:
        RouteError: a folder is missing or cannot be listed, holds a different frame set than ``bboxes/``, or a
            file named otherwise for one of its frames (``005.jpg`` beside ``0005.jpg``); names the frames.
    """
    names = {folder: frame_names(route_dir, folder) for folder in FRAME_FOLDERS}
    for folder, held in names.items():
        for f, files in held.items():
            canonical = f"{f:04d}.{FRAME_FOLDERS[folder]}"
            strays = [n for n in files if n != canonical]
            if strays and canonical in files:
                raise RouteError(route_dir, f"{folder}/ holds {', '.join(strays)} beside {canonical}: two files for "
                                            f"frame {f} (LEAD names frame files NNNN.{FRAME_FOLDERS[folder]}, "
                                            f"zero-padded to 4 digits); remove the stray file")
            if strays:
                raise RouteError(route_dir, f"{folder}/{strays[0]} should be named {canonical} (LEAD zero-pads frame "
                                            f"numbers to 4 digits; leadio reads {canonical}); rename it")
    frames = sorted(names["bboxes"])
    expected = list(range(len(frames)))
    if frames != expected:
        gaps = sorted(set(expected) - set(frames))[:10]
        raise RouteError(route_dir, f"bboxes/ holds frames {frames[:3]}...{frames[-3:]}, expected 0..{len(frames) - 1}"
                                    f" without gaps (missing {gaps})")
    for folder in FRAME_FOLDERS:
        other = sorted(names[folder])
        if other != frames:
            if not (route_dir / folder).is_dir():
                raise RouteError(route_dir, f"folder {folder}/ is missing")
            missing = sorted(set(frames) - set(other))[:10]
            extra = sorted(set(other) - set(frames))[:10]
            raise RouteError(route_dir, f"{folder}/ does not match bboxes/: missing frames {missing}, extra {extra}")
    return len(frames)


def _route_curvature(route: np.ndarray) -> float:
    """Signed mean curvature (1/m, + = turning right) of the first 20 m of the ego-frame route."""
    pts = np.asarray(route, dtype=np.float64)[:21, :2]
    if len(pts) < 3:
        return 0.0
    seg = np.diff(pts, axis=0)
    length = float(np.linalg.norm(seg, axis=1).sum())
    if length < 1e-6:
        return 0.0
    h0 = math.atan2(seg[0, 1], seg[0, 0])
    h1 = math.atan2(seg[-1, 1], seg[-1, 0])
    turn = (h1 - h0 + math.pi) % (2 * math.pi) - math.pi
    return turn / length


def scan_route(root: Path, info: RouteInfo) -> dict[str, np.ndarray]:
    """Read one route's metas into catalog columns (one entry per frame)."""
    route_dir = info.path(root)
    n = check_frame_sets(route_dir)
    if n == 0:
        raise RouteError(route_dir, "route has no frames (bboxes/ is empty)")
    metas = [read_meta(route_dir, f) for f in range(n)]
    pos = np.array([np.asarray(m["pos_global"], dtype=np.float64)[:2] for m in metas])
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1) if n > 1 else np.zeros(0)
    dist = np.concatenate([[0.0], np.cumsum(steps)])
    cols: dict[str, list] = {k: [] for k in ("waypoints", "route_points", "target_point", "command",
                                              "has_waypoints")}
    for f, meta in enumerate(metas):
        try:  # the shard build's own computation (`leadio.preprocess.targets_record`), so both agree on every frame
            t = planning_targets(meta, perturbated=False, require_future=False)
        except Exception as e:
            raise FrameReadError(route_dir, f, route_dir / "metas" / f"{f:04d}.pkl",
                                 f"cannot compute planning targets ({type(e).__name__}: {e})") from e
        if has_planning_targets(t):
            cols["waypoints"].append(t["waypoints"])
            cols["route_points"].append(t["route"])
            cols["target_point"].append(t["target_point"])
            cols["command"].append(int(np.argmax(t["command"])))
            cols["has_waypoints"].append(True)
        else:  # too few future positions near the route end: no planning targets
            cols["waypoints"].append(np.full((8, 2), np.nan, np.float32))
            cols["route_points"].append(np.full((10, 2), np.nan, np.float32))
            cols["target_point"].append(np.full(2, np.nan, np.float32))
            cols["command"].append(-1)
            cols["has_waypoints"].append(False)
    out = {
        "route": np.array([info.rel_path] * n, dtype=object),
        "frame": np.arange(n, dtype=np.int32),
        "scenario": np.array([info.scenario] * n, dtype=object),
        "town": np.array([str(m["town"]) for m in metas], dtype=object),
        "weather": np.array([str(m["weather_setting"]) for m in metas], dtype=object),
        "scenario_type": np.array([scenario_type(m) for m in metas], dtype=object),
        "route_num_frames": np.full(n, n, dtype=np.int32),
        "route_length_m": np.full(n, dist[-1], dtype=np.float32),
        "dist_from_start_m": dist.astype(np.float32),
        "dist_to_end_m": (dist[-1] - dist).astype(np.float32),
        "speed": np.array([float(m["speed"]) for m in metas], dtype=np.float32),
        "target_speed": np.array([float(m["target_speed"]) for m in metas], dtype=np.float32),
        "brake": np.array([bool(m["brake"]) for m in metas]),
        "curvature": np.array([_route_curvature(m["route"]) for m in metas], dtype=np.float32),
        "waypoints": np.stack(cols["waypoints"]).astype(np.float32),
        "route_points": np.stack(cols["route_points"]).astype(np.float32),
        "target_point": np.stack(cols["target_point"]).astype(np.float32),
        "command": np.array(cols["command"], dtype=np.int8),
        "has_waypoints": np.array(cols["has_waypoints"]),
    }
    for key in FLAG_KEYS:
        out[key] = np.array([bool(m[key]) if key in m else False for m in metas])
    return out


#: What reading a malformed route can raise besides FrameReadError and RouteError (a value no reader checks, an
#: unreadable file): reported as the route's error, so --skip-bad-routes can leave it out (a scan writes nothing).
_ROUTE_FAULTS = (ValueError, TypeError, KeyError, IndexError, ArithmeticError, OSError)


def _scan_one(args: tuple[Path, RouteInfo]) -> tuple[RouteInfo, dict | None, Exception | None]:
    root, info = args
    try:
        return info, scan_route(root, info), None
    except (FrameReadError, RouteError) as e:
        return info, None, e
    except _ROUTE_FAULTS as e:
        return info, None, RouteError(info.path(root), f"cannot be scanned ({type(e).__name__}: {e})")


@dataclass
class ScanReport:
    """What a catalog scan did."""

    path: Path
    routes_found: int
    routes_trainable: int
    routes_scanned: int
    routes_reused: int
    routes_skipped: dict[str, str]
    rows: int
    seconds: float
    rewritten: bool

    def summary(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 and self.routes_scanned else float("nan")
        s = (f"catalog {self.path}: {self.rows} frames from {self.routes_trainable}/{self.routes_found} trainable "
             f"routes ({self.routes_scanned} scanned, {self.routes_reused} unchanged) in {self.seconds:.1f}s")
        if self.routes_scanned:
            s += f" ({rate:.0f} frames/s)"
        if not self.rewritten:
            s += " - up to date, nothing rewritten"
        if self.routes_skipped:
            s += f"; SKIPPED {len(self.routes_skipped)} bad routes (on_error='skip'): " + "; ".join(
                self.routes_skipped.values())
        return s


def build_catalog(root: str | Path, *, workers: int = 1, on_error: str = "raise", progress: bool = True,
                  dataset_config: str | None = None) -> ScanReport:
    """Scan ``<root>/data`` and write (or bring up to date) ``<root>/catalog.zarr``.

    Args:
        root: the dataset root.
        workers: processes reading routes in parallel.
        on_error: ``"raise"`` stops at the first bad route; ``"skip"`` leaves bad routes out, counts them and
            names them in the report and in the catalog's ``skipped_routes`` attribute.
        progress: show a progress bar.
        dataset_config: explicit dataset config name (default: the one the root's catalog was built with, else
            chosen from the root's path).

    Raises:
        RouteError, FrameReadError: a route is malformed (with ``on_error="raise"``).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    root = Path(root)
    if not (root / "data").is_dir():
        discover_routes(root)  # raises the one-line "no LEAD routes" error before anything is written
    with file_lock(root / ".catalog.lock", f"catalog scan of {root}"):
        return _build_catalog(root, workers, on_error, progress, dataset_config)


def _build_catalog(root: Path, workers: int, on_error: str, progress: bool, dataset_config: str | None) -> ScanReport:
    """`build_catalog` under the lock: reuse the rows of unchanged routes, re-read the others, write the catalog."""
    from leadio.format.config import dataset_config_for_root

    t0 = time.perf_counter()
    path = root / CATALOG_NAME
    remove_stale_temps(path)
    config = dataset_config_for_root(root, dataset_config)  # explicit, the path's, or the catalog's record
    found = discover_routes(root, on_error=on_error)
    trainable = [r for r in found if r.trainable]
    skipped: dict[str, str] = {r.rel_path: f"route {r.rel_path}: {r.filter_reason}" for r in found
                               if (r.filter_reason or "").startswith("unreadable (skipped)")}
    fingerprints = _fingerprints(root, trainable, on_error, skipped)

    old = _old_catalog(path)
    old_fp: dict[str, str] = {}
    old_rows: dict[str, tuple[int, int]] = {}
    if old is not None:
        old_fp = dict(zip(old.routes["rel_path"], old.routes["fingerprint"], strict=True))
        old_rows = old.route_rows()
        if not skipped and _up_to_date(old, old_fp, found, fingerprints, config.name):
            return ScanReport(path, len(found), len(trainable), 0, len(trainable), {}, len(old),
                              time.perf_counter() - t0, rewritten=False)

    todo = [r for r in trainable if r.rel_path not in skipped and not (
        old_fp.get(r.rel_path) == fingerprints[r.rel_path] and r.rel_path in old_rows)]
    reused = sum(r.rel_path not in skipped for r in trainable) - len(todo)
    scanned = _scan_routes(root, todo, workers, on_error, progress, skipped)
    parts, routes, row = _catalog_rows(found, scanned, skipped, fingerprints, old, old_rows)
    if not parts:
        raise ValueError(f"no trainable frames under {root / 'data'}: {len(found)} routes found, "
                         f"{len(trainable)} pass LEAD's filter, {len(skipped)} skipped as unreadable")
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    attrs = {"format": "leadio-catalog", "version": CATALOG_VERSION, "dataset_config": config.name,
             "num_rows": int(row), "skipped_routes": skipped}
    write_catalog(path, Catalog(columns, routes, attrs))
    return ScanReport(path, len(found), len(trainable), len(todo), reused, skipped, row,
                      time.perf_counter() - t0, rewritten=True)


def _fingerprints(root: Path, trainable: list[RouteInfo], on_error: str, skipped: dict[str, str]) -> dict[str, str]:
    """`route_fingerprint` of each route; a route whose files cannot be read raises, or with on_error="skip"
    joins ``skipped``."""
    out = {}
    for r in trainable:
        try:
            out[r.rel_path] = route_fingerprint(r.path(root), root)
        except (RouteError, OSError) as e:
            error = e if isinstance(e, RouteError) else RouteError(r.path(root), f"cannot be read ({e})")
            if on_error != "skip":
                raise error from e
            skipped[r.rel_path] = str(error)
    return out


def _old_catalog(path: Path) -> Catalog | None:
    """The catalog already at ``path``; None when there is none, or it is damaged (then it is rebuilt)."""
    if (path / "zarr.json").exists():
        try:
            return load_catalog(path)
        except ValueError as e:
            log.warning("rebuilding catalog from scratch: %s", e)
    return None


def _up_to_date(old: Catalog, old_fp: dict[str, str], found: list[RouteInfo], fingerprints: dict[str, str],
                config_name: str) -> bool:
    """Whether ``old`` lists the same routes, filter reasons, dataset config and fingerprints, none skipped."""
    same_routes = [str(p) for p in old.routes["rel_path"]] == [r.rel_path for r in found]
    same_reasons = [str(x) for x in old.routes["filter_reason"]] == [r.filter_reason or "" for r in found]
    same_reasons = same_reasons and old.attrs.get("dataset_config") == config_name
    return bool(same_routes and same_reasons and all(old_fp.get(k) == v for k, v in fingerprints.items())
                and not old.attrs.get("skipped_routes"))


def _scan_routes(root: Path, todo: list[RouteInfo], workers: int, on_error: str, progress: bool,
                 skipped: dict[str, str]) -> dict[str, dict]:
    """Read each route of ``todo`` into its columns; a bad one raises, or with on_error="skip" joins ``skipped``."""
    scanned: dict[str, dict] = {}
    jobs = [(root, r) for r in todo]
    bar = tqdm(total=len(jobs), desc="catalog", unit="route", disable=not progress or not jobs, leave=False)
    frames_done = 0
    pool = process_pool(workers, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) \
        if workers > 1 and len(jobs) > 1 else None  # Ctrl-C: the main process alone says so, once
    try:
        results = pool.map(_scan_one, jobs, chunksize=1) if pool else map(_scan_one, jobs)
        for info, cols, error in results:
            if error is not None:
                if on_error == "raise":
                    raise error
                skipped[info.rel_path] = str(error)
            else:
                scanned[info.rel_path] = cols
                frames_done += len(cols["frame"])
            bar.update(1)
            bar.set_postfix(frames=frames_done, refresh=False)
    finally:
        bar.close()
        if pool:
            pool.shutdown(cancel_futures=True)
    return scanned


def _catalog_rows(found: list[RouteInfo], scanned: dict[str, dict], skipped: dict[str, str],
                  fingerprints: dict[str, str], old: Catalog | None, old_rows: dict[str, tuple[int, int]]
                  ) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray], int]:
    """Each found route's rows (scanned now, or reused from ``old``), the ``routes/`` table, and the row count."""
    parts: list[dict[str, np.ndarray]] = []
    route_cols: dict[str, list] = {k: [] for k in ("rel_path", "scenario", "num_frames", "trainable",
                                                   "filter_reason", "fingerprint", "row_start", "row_stop")}
    row = 0
    for r in found:
        cols = None
        if r.rel_path in scanned:
            cols = scanned[r.rel_path]
        elif r.trainable and r.rel_path not in skipped and old is not None and r.rel_path in old_rows:
            a, b = old_rows[r.rel_path]
            cols = {k: v[a:b] for k, v in old.columns.items()}
        n = 0 if cols is None else len(cols["frame"])
        if cols is not None:
            parts.append(cols)
        route_cols["rel_path"].append(r.rel_path)
        route_cols["scenario"].append(r.scenario)
        route_cols["num_frames"].append(r.num_frames)
        route_cols["trainable"].append(r.trainable and r.rel_path not in skipped)
        route_cols["filter_reason"].append(r.filter_reason or ("unreadable (skipped)" if r.rel_path in skipped
                                                               else ""))
        route_cols["fingerprint"].append(fingerprints.get(r.rel_path, ""))
        route_cols["row_start"].append(row)
        route_cols["row_stop"].append(row + n)
        row += n
    return parts, _route_arrays(route_cols), row


def _route_arrays(route_cols: dict[str, list]) -> dict[str, np.ndarray]:
    """The ``routes/`` table's columns as arrays of their stored dtypes."""
    return {
        "rel_path": np.array(route_cols["rel_path"], dtype=object),
        "scenario": np.array(route_cols["scenario"], dtype=object),
        "num_frames": np.array(route_cols["num_frames"], dtype=np.int32),
        "trainable": np.array(route_cols["trainable"], dtype=bool),
        "filter_reason": np.array(route_cols["filter_reason"], dtype=object),
        "fingerprint": np.array(route_cols["fingerprint"], dtype=object),
        "row_start": np.array(route_cols["row_start"], dtype=np.int64),
        "row_stop": np.array(route_cols["row_stop"], dtype=np.int64),
    }


def main(argv: Sequence[str] | None = None, prog: str = "python -m leadio.catalog") -> int:
    from leadio.cli import add_root, make_parser, run_guarded, workers_help

    parser = make_parser(prog, "Scan the raw routes of a LEAD dataset root once into <root>/catalog.zarr (one row "
                               "per frame of the routes LEAD's filter keeps); a rescan re-reads only changed routes.")
    add_root(parser)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help=workers_help())
    parser.add_argument("--skip-bad-routes", action="store_true",
                        help="leave unreadable routes out (counted and reported) instead of stopping")
    parser.add_argument("--dataset-config", default=None, help="sensor setup name (default: from the root path)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def run() -> int:
        report = build_catalog(args.root, workers=args.workers, on_error="skip" if args.skip_bad_routes else "raise",
                               progress=not args.quiet, dataset_config=args.dataset_config)
        print(report.summary())
        return 0

    return run_guarded(run, args.verbose, prog)


if __name__ == "__main__":
    raise SystemExit(main())
