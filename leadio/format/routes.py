"""Route discovery and LEAD's failed-route filter.

A LEAD root holds ``data/<Scenario>/<RouteDir>/``. Routes are visited scenario folder first, then route
folder, both sorted (LEAD's order). Whether a route is trainable follows docs/format.md §1.2
to the letter; `route_filter_reason` says why a route is dropped, so reports can show it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from leadio.format.errors import RouteError

__all__ = [
    "FRAME_FOLDERS",
    "RouteInfo",
    "discover_routes",
    "frame_names",
    "list_frames",
    "route_filter_reason",
    "trainable_routes_on_disk",
]

#: Per-frame folders of a LEAD route and their file extension (debug-only folders are not read).
FRAME_FOLDERS: dict[str, str] = {
    "rgb": "jpg", "rgb_perturbated": "jpg",
    "semantics": "png", "semantics_perturbated": "png",
    "depth": "png", "depth_perturbated": "png",
    "hdmap": "png", "hdmap_perturbated": "png",
    "lidar": "laz",
    "radar": "npz", "radar_perturbated": "npz",
    "bboxes": "pkl", "metas": "pkl",
}

_HARD_FAILURES = frozenset(
    {"Failed", "Failed - Agent couldn't be set up", "Failed - Simulation crashed", "Failed - Agent crashed"}
)


@dataclass(frozen=True)
class RouteInfo:
    """One route folder as found on disk.

    Attributes:
        rel_path: path relative to the root, ``data/<Scenario>/<RouteDir>`` (POSIX separators).
        scenario: the scenario folder name.
        name: the route folder name (opaque to loaders).
        num_frames: number of files in ``bboxes/`` (LEAD's frame count).
        filter_reason: None when LEAD's filter keeps the route, else why it is dropped.
    """

    rel_path: str
    scenario: str
    name: str
    num_frames: int
    filter_reason: str | None

    @property
    def trainable(self) -> bool:
        return self.filter_reason is None

    def path(self, root: str | Path) -> Path:
        return Path(root) / self.rel_path


def route_filter_reason(results: dict | None, has_first_meta: bool = True) -> str | None:
    """Apply LEAD's failed-route filter to a route's ``results.json`` content.

    Args:
        results: the parsed results.json, or None when the file is missing.
        has_first_meta: whether ``metas/0000.pkl`` exists.

    Returns:
        None when the route is kept, else a short reason it is skipped.
    """
    if results is None:
        return "results.json missing"
    if not has_first_meta:
        return "metas/0000.pkl missing"
    status = results.get("status")
    num_infractions = results.get("num_infractions", 0)
    score = (results.get("scores") or {}).get("score_composed")
    infractions = results.get("infractions") or {}
    min_speed = len(infractions.get("min_speed_infractions") or [])
    outside_lanes = len(infractions.get("outside_route_lanes") or [])
    good = (
        score == 100
        or (score is not None and score < 100 and num_infractions == min_speed)
        or (status == "Completed" and num_infractions == min_speed + outside_lanes)
        or status == "Perfect"
    )
    if status in _HARD_FAILURES:
        return f"status {status!r}"
    if not good:
        return f"failed run (status {status!r}, score {score}, {num_infractions} infractions)"
    return None


def _read_results(route_dir: Path) -> dict | None:
    path = route_dir / "results.json"
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RouteError(route_dir, f"results.json is not valid JSON ({e}); expected LEAD's RouteRecord") from e
    except OSError as e:  # permission denied, a folder in its place, an I/O error
        raise RouteError(route_dir, f"results.json cannot be read ({e.strerror or e}); make it readable, or leave "
                                    f"the route out with --skip-bad-routes") from e
    if not isinstance(data, dict):
        raise RouteError(route_dir, f"results.json holds a {type(data).__name__}, expected a JSON object")
    return data


def frame_names(route_dir: str | Path, folder: str = "bboxes") -> dict[int, list[str]]:
    """Frame number -> the file names in one per-frame folder that hold it (``NNNN.<ext>``; a stray ``005.jpg``
    beside ``0005.jpg`` makes two). ``{}`` if the folder is missing.

    Raises:
        RouteError: the folder cannot be listed (permission denied, not a folder).
    """
    ext = "." + FRAME_FOLDERS[folder]
    out: dict[int, list[str]] = {}
    try:
        entries = os.listdir(Path(route_dir) / folder)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise RouteError(route_dir, f"folder {folder}/ cannot be listed ({e.strerror or e}); make it readable, or "
                                    f"leave the route out with --skip-bad-routes") from e
    for entry in entries:
        stem, dot, suffix = entry.partition(".")
        if dot and "." + suffix == ext and stem.isdigit():
            out.setdefault(int(stem), []).append(entry)
    return {f: sorted(names) for f, names in sorted(out.items())}


def list_frames(route_dir: str | Path, folder: str = "bboxes") -> list[int]:
    """Sorted frame numbers present in one per-frame folder of a route (``[]`` if the folder is missing); a frame
    held by two files (``005.jpg`` beside ``0005.jpg``) is listed twice.

    Raises:
        RouteError: the folder cannot be listed (permission denied, not a folder).
    """
    return sorted(f for f, names in frame_names(route_dir, folder).items() for _ in names)


def discover_routes(root: str | Path, on_error: str = "raise") -> list[RouteInfo]:
    """All route folders under ``<root>/data``, in LEAD's order, each with its filter verdict.

    Args:
        root: the dataset root.
        on_error: ``"raise"``: an unreadable results.json is an error; ``"skip"``: such a route is dropped, with
            the reason as its ``filter_reason``.

    Raises:
        FileNotFoundError: ``<root>/data`` does not exist.
        RouteError: a results.json is unreadable (with ``on_error="raise"``).
    """
    root = Path(root)
    data_dir = root / "data"
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"no LEAD routes: {data_dir} does not exist (expected <root>/data/<Scenario>/<RouteDir>/); pass "
            f"--root <dataset root>, or generate synthetic routes with `python -m leadio.synth --root {root}`"
        )
    routes = []
    for scenario in sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for name in sorted(os.listdir(data_dir / scenario)):
            route_dir = data_dir / scenario / name
            if name.startswith(".") or not route_dir.is_dir():
                continue  # hidden folders are in-progress writes (e.g. leadio.synth's .tmp-*)
            num_frames, reason = 0, None
            try:
                num_frames = len(list_frames(route_dir, "bboxes"))
                reason = route_filter_reason(_read_results(route_dir), (route_dir / "metas" / "0000.pkl").exists())
            except RouteError as e:
                if on_error != "skip":
                    raise
                reason = f"unreadable (skipped): {e.problem}"
            routes.append(RouteInfo(
                rel_path=f"data/{scenario}/{name}",
                scenario=scenario,
                name=name,
                num_frames=num_frames,
                filter_reason=reason,
            ))
    return routes


def trainable_routes_on_disk(root: str | Path, on_error: str = "raise") -> dict[str, int]:
    """rel_path -> frame count of the routes LEAD's filter keeps, as found on disk now."""
    return {r.rel_path: r.num_frames for r in discover_routes(root, on_error) if r.trainable}
