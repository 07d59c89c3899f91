"""Writing routes to disk: one route atomically (`generate_route`), a whole root with processes
(`generate_root`), routes already complete kept.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
from tqdm import tqdm

from leadio.synth.records import RouteSpec, RouteStats, SynthSummary, route_spec
from leadio.synth.scene import build_scene
from leadio.synth.writers import frame_files, route_results

FOLDERS = {"rgb": "jpg", "rgb_perturbated": "jpg", "semantics": "png", "semantics_perturbated": "png",
           "depth": "png", "depth_perturbated": "png", "hdmap": "png", "hdmap_perturbated": "png", "lidar": "laz",
           "radar": "npz", "radar_perturbated": "npz", "bboxes": "pkl", "metas": "pkl"}


def generate_route(route_dir: str | Path, spec: RouteSpec, num_frames: int) -> RouteStats:
    """Write one route atomically: into ``<scenario>/.tmp-<name>``, then renamed to ``route_dir``.

    Args:
        route_dir: the final route folder (usually ``root / spec.relpath``); replaced if it exists.
        spec: from `route_spec`; everything written is a pure function of it and ``num_frames``.
        num_frames: saved frames (4 Hz); the simulation runs 5·(num_frames − 1) + 1 ticks at 20 Hz.
    """
    if num_frames < 1:
        raise ValueError(f"route {spec.name}: num_frames must be >= 1, got {num_frames}")
    route_dir = Path(route_dir)
    tmp = route_dir.parent / f".tmp-{route_dir.name}"
    shutil.rmtree(tmp, ignore_errors=True)  # a killed earlier run
    for folder in FOLDERS:
        (tmp / folder).mkdir(parents=True)
    scene = build_scene(spec, num_frames)
    total = 0
    for f in range(num_frames):
        for folder, data in frame_files(scene, f).items():
            (tmp / folder / f"{f:04d}.{FOLDERS[folder]}").write_bytes(data)
            total += len(data)
    results = json.dumps(route_results(scene), indent=2).encode()
    (tmp / "results.json").write_bytes(results)
    if route_dir.exists():
        shutil.rmtree(route_dir)
    os.replace(tmp, route_dir)
    return RouteStats(spec, num_frames, total + len(results))


def _existing(root: Path, spec: RouteSpec) -> RouteStats:
    route = root / spec.relpath
    files = [p for p in route.rglob("*") if p.is_file()]
    return RouteStats(spec, len(list((route / "metas").glob("*.pkl"))), sum(p.stat().st_size for p in files), True)


def foreign_routes(root: str | Path, num_routes: int, seed: int) -> list[str]:
    """Route folders under ``root/data`` (``data/<Scenario>/<Route>``) that `generate_root` with these arguments
    would not write: routes of another seed, or real ones."""
    data = Path(root) / "data"
    if not data.is_dir():
        return []
    ours = {route_spec(seed, i).relpath for i in range(num_routes)}
    found = sorted(f"data/{s.name}/{r.name}" for s in data.iterdir() if s.is_dir() and not s.name.startswith(".")
                   for r in s.iterdir() if r.is_dir() and not r.name.startswith("."))
    return [r for r in found if r not in ours]


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the main process alone says so; each route is atomic


def generate_root(root: str | Path, num_routes: int, frames_per_route: int, seed: int, workers: int = 1,
                  progress: bool = True) -> SynthSummary:
    """Write ``num_routes`` routes under ``root/data/<Scenario>/``; routes already complete are kept.

    Args:
        root: the dataset root (e.g. ``data/carla_leaderboard2``).
        num_routes: routes 0..num_routes−1 of this seed.
        frames_per_route: saved frames per route.
        seed: non-negative; the same seed gives byte-identical files.
        workers: processes (one route each at a time).
        progress: show a tqdm bar over routes.
    """
    if seed < 0 or num_routes < 0 or frames_per_route < 1 or workers < 1:
        raise ValueError(f"need seed >= 0, num_routes >= 0, frames_per_route >= 1 and workers >= 1; got seed={seed}, "
                         f"num_routes={num_routes}, frames_per_route={frames_per_route}, workers={workers}")
    root, start = Path(root), time.perf_counter()
    specs = [route_spec(seed, i) for i in range(num_routes)]
    stats = {s.index: _existing(root, s) for s in specs if (root / s.relpath).is_dir()}
    todo = [s for s in specs if s.index not in stats]
    with tqdm(total=num_routes, initial=len(stats), disable=not progress, unit="route", desc="synth") as bar:
        if workers == 1:
            for spec in todo:
                stats[spec.index] = generate_route(root / spec.relpath, spec, frames_per_route)
                bar.update()
        else:
            # spawn, not fork: a forked child of a process that already ran OpenCV's thread pool can deadlock
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
                futures = [pool.submit(generate_route, root / s.relpath, s, frames_per_route) for s in todo]
                for future in futures:
                    result = future.result()
                    stats[result.spec.index] = result
                    bar.update()
    routes = [stats[i] for i in range(num_routes)]
    written = [r for r in routes if not r.skipped]
    return SynthSummary(len(written), len(routes) - len(written), sum(r.frames for r in written),
                        sum(r.bytes for r in written), time.perf_counter() - start, routes)
