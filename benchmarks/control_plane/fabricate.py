"""Fabricate LEAD-layout roots fast: every file a frame needs, tiny where leadio only stores it, real where
the control plane reads it.

A fabricated frame has all 13 per-frame files of docs/format.md §1, so the catalog scan, the bucket build and
the shard build accept it:

- the sensor files are the same small, valid bytes for every frame (written once per process): a 1152x384
  JPEG (q30, 4:2:0), grouped camera semantics, depth and hdmap PNGs of the right sizes and class ranges, a LAZ
  of ~200 points with the ``time`` extra dimension (`leadio.synth.render.laz_bytes`), and a radar npz with
  keys radar1..radar4;
- ``metas/NNNN.pkl`` and ``bboxes/NNNN.pkl`` are real LEAD-format lzma pickles with varied values: the ego
  drives a road from `leadio.synth.world.build_world` (curves, junctions with their commands) with a speed
  profile that slows and stops; every meta has the keys of docs/format.md §2 (the pose, the 50-point route,
  the future arrays cut short near the route's end, the target points of every radius in
  `leadio.synth.world.TP_RADII`, the perturbation, the flags); the boxes list the ego and the actors within
  96 m, sorted by distance, cars and walkers with their future arrays (float16), as LEAD writes them.

Every route passes LEAD's filter (results.json of `leadio.synth.world.PASS_OUTCOMES`). Routes are spread over
LEAD's scenario folders (`leadio.schema.SCENARIO_TYPES`); each is written under a hidden temp name and renamed
into place, so a killed fabrication resumes with the routes it has.
"""

from __future__ import annotations

import functools
import json
import lzma
import math
import multiprocessing
import os
import pickle
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from leadio.format.routes import FRAME_FOLDERS
from leadio.schema import SCENARIO_TYPES
from leadio.synth.world import (
    CAR_EXTENTS,
    CAR_TYPES,
    DT,
    EGO_EXTENT,
    INFRACTION_KEYS,
    PASS_OUTCOMES,
    SAVE_EVERY,
    TOWNS,
    TP_RADII,
    WEATHERS,
    build_world,
    seeded_rng,
    to_local,
    wrap_angle,
)

__all__ = ["FabricatedRoot", "fabricate_root", "route_plan", "sensor_files"]

#: Scenario folders (LEAD's scenario types) the routes are spread over.
FOLDERS = tuple(s for s in SCENARIO_TYPES if s != "NA")
LANEFOLLOW = 4


@dataclass(frozen=True)
class FabricatedRoot:
    root: Path
    frames: int
    routes: int
    frames_per_route: int
    seconds: float
    bytes: int


def route_plan(frames: int, frames_per_route: int) -> list[int]:
    """Frames of each route: ``frames_per_route`` each, the remainder spread over the routes (one route when
    ``frames`` is below ``frames_per_route``); the sum is ``frames``."""
    if frames < 1 or frames_per_route < 1:
        raise ValueError(f"need frames >= 1 and frames_per_route >= 1, got {frames} and {frames_per_route}")
    routes = max(1, frames // frames_per_route)
    base, extra = divmod(frames, routes)
    return [base + (i < extra) for i in range(routes)]


def route_name(index: int) -> tuple[str, str, str]:
    """(scenario folder, route folder name, town) of route ``index``."""
    scenario = FOLDERS[index % len(FOLDERS)]
    town = TOWNS[index % len(TOWNS)]
    return scenario, f"{town}_Rep0_{index}_route0_12_05_19_00_00", town


@functools.cache
def sensor_files() -> dict[str, bytes]:
    """The sensor files every frame shares: folder -> bytes (valid for the 3-camera Leaderboard-2 config)."""
    import cv2
    import simplejpeg

    from leadio.synth.render import laz_bytes

    h, w = 384, 1152
    ramp = np.linspace(40, 200, w, dtype=np.float32)[None, :].repeat(h, 0)
    rgb = np.stack([ramp, ramp * 0.9, ramp * 0.8], -1).astype(np.uint8)
    rgb[h // 2:] //= 2  # road below the horizon
    semantics = np.zeros((h, w), np.uint8)
    semantics[h // 2:] = 2  # road
    semantics[h // 2:, w // 2 - 4:w // 2 + 4] = 5  # road line
    depth = np.tile(np.linspace(255, 20, 96, dtype=np.uint8)[:, None], (1, 288))
    hdmap = np.zeros((256, 256), np.uint8)
    hdmap[:, 120:136] = 1
    hdmap[:, 127:129] = 3
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform([-30, -38, -2.5], [60, 38, 2.0], (200, 3)),
                             [[5.0, 3.0, -1.0], [-5.0, -3.0, -1.0]]])
    points = points[(np.abs(points[:, 0]) > EGO_EXTENT[0]) | (np.abs(points[:, 1]) > EGO_EXTENT[1])]
    laz, _ = laz_bytes(points, rng.integers(0, 5, len(points)))
    png = lambda a: cv2.imencode(".png", a, [cv2.IMWRITE_PNG_COMPRESSION, 6])[1].tobytes()
    radar = {f"radar{k}": rng.uniform(-20, 20, (6, 4)).astype(np.float16) for k in range(1, 5)}
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **radar)
    jpeg = simplejpeg.encode_jpeg(rgb, 30, "RGB", "420")
    out = {"rgb": jpeg, "rgb_perturbated": jpeg, "semantics": png(semantics), "semantics_perturbated": png(semantics),
           "depth": png(depth), "depth_perturbated": png(depth), "hdmap": png(hdmap), "hdmap_perturbated": png(hdmap),
           "lidar": laz, "radar": buf.getvalue(), "radar_perturbated": buf.getvalue()}
    assert set(out) | {"bboxes", "metas"} == set(FRAME_FOLDERS)
    return out


def _pickle(obj: Any) -> bytes:
    # an xz stream holding a pickle, like LEAD's; preset 1 as leadio.synth writes them (xz decodes any preset
    # at about the same speed, so readers pay what they pay on LEAD's preset-6 files)
    return lzma.compress(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), preset=1)


class _Route:
    """One route's drive: the ego's pose per tick, the target-point keypoints, the actors."""

    def __init__(self, seed: int, index: int, frames: int):
        self.index, self.frames = index, frames
        self.scenario, self.name, self.town = route_name(index)
        rng = self.rng = seeded_rng(seed, index)
        self.weather = list(WEATHERS)[index % len(WEATHERS)]
        ticks = self.ticks = SAVE_EVERY * (frames - 1) + 1
        t = np.arange(ticks) * DT
        # speed: cruising between 4 and 13 m/s, slowing at random, with up to two stops of 3-8 s
        v = 8.5 + 3.5 * np.sin(2 * np.pi * t / rng.uniform(20, 60) + rng.uniform(0, 6.3))
        self.brake = np.zeros(ticks, bool)
        for _ in range(int(rng.integers(0, 3))):
            a = int(rng.integers(0, ticks))
            b = min(ticks, a + int(rng.uniform(3, 8) / DT))
            self.brake[a:b] = True
        ramp = np.convolve(self.brake.astype(float), np.ones(41) / 41, mode="same")
        self.speed = np.clip(v * (1 - ramp), 0, None) * ~self.brake
        self.target_speed = np.where(self.brake, 0.0, np.round(v + 1.0, 1))
        self.s = np.concatenate([[0.0], np.cumsum(self.speed[:-1] * DT)])
        self.world = build_world(rng, "noScenarios", float(self.s[-1]) + 80.0)
        self.route_end = float(self.s[-1]) + 60.0
        self.xy, self.yaw = self.world.pose(self.s)
        kp_s = [0.0]
        for j in self.world.junctions:
            kp_s += [j.s0 - 1.0, j.s1 + 1.0]
        kp_s = np.array(sorted({*kp_s, *np.arange(50.0, self.route_end, 50.0), self.route_end}))
        cmds = np.full(len(kp_s), LANEFOLLOW)
        for j in self.world.junctions:
            cmds[np.searchsorted(kp_s, j.s0 - 1.0)] = j.command
        self.kp_s, self.kp_cmd = kp_s, cmds.tolist()
        self.keypoints = [[float(x), float(y), 0.0] for x, y in self.world.pose(kp_s)[0]]
        # actors: cars (same direction, oncoming, parked) and walkers, at constant speed along the road
        n = int(rng.integers(6, 24))
        self.actor_cls = rng.choice(["car", "car", "car", "walker"], n)
        self.actor_s0 = rng.uniform(-60, self.route_end + 40, n)
        self.actor_d = np.where(self.actor_cls == "walker", rng.choice([-6.5, 6.5], n),
                                rng.choice([-3.5, 0.0, 3.5, 6.0], n))
        oncoming = self.actor_d < -1
        self.actor_v = np.where(self.actor_cls == "walker", rng.uniform(0.8, 1.6, n),
                                np.where(self.actor_d > 5, 0.0, rng.uniform(5, 12, n)))
        self.actor_v[oncoming] *= -1
        self.actor_ext = np.array([CAR_EXTENTS[k % len(CAR_EXTENTS)] if c == "car" else (0.3, 0.3, 0.9)
                                   for k, c in enumerate(self.actor_cls)])
        self.actor_type = [CAR_TYPES[k % len(CAR_TYPES)] if c == "car" else "walker.pedestrian.0001"
                           for k, c in enumerate(self.actor_cls)]
        self.pert = (float(rng.choice([-1, 1]) * rng.uniform(0.1, 1.0)),
                     float(rng.choice([-1, 1]) * rng.uniform(0.5, 12.5)))
        self.window = sorted(rng.uniform(0, self.route_end, 2))

    def actors_at(self, tick: int) -> tuple[np.ndarray, np.ndarray]:
        """World xy (n, 2) and yaw (n,) of every actor at ``tick``."""
        s = self.actor_s0 + self.actor_v * tick * DT
        xy = self.world.point(s, self.actor_d)
        _, yaw = self.world.pose(s)
        return xy, yaw + np.pi * (self.actor_v < 0)

    def meta(self, f: int) -> dict[str, Any]:
        t = f * SAVE_EVERY
        pose = np.array([*self.xy[t], self.yaw[t]])
        c, s = math.cos(pose[2]), math.sin(pose[2])
        fut = slice(t, min(t + 61, self.ticks))
        future = to_local(self.xy[fut], pose)
        s_ego = float(self.s[t])
        route_s = s_ego + 2.5 + np.arange(50.0)
        route_s = route_s[route_s <= self.route_end]
        if len(route_s) < 2:
            route_s = np.array([s_ego + 2.5, s_ego + 3.5])
        junction = self.world.junction_at(s_ego)
        in_window = self.window[0] <= s_ego <= self.window[1]
        accel = float((self.speed[min(t + 1, self.ticks - 1)] - self.speed[t]) / DT)
        meta: dict[str, Any] = {
            "pos_global": [float(pose[0]), float(pose[1]), 0.0], "theta": float(pose[2]),
            "ego_matrix": np.array([[c, -s, 0, pose[0]], [s, c, 0, pose[1]], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32),
            "speed": float(self.speed[t]), "target_speed": float(self.target_speed[t]),
            "brake": bool(self.brake[t]), "throttle": 0.0 if self.brake[t] else float(np.clip(accel / 2 + 0.3, 0, 1)),
            "steer": float(np.clip(np.interp(s_ego, self.world.s, self.world.kappa) * 8, -1, 1)),
            "route": to_local(self.world.pose(route_s)[0], pose).astype(np.float32),
            "future_positions": np.concatenate([future, np.zeros((len(future), 1))], 1).astype(np.float32),
            "future_yaws": wrap_angle(self.yaw[fut] - pose[2]).astype(np.float32),
            "perturbation_translation": self.pert[0], "perturbation_rotation": self.pert[1],
            "dataset_information": {"save_depth_resolution_ratio": 4, "save_depth_bits": 8,
                                    "save_grouped_semantic": True, "data_save_freq": SAVE_EVERY,
                                    "jpeg_storage_quality": 30, "lidar_accumulation": 5},
            "scenario_obstacles_ids": [], "vehicle_opened_door": False, "vehicle_door_side": None,
            "over_head_traffic_light": self.town == "Town13", "europe_traffic_light": False,
            "current_active_scenario_type": self.scenario if in_window and self.scenario != "noScenarios" else None,
            "previous_active_scenario_type": self.scenario if s_ego > self.window[1] else None,
            "town": self.town, "weather_setting": self.weather, "jpeg_storage_quality": 30,
            "visual_visibility": 1.0 if WEATHERS[self.weather][0] > 0.7 else 0.6, "lane_type_str": "Driving",
            "ego_lane_id": -1, "changed_route": False, "is_intersection": junction is not None,
            "stop_sign_hazard": False, "walker_hazard": False, "light_hazard": bool(self.brake[t] and junction),
            "vehicle_hazard": bool(self.brake[t] and not junction), "stop_sign_close": False,
            "does_emergency_brake_for_pedestrians": False, "num_parking_vehicles_in_proximity": 0,
            "slower_bad_visibility": WEATHERS[self.weather][0] < 0.7, "slower_clutterness": False,
            "slower_occluded_junction": False, "num_dangerous_adversarial": 0, "num_safe_adversarial": 0,
            "num_ignored_adversarial": 0, "rear_adversarial_id": -1,
            "dist_to_junction": next((float(j.s0 - s_ego) for j in self.world.junctions if j.s0 > s_ego), None),
            "dist_to_pedestrian": None, "accel_x": accel, "step": t,
        }
        for key in ("construction_obstacle_two_ways_stuck", "accident_two_ways_stuck", "parked_obstacle_two_ways_stuck",
                    "vehicle_opens_door_two_ways_stuck", "rear_danger_8", "rear_danger_16", "brake_cutin",
                    "emergency_brake_for_special_vehicle"):
            meta[key] = False
        last = len(self.keypoints) - 2
        for radius in TP_RADII:  # the first kept keypoint is the last one within radius; two always remain
            first = max(0, min(int(np.searchsorted(self.kp_s, s_ego + radius, "right")) - 1, last))
            meta[f"next_target_points_{radius}"] = self.keypoints[first:]
            meta[f"next_commands_{radius}"] = self.kp_cmd[first:]
        return meta

    def boxes(self, f: int, now: tuple[np.ndarray, np.ndarray], future: list[tuple[np.ndarray, np.ndarray]]
              ) -> list[dict[str, Any]]:
        t = f * SAVE_EVERY
        pose = np.array([*self.xy[t], self.yaw[t]])
        xy, yaw = now
        local = to_local(xy, pose)
        dist = np.hypot(local[:, 0], local[:, 1])
        boxes = []
        for k in np.flatnonzero(dist <= 96):
            ext = self.actor_ext[k]
            cls = str(self.actor_cls[k])
            box = {"class": cls, "extent": [float(e) for e in ext],
                   "position": [float(local[k, 0]), float(local[k, 1]), float(ext[2])],
                   "yaw": float(wrap_angle(yaw[k] - pose[2])), "distance": float(dist[k]),
                   "speed": float(abs(self.actor_v[k])), "id": 100 + int(k), "type_id": self.actor_type[k],
                   "num_points": int(max(0, 400 - 4 * dist[k])), "visible_pixels": int(max(0, 3000 - 30 * dist[k])),
                   "num_radar_points": int(dist[k] < 40), "transfuser_semantics_id": 1 if cls == "car" else 4,
                   "role_name": "parked" if self.actor_v[k] == 0 else "autopilot",
                   "lane_type_str": "Parking" if self.actor_d[k] > 5 else "Driving",
                   "mesh_path": "/Game/Carla/Static/Car/Mesh.Mesh"}
            if cls == "car":
                box["brake"] = 0.0
            fx = np.stack([fxy[k] for fxy, _ in future])
            fy = np.array([fyaw[k] for _, fyaw in future])
            box["future_positions"] = to_local(fx, pose).astype(np.float16)
            box["future_yaws"] = wrap_angle(fy - pose[2]).astype(np.float16)
            boxes.append(box)
        boxes.sort(key=lambda b: b["distance"])
        ego = {"class": "ego_car", "extent": list(EGO_EXTENT), "position": [0.0, 0.0, EGO_EXTENT[2]], "yaw": 0.0,
               "distance": 0.0, "speed": float(self.speed[t]), "brake": float(self.brake[t]), "id": 1,
               "num_points": -1, "transfuser_semantics_id": 1, "role_name": "hero", "type_id": CAR_TYPES[0]}
        return [ego, *boxes]

    def results(self) -> dict[str, Any]:
        outcome = list(PASS_OUTCOMES)[self.index % len(PASS_OUTCOMES)]
        status, score, counts = PASS_OUTCOMES[outcome]
        infractions = {k: [f"{k} #{n}" for n in range(counts.get(k, 0))] for k in INFRACTION_KEYS}
        return {"index": self.index, "route_id": f"RouteScenario_{self.index}", "status": status,
                "num_infractions": sum(counts.values()), "infractions": infractions,
                "scores": {"score_route": 100.0, "score_penalty": score / 100, "score_composed": score},
                "meta": {"route_length": round(self.route_end, 3), "duration_game": self.ticks * DT},
                "town": self.town, "weather": self.weather, "scenario": self.scenario}


def write_route(root: Path, seed: int, index: int, frames: int) -> int:
    """Write route ``index`` (``frames`` frames) under ``root/data`` atomically; returns the bytes written."""
    route = _Route(seed, index, frames)
    final = root / "data" / route.scenario / route.name
    tmp = final.parent / f".tmp-{route.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    files = sensor_files()
    for folder in FRAME_FOLDERS:
        (tmp / folder).mkdir(parents=True)
    total = 0
    # the actors' poses at every tick a box's future reaches (ticks 0..40 ahead of each frame)
    poses = [route.actors_at(t) for t in range(route.ticks)]
    for f in range(frames):
        t = f * SAVE_EVERY
        data = dict(files)
        data["metas"] = _pickle(route.meta(f))
        data["bboxes"] = _pickle(route.boxes(f, poses[t], poses[t:min(t + 41, route.ticks)]))
        for folder, blob in data.items():
            with open(tmp / folder / f"{f:04d}.{FRAME_FOLDERS[folder]}", "wb") as fh:
                fh.write(blob)
            total += len(blob)
    results = json.dumps(route.results(), indent=2).encode()
    (tmp / "results.json").write_bytes(results)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return total + len(results)


def _write_route(args: tuple[Path, int, int, int]) -> int:
    return write_route(*args)


def fabricate_root(root: str | Path, frames: int, *, frames_per_route: int = 100, seed: int = 0, workers: int = 1,
                   progress: bool = True) -> FabricatedRoot:
    """Write a LEAD root of ``frames`` frames in routes of about ``frames_per_route`` frames under
    ``root/data``; routes already complete (from an earlier, interrupted call) are kept.

    Raises:
        ValueError: ``root`` holds routes this call would not write (another size or seed): start from an
            empty folder.
    """
    root, t0 = Path(root), time.perf_counter()
    plan = route_plan(frames, frames_per_route)
    wanted = {f"data/{route_name(i)[0]}/{route_name(i)[1]}": n for i, n in enumerate(plan)}
    data = root / "data"
    found = {f"data/{s.name}/{r.name}" for s in data.iterdir() if s.is_dir() for r in s.iterdir()
             if r.is_dir() and not r.name.startswith(".")} if data.is_dir() else set()
    foreign = sorted(found - set(wanted))
    if foreign:
        raise ValueError(f"{root} holds {len(foreign)} routes this fabrication would not write (e.g. {foreign[0]});"
                         f" fabricate into an empty folder")
    todo = [(root, seed, i, n) for i, (rel, n) in enumerate(wanted.items())
            if not ((root / rel / "results.json").exists() and len(os.listdir(root / rel / "metas")) == n)]
    total = 0
    with tqdm(total=len(plan), initial=len(plan) - len(todo), unit="route", desc=f"fabricate {frames}",
              disable=not progress) as bar:
        if workers <= 1 or len(todo) <= 1:
            for job in todo:
                total += _write_route(job)
                bar.update()
        else:  # spawn: never fork a process that may have run OpenCV's thread pool
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for n in pool.map(_write_route, todo, chunksize=4):
                    total += n
                    bar.update()
    return FabricatedRoot(root, frames, len(plan), frames_per_route, time.perf_counter() - t0, total)
