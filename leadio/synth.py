"""Realistic synthetic LEAD routes: same folders, file names, encodings and typical sizes as real ones.

Every route is a small deterministic simulation seeded by (seed, route index); the sensors are rendered from
it, so the labels agree with each other and a model can learn from them.

The world of one route:
  * A flat road. Its centre-line is integrated from a smoothed piecewise-constant curvature: straights, road
    curves (radius 40-150 m) and junctions (a 90° turn of radius 13-18 m, or straight across), each with a
    cross road drawn as two stubs and optionally a traffic light or a stop sign.
  * The cross-section, with d = metres to the right of the ego lane centre (CARLA: y is right): an oncoming
    lane, the ego lane, a same-direction lane, a parking strip, sidewalks, then building blocks, trees and
    street lamps.
  * The expert drives the ego lane centre at 20 Hz. It follows a target speed that is limited by curvature and
    junctions, with a look-ahead deceleration profile. It stops (brake=True, target_speed=0) for red lights,
    stop signs and crossing walkers.
  * Other actors: oncoming and same-direction cars at constant speed, parked cars, walkers on the sidewalks,
    and the scenario's obstacles (accident cars, cones with a warning board, a parked obstacle).

Every object is an oriented box. The sensors:
  * Cameras: the ground comes from a per-route remap table into an ego-frame BEV raster of the road. Boxes are
    filled far to near as the convex hull of their near-plane-clipped corners. Per-class colours give rgb,
    class ids give semantics, and each box gets one depth (the mean of its visible corners).
  * LiDAR: points are sampled on the box faces that face the sensor, with density ~ 1/distance², plus kerbs
    and some ground left over by RANSAC. There are 5 sweeps; older sweeps are ego-motion compensated.
  * Radar: hits where each sensor's horizontal plane meets the visible faces, with radial velocity.
  * hdmap: the same road drawing at 2 px/m.

Files: per frame ~160 KB like LEAD's ~190 KB (JPEGs get a noise texture so that q30 gives ~45 KB). JPEGs are 4:2:0
like cv2.imwrite; PNGs use level 6 with a fixed filter; pickles are xz preset 1, readable by numpy 1 and 2.
results.json fails LEAD's route filter for one route in five, in varied ways. Same seed, same bytes, with any
number of workers.

Simplified against CARLA: there is no occlusion in LiDAR or radar, boxes are flat-coloured silhouettes (no
meshes or lighting), traffic ignores everything, the cross roads are empty and the world has no slopes.
In this module a box position is the box centre, so z = half height in the ego frame (ground z = 0). The LAZ z
is the vehicle z − 1.25, as in LEAD.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import io
import json
import lzma
import multiprocessing
import os
import pickle
import pickletools
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import laspy
import numpy as np
import simplejpeg
from tqdm import tqdm

__all__ = ["RouteSpec", "RouteStats", "SynthSummary", "generate_root", "generate_route", "main", "route_spec"]

LEFT, RIGHT, STRAIGHT, LANEFOLLOW = 1, 2, 3, 4
DT, SAVE_EVERY, DS, S_BACK = 0.05, 5, 0.5, 100.0  # s per tick, ticks per frame, centre-line step m, lead-in m
LANE_W = 3.5
ROAD_LO, ROAD_HI = -1.5 * LANE_W, 1.5 * LANE_W + 2.5  # oncoming lane .. parking strip (d, metres)
WALK_LO, WALK_HI = ROAD_LO - 3.5, ROAD_HI + 3.5  # outer sidewalk edges
CAM_W, IMG_H = 384, 384
FOCAL = CAM_W / 2 / np.tan(np.deg2rad(30.0))  # 60° FOV pinhole
CAMERAS = ((0.1, -0.35, -54.5), (0.35, 0.0, 0.0), (0.1, 0.35, 54.5))  # x, y, yaw (deg); z = CAM_Z
CAM_Z, LIDAR_Z, NEAR = 2.25, 2.5, 0.3
RADARS = ((2.6, 0.0, -45.0), (2.6, 0.0, 45.0), (-2.6, 0.0, 135.0), (-2.6, 0.0, 225.0))
BEV_X0, BEV_Y0, BEV_PPM, BEV_SIZE = -8.0, -64.0, 8.0, 1024  # camera ground raster (ego frame)
EGO_EXTENT = (2.4508, 1.0642, 0.7553)
TP_RADII = tuple(3.0 + 0.25 * i for i in range(29))
SCENARIOS = ("noScenarios", "Accident", "ConstructionObstacle", "SignalizedJunctionLeftTurn", "ParkedObstacle")
TOWNS = ("Town12", "Town13", "Town04", "Town10HD", "Town03", "Town05")
WEATHERS = {  # name: (brightness, sky colour)
    "ClearNoon": (1.0, (110, 160, 230)), "CloudyNoon": (0.85, (175, 180, 190)), "WetNoon": (0.8, (150, 160, 175)),
    "HardRainNoon": (0.6, (115, 120, 130)), "ClearSunset": (0.75, (235, 165, 115)), "ClearNight": (0.35, (20, 25, 45)),
}
# Material ids of the camera id image; M_ACTOR + k is the k-th actor box of the frame.
M_SKY, M_FAR, M_ROAD, M_MARK, M_YELLOW, M_WALK, M_TERRAIN, M_POLE, M_VEG, M_LIGHT, M_STOP, M_BUILDING = range(12)
M_ACTOR = 16
BASE_RGB = [(0, 0, 0), (120, 120, 112), (72, 72, 78), (225, 225, 225), (220, 190, 60), (150, 145, 140),
            (95, 120, 70), (90, 90, 95), (50, 100, 45), (25, 25, 25), (200, 30, 30),
            (170, 150, 130), (130, 130, 142), (190, 180, 160), (120, 95, 80), (0, 0, 0)]
BASE_SEM = [0, 0, 2, 5, 5, 0, 0, 0, 0, 3, 8, 0, 0, 0, 0, 0]
CAR_EXTENTS = ((2.45, 1.06, 0.76), (2.25, 0.9, 0.74), (2.6, 1.1, 0.85), (3.1, 1.2, 1.0), (2.0, 0.88, 0.78))
CAR_TYPES = ("vehicle.lincoln.mkz_2020", "vehicle.mini.cooper_s", "vehicle.nissan.patrol",
             "vehicle.mercedes.sprinter", "vehicle.audi.a2")
# results.json templates: (status, score_composed, infraction counts); the filter outcome is in the name.
PASS_OUTCOMES = {"perfect": ("Completed", 100.0, {}), "perfect_status": ("Perfect", 100.0, {}),
                 "slow": ("Completed", 84.0, {"min_speed_infractions": 2}),
                 "lanes": ("Completed", 91.5, {"min_speed_infractions": 1, "outside_route_lanes": 1})}
FAIL_OUTCOMES = {"agent_crashed": ("Failed - Agent crashed", 38.0, {}),
                 "collision": ("Completed", 62.0, {"collisions_vehicle": 1}),
                 "sim_crashed": ("Failed - Simulation crashed", 12.0, {}),
                 "red_light": ("Completed", 70.0, {"red_light": 1, "min_speed_infractions": 1}),
                 "blocked": ("Failed - Agent got blocked", 45.0, {"vehicle_blocked": 1})}
INFRACTION_KEYS = ("collisions_layout", "collisions_pedestrian", "collisions_vehicle", "red_light",
                   "stop_infraction", "outside_route_lanes", "min_speed_infractions",
                   "yield_emergency_vehicle_infractions", "scenario_timeouts", "route_dev", "vehicle_blocked",
                   "route_timeout")
_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
_EDGES = np.array([(i, i ^ b) for i in range(8) for b in (1, 2, 4) if i < i ^ b])
_FACES = np.array([  # per visible face: normal, tangent 1, tangent 2 (box-local axes); the bottom is never hit
    [[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[-1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 1, 0], [1, 0, 0], [0, 0, 1]],
    [[0, -1, 0], [1, 0, 0], [0, 0, 1]], [[0, 0, 1], [1, 0, 0], [0, 1, 0]]], float)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _wrap(a: np.ndarray | float) -> np.ndarray:
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def _to_local(xy: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """World (...,2) -> the frame of pose (x, y, yaw): R(yaw)ᵀ(p − o)."""
    c, s = np.cos(pose[2]), np.sin(pose[2])
    dx, dy = xy[..., 0] - pose[0], xy[..., 1] - pose[1]
    return np.stack([c * dx + s * dy, -s * dx + c * dy], -1)


@dataclasses.dataclass(frozen=True)
class RouteSpec:
    """Everything that names and parameterises one synthetic route; a pure function of (seed, index)."""

    seed: int
    index: int
    scenario: str
    town: str
    weather: str
    name: str
    outcome: str
    passes_filter: bool  # whether LEAD's route filter (docs/format.md §1.2) keeps this route

    @property
    def relpath(self) -> str:
        return f"data/{self.scenario}/{self.name}"


@dataclasses.dataclass(frozen=True)
class RouteStats:
    """What `generate_route` wrote."""

    spec: RouteSpec
    frames: int
    bytes: int
    skipped: bool = False


@dataclasses.dataclass
class SynthSummary:
    """Result of `generate_root`; ``routes`` lists every route of the root, written now or found complete."""

    routes_written: int
    routes_skipped: int
    frames: int
    bytes: int
    seconds: float
    routes: list[RouteStats]

    @property
    def passing(self) -> list[str]:
        """Relative paths of the routes that LEAD's filter keeps."""
        return [r.spec.relpath for r in self.routes if r.spec.passes_filter]


def route_spec(seed: int, index: int) -> RouteSpec:
    """The name, scenario, town, weather and results.json outcome of route ``index`` of a seeded root.

    Exactly one route in five fails LEAD's filter (which one depends on the seed); the failure kinds rotate.
    """
    rng = _rng(seed, index, 0)
    scenario = SCENARIOS[rng.choice(len(SCENARIOS), p=[0.3, 0.15, 0.2, 0.2, 0.15])]
    town, weather = TOWNS[rng.integers(len(TOWNS))], list(WEATHERS)[rng.integers(len(WEATHERS))]
    date = "_".join(f"{v:02d}" for v in (rng.integers(1, 13), rng.integers(1, 29), rng.integers(0, 24),
                                         *rng.integers(0, 60, 2)))
    fails = (index + seed) % 5 == 0
    if fails:
        outcome = list(FAIL_OUTCOMES)[(index // 5 + seed) % len(FAIL_OUTCOMES)]
    else:
        outcome = list(PASS_OUTCOMES)[rng.choice(len(PASS_OUTCOMES), p=[0.6, 0.1, 0.2, 0.1])]
    name = f"{town}_Rep0_{index}_0_route0_{date}"
    return RouteSpec(seed, index, scenario, town, weather, name, outcome, not fails)


# ----------------------------------------------------------------------------------------------- the world
@dataclasses.dataclass
class Junction:
    s0: float  # arc length where the junction starts (stop line) and ends
    s1: float
    command: int
    centre: np.ndarray
    stub_dirs: tuple[float, float]  # yaw of the two cross-road stubs leaving the centre
    control: str | None  # "light", "stop" or None
    red: bool


@dataclasses.dataclass
class World:
    """The road centre-line sampled every DS metres of arc length s (s = 0 at the route start)."""

    s: np.ndarray
    xy: np.ndarray
    yaw: np.ndarray
    kappa: np.ndarray
    junctions: list[Junction]

    def pose(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xy = np.stack([np.interp(s, self.s, self.xy[:, 0]), np.interp(s, self.s, self.xy[:, 1])], -1)
        return xy, np.interp(s, self.s, self.yaw)

    def point(self, s: np.ndarray, d: np.ndarray | float) -> np.ndarray:
        """World xy at arc length s, d metres to the right of the centre-line."""
        xy, yaw = self.pose(s)
        d = np.asarray(d)
        return xy + np.stack([-np.sin(yaw) * d, np.cos(yaw) * d], -1)

    def junction_at(self, s: float, margin: float = 0.0) -> Junction | None:
        return next((j for j in self.junctions if j.s0 - margin <= s <= j.s1 + margin), None)


def _segments(rng: np.random.Generator, scenario: str, length: float) -> list[tuple[float, float, int, str]]:
    """(length, curvature, command, control) pieces after the lead-in; positive curvature turns right."""
    segs: list[tuple[float, float, int, str]] = []
    heading, total, first = 0.0, 0.0, True
    while total < length:
        forced = first and scenario == "SignalizedJunctionLeftTurn"
        if forced or (segs and segs[-1][2] == LANEFOLLOW and rng.random() < 0.35):
            cmd = LEFT if forced else int(rng.choice([LEFT, RIGHT, STRAIGHT], p=[0.35, 0.35, 0.3]))
            if cmd != STRAIGHT and abs(heading) > 1.2:
                cmd = LEFT if heading > 0 else RIGHT  # keep the route from curling onto itself
            control = "light" if forced else str(rng.choice(["light", "stop", "none"], p=[0.5, 0.25, 0.25]))
            radius = rng.uniform(13, 18)
            piece = [(rng.uniform(30, 45), 0.0, LANEFOLLOW, "")]
            piece.append((24.0, 0.0, cmd, control) if cmd == STRAIGHT else
                         (radius * np.pi / 2, (1 if cmd == RIGHT else -1) / radius, cmd, control))
            piece.append((rng.uniform(25, 40), 0.0, LANEFOLLOW, ""))
        elif rng.random() < 0.5:
            radius, angle = rng.uniform(40, 150), np.deg2rad(rng.uniform(15, 60))
            sign = -np.sign(heading) if abs(heading) > 0.8 else rng.choice([-1.0, 1.0])
            piece = [(radius * angle, sign / radius, LANEFOLLOW, "")]
        else:
            piece = [(rng.uniform(20, 70), 0.0, LANEFOLLOW, "")]
        for seg in piece:
            segs.append(seg)
            heading += seg[0] * seg[1]
            total += seg[0]
        first = False
    return segs


def build_world(rng: np.random.Generator, scenario: str, length: float) -> World:
    """Integrate the centre-line from S_BACK metres behind the start to at least ``length`` after it."""
    segs = [(S_BACK, 0.0, LANEFOLLOW, "")] + _segments(rng, scenario, length)
    counts = [max(1, round(seg[0] / DS)) for seg in segs]
    kappa = np.concatenate([np.full(n, seg[1]) for n, seg in zip(counts, segs, strict=True)])
    kernel = np.ones(17) / 17  # 8 m box filter: clothoid-like curvature transitions
    kappa = np.convolve(np.pad(kappa, 8, mode="edge"), kernel, mode="valid")
    yaw = rng.uniform(-np.pi, np.pi) + np.concatenate([[0.0], np.cumsum(kappa[:-1]) * DS])
    mid = yaw[:-1] + 0.5 * np.diff(yaw)
    xy = np.concatenate([[[0.0, 0.0]], np.cumsum(np.stack([np.cos(mid), np.sin(mid)], -1) * DS, 0)])
    s = np.arange(len(kappa)) * DS - S_BACK
    xy += rng.uniform(-3000, 3000, 2) - xy[round(S_BACK / DS)]
    world = World(s, xy, yaw, kappa, [])
    bounds = np.concatenate([[0], np.cumsum(counts)]) * DS - S_BACK
    for k, (_, _, cmd, control) in enumerate(segs):
        if cmd == LANEFOLLOW:
            continue
        s0, s1 = bounds[k], bounds[k + 1]
        (p0, p1), (y0, y1) = world.pose(np.array([s0, s1]))
        if cmd == STRAIGHT:
            centre, stubs = world.pose(np.array([(s0 + s1) / 2]))[0][0], (y0 + np.pi / 2, y0 - np.pi / 2)
        else:
            centre, stubs = p0 + (s1 - s0) * 2 / np.pi * np.array([np.cos(y0), np.sin(y0)]), (y0, y1 + np.pi)
        control_ = None if control == "none" else control
        world.junctions.append(Junction(s0, s1, cmd, centre, stubs, control_, control_ == "light" and
                                        bool(rng.random() < 0.6)))
    return world


# ---------------------------------------------------------------------------------------------- the expert
@dataclasses.dataclass
class Stop:
    """A reason to stop at arc length ``s``; the tick fields are filled in while driving."""

    s: float
    kind: str  # "walker", "light" or "stop_sign"
    hold: int
    junction: int = -1
    walker_d0: float = ROAD_HI + 1.0
    brake_tick: int = -1
    stop_tick: int = -1
    release_tick: int = 1 << 30


def _speed_profile(world: World, v_max: float) -> np.ndarray:
    """Target speed along s: curvature and junction limits, then at most 2 m/s² deceleration into them."""
    v = np.minimum(v_max, np.sqrt(2.5 / np.maximum(np.abs(world.kappa), 1e-4)))
    for j in world.junctions:
        v[(world.s > j.s0 - 3) & (world.s < j.s1)] = np.minimum(v[(world.s > j.s0 - 3) & (world.s < j.s1)], 6.0)
    w = v**2 + 4.0 * world.s  # v(s)² ≤ v(s')² + 2a(s' − s) for all s' ≥ s, as a reversed running minimum
    return np.sqrt(np.maximum(np.minimum.accumulate(w[::-1])[::-1] - 4.0 * world.s, 0.0))


def drive(world: World, stops: list[Stop], v_max: float, num_ticks: int) -> dict[str, np.ndarray]:
    """Simulate the expert along the ego lane centre; returns per-tick arrays (s, speed, accel, ...)."""
    profile = _speed_profile(world, v_max)
    out = {k: np.zeros(num_ticks) for k in ("s", "speed", "accel", "target_speed")}
    out["brake"], out["hazard"] = np.zeros(num_ticks, bool), np.full(num_ticks, "", object)
    s = v = 0.0
    for k in range(num_ticks):
        target, brake = float(np.interp(s, world.s, profile)), False
        accel = float(np.clip(1.5 * (target - v), -3.0, 2.0))
        stop = next((st for st in stops if st.release_tick > k and st.s > s - 0.5), None)
        if stop is not None:
            d = stop.s - s
            if stop.brake_tick < 0 and (d < 1.0 or v * v / (2 * max(d, 0.1)) > 1.8):
                stop.brake_tick = k
            if stop.brake_tick >= 0:
                target, brake = 0.0, True
                out["hazard"][k] = stop.kind
                accel = -min(8.0, v * v / (2 * max(d, 0.05)))
                if v + accel * DT <= 0.05 or d < 0.3:
                    accel = -v / DT
                    if stop.stop_tick < 0:
                        stop.stop_tick, stop.release_tick = k, _release_tick(stop, k)
        for key, val in (("s", s), ("speed", v), ("accel", accel), ("target_speed", target), ("brake", brake)):
            out[key][k] = val
        v = max(0.0, v + accel * DT)
        s += v * DT
    return out


def _release_tick(stop: Stop, k: int) -> int:
    if stop.kind == "walker":  # go once the walker has left the ego lane
        return max(k + 20, stop.brake_tick + int((stop.walker_d0 + LANE_W / 2 + 0.7) / 1.4 / DT))
    return k + stop.hold


# ------------------------------------------------------------------------------------------------ actors
@dataclasses.dataclass
class Actors:
    """A actors over T ticks: world pose per tick and static attributes."""

    xy: np.ndarray  # (A, T, 2)
    yaw: np.ndarray  # (A, T)
    valid: np.ndarray  # (A, T) bool
    extent: np.ndarray  # (A, 3)
    rgb: np.ndarray  # (A, 3)
    sem: np.ndarray  # (A,) TransFuser class id
    info: list[dict[str, Any]]  # class, id, role_name, type_id, lane_type_str, mesh_path

    def velocity(self) -> np.ndarray:
        vel = np.diff(self.xy, axis=1, append=self.xy[:, -1:]) / DT
        vel[:, -1] = vel[:, -2] if self.xy.shape[1] > 1 else 0.0
        return vel


def build_actors(rng: np.random.Generator, world: World, scenario: str, stops: list[Stop], ticks: int,
                 obstacle_s: float) -> Actors:
    """Traffic, parked cars, walkers and scenario obstacles as (s(t), d(t), yaw offset(t)) on the road."""
    t = np.arange(ticks) * DT
    length = world.s[-1]
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, ...], dict[str, Any]]] = []

    def car(s_t, d_t, yaw_off, role, lane, cls="car", mesh=None) -> None:
        k = rng.integers(len(CAR_EXTENTS))
        rows.append((s_t, d_t, yaw_off, CAR_EXTENTS[k], dict(cls=cls, role_name=role, lane_type_str=lane,
                                                             type_id=CAR_TYPES[k], mesh_path=mesh)))

    def static(s, d, yaw_off, extent, type_id, mesh, role="scenario") -> None:
        rows.append((s, d, yaw_off, extent, dict(cls="static", role_name=role, lane_type_str="Driving",
                                                 type_id=type_id, mesh_path=mesh)))

    def walker(s_t, d_t, yaw_off) -> None:
        rows.append((s_t, d_t, yaw_off, (0.25, 0.3, 0.9), dict(cls="walker", role_name="walker",
                                                               lane_type_str="Sidewalk", mesh_path=None,
                                                               type_id=f"walker.pedestrian.{rng.integers(1, 49):04d}")))

    right_lane_blocked = scenario in ("Accident", "ConstructionObstacle", "ParkedObstacle")
    for s0 in rng.uniform(-S_BACK, length, int(length / 40)):
        car(s0 - rng.uniform(5, 10) * t, -LANE_W, np.pi, "autopilot", "Driving")
    for s0 in rng.uniform(-S_BACK, length, 0 if right_lane_blocked else int(length / 70)):
        car(s0 + rng.uniform(4, 9) * t, LANE_W, 0.0, "autopilot", "Driving")
    for s0 in rng.uniform(-S_BACK, length, int(length / 45)):
        if world.junction_at(s0, 15) is None and abs(s0 - obstacle_s) > 20:
            if rng.random() < 0.5:
                car(s0, 1.5 * LANE_W + 1.25, 0.0, "parked", "Parking")
            else:
                car(s0, 1.5 * LANE_W + 1.25, 0.0, "", "Parking", "static",
                    "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/Sedan/SM_ParkedSedan.SM_ParkedSedan")
    for s0 in rng.uniform(-S_BACK, length, int(length / 20)):
        side = rng.choice([-1.0, 1.0])
        walker(s0 + rng.choice([-1, 1]) * rng.uniform(0.8, 1.6) * t, (WALK_HI - 1.5) if side > 0 else
               (WALK_LO + 1.5), 0.0)
    for st in stops:
        if st.kind == "walker":  # waits on the kerb, crosses from the brake tick on, then stays on the far side
            tk = np.arange(ticks)
            moving = np.clip((tk - (st.brake_tick if st.brake_tick >= 0 else ticks)) * DT * 1.4, 0, None)
            walker(np.full(ticks, st.s + 6.0), np.maximum(st.walker_d0 - moving, WALK_LO + 1.5), -np.pi / 2)
    if scenario == "Accident":
        for k in range(2):
            car(obstacle_s + 6 * k, LANE_W + rng.uniform(-0.4, 0.4), rng.uniform(-0.6, 0.6), "scenario", "Driving")
    elif scenario == "ParkedObstacle":
        car(obstacle_s, LANE_W + 0.3, 0.05, "scenario", "Driving")
    elif scenario == "ConstructionObstacle":
        static(obstacle_s - 3, LANE_W, 0.0, (0.3, 1.3, 1.1), "static.prop.trafficwarning",
               "/Game/Carla/Static/TrafficWarning/SM_TrafficWarning.SM_TrafficWarning")
        for k in range(7):
            static(obstacle_s + 2.5 * k, 0.5 * LANE_W + 0.4 + (k % 2) * 1.2, 0.0, (0.2, 0.2, 0.35),
                   "static.prop.constructioncone", "/Game/Carla/Static/Static/SM_Cone.SM_Cone")
    return _actors_from_rows(rng, world, rows, ticks)


def _actors_from_rows(rng: np.random.Generator, world: World, rows: list, ticks: int) -> Actors:
    s = np.stack([np.broadcast_to(np.asarray(r[0], float), (ticks,)) for r in rows])
    d = np.stack([np.broadcast_to(np.asarray(r[1], float), (ticks,)) for r in rows])
    yaw_off = np.stack([np.broadcast_to(np.asarray(r[2], float), (ticks,)) for r in rows])
    xy = world.point(s, d)
    yaw = world.pose(s)[1] + yaw_off
    valid = (s > world.s[0] + 5) & (s < world.s[-1] - 5)
    info = [dict(r[4], id=int(1000 + k)) for k, r in enumerate(rows)]
    rgb = rng.integers(30, 230, (len(rows), 3))
    sem = np.array([4 if i["cls"] == "walker" else 6 if "Cone" in str(i["mesh_path"]) or "Warning" in
                    str(i["mesh_path"]) else 1 for i in info])
    rgb[sem == 6] = (255, 110, 20)
    return Actors(xy, yaw, valid, np.array([r[3] for r in rows], float), rgb.astype(np.uint8), sem, info)


@dataclasses.dataclass
class Solids:
    """Oriented boxes in world coordinates: centre xy, centre z, yaw, half extents, camera material id."""

    xy: np.ndarray
    z: np.ndarray
    yaw: np.ndarray
    extent: np.ndarray
    material: np.ndarray

    def take(self, idx: np.ndarray) -> Solids:
        return Solids(self.xy[idx], self.z[idx], self.yaw[idx], self.extent[idx], self.material[idx])

    @staticmethod
    def concat(parts: list[Solids]) -> Solids:
        return Solids(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Solids)))


def build_statics(rng: np.random.Generator, world: World) -> Solids:
    """Buildings, trees, lamps, traffic-light and stop-sign posts beside the road (not in junctions)."""
    rows: list[tuple[float, float, float, float, float, float, float, int]] = []  # s, d, z, yaw, ex, ey, ez, mat
    for side, edge in ((-1, WALK_LO), (1, WALK_HI)):
        s = world.s[0]
        while s < world.s[-1]:
            length, depth, height = rng.uniform(10, 25), rng.uniform(8, 15), rng.uniform(5, 25)
            d = edge + side * (rng.uniform(0.5, 4.0) + depth / 2)
            rows.append((s + length / 2, d, height / 2, 0.0, length / 2 - 0.5, depth / 2, height / 2,
                         M_BUILDING + rng.integers(4)))
            s += length + rng.uniform(0, 4)
        for s in np.arange(world.s[0], world.s[-1], 12.0) + rng.uniform(0, 12):
            d = edge - side * 0.6
            if rng.random() < 0.5:
                rows += [(s, d, 1.5, 0.0, 0.15, 0.15, 1.5, M_VEG), (s, d, 4.5, 0.0, 1.6, 1.6, 1.5, M_VEG)]
            else:
                rows.append((s, d, 3.5, 0.0, 0.12, 0.12, 3.5, M_POLE))
    arr = np.array(rows, float)
    axis = world.xy[::2]
    keep = np.ones(len(arr), bool)
    for j in world.junctions:  # junction corners stay open
        keep &= (arr[:, 0] + arr[:, 4] + 8 < j.s0) | (arr[:, 0] - arr[:, 4] - 8 > j.s1)
    arr = arr[keep]
    sol = Solids(world.point(arr[:, 0], arr[:, 1]), arr[:, 2], world.pose(arr[:, 0])[1] + arr[:, 3], arr[:, 4:7],
                 arr[:, 7].astype(int))
    corners = _corners(sol)[:, ::2, :2]  # (M, 4, 2) footprint corners
    dist = np.sqrt(((corners[:, :, None] - axis[None, None]) ** 2).sum(-1)).min((1, 2))
    keep = dist > np.minimum(np.abs(arr[:, 1]) - arr[:, 5], 9.0) - 0.7  # curves must not push blocks onto the road
    for j in world.junctions:  # nor may the cross roads
        for yaw in j.stub_dirs:
            rel = corners - j.centre
            along = rel @ np.array([np.cos(yaw), np.sin(yaw)])
            across = np.abs(rel @ np.array([-np.sin(yaw), np.cos(yaw)]))
            keep &= ~((along > -12) & (along < 60) & (across < 11)).any(1)
    sol = sol.take(np.flatnonzero(keep))
    return Solids.concat([sol, _junction_furniture(world)])


def _junction_furniture(world: World) -> Solids:
    rows = []
    for j in world.junctions:
        (p,), (yaw,) = world.pose(np.array([j.s0 - 1.0]))
        post = p + (ROAD_HI + 0.8) * np.array([-np.sin(yaw), np.cos(yaw)])
        if j.control == "light":
            rows += [(*post, 2.5, yaw, 0.15, 0.15, 2.5, M_POLE), (*post, 5.3, yaw, 0.3, 0.3, 0.6, M_LIGHT)]
        elif j.control == "stop":
            rows += [(*post, 1.1, yaw, 0.05, 0.05, 1.1, M_POLE), (*post, 2.5, yaw, 0.05, 0.4, 0.4, M_STOP)]
    arr = np.array(rows, float).reshape(-1, 8)
    return Solids(arr[:, :2], arr[:, 2], arr[:, 3], arr[:, 4:7], arr[:, 7].astype(int))


def _corners(sol: Solids) -> np.ndarray:
    """(B, 8, 3) world corners; corner i has signs _SIGNS[i]."""
    local = _SIGNS[None] * sol.extent[:, None, :]
    c, s = np.cos(sol.yaw)[:, None], np.sin(sol.yaw)[:, None]
    return np.stack([sol.xy[:, 0, None] + local[..., 0] * c - local[..., 1] * s,
                     sol.xy[:, 1, None] + local[..., 0] * s + local[..., 1] * c, sol.z[:, None] + local[..., 2]], -1)


# ------------------------------------------------------------------------------------------------ sensors
@dataclasses.dataclass
class Rig:
    """Three cameras in the ego frame plus what never changes within a route: ground lookups and depth."""

    pos: np.ndarray  # (3, 3) camera positions in the ego frame
    yaw: np.ndarray  # (3,) camera yaws in the ego frame
    ground_map: np.ndarray  # (384, 1152, 2) int16: BEV raster (col, row) seen by each pixel; (0,0) sky, (1,0) far
    depth: np.ndarray  # (96, 288) float32 depth of the ground and sky at the stored resolution


@functools.lru_cache(maxsize=4)  # the unperturbed rig is the same for every route
def make_rig(shift: float, rot_deg: float) -> Rig:
    """The camera rig moved by yaw ``rot_deg`` and then by ``shift`` m along ego y (the perturbed twin)."""
    r = np.deg2rad(rot_deg)
    pos = np.array([(np.cos(r) * x - np.sin(r) * y, np.sin(r) * x + np.cos(r) * y + shift, CAM_Z)
                    for x, y, _ in CAMERAS])
    yaws = np.array([r + np.deg2rad(c[2]) for c in CAMERAS])
    a, b = np.meshgrid((np.arange(CAM_W) + 0.5 - CAM_W / 2) / FOCAL, -(np.arange(IMG_H) + 0.5 - IMG_H / 2) / FOCAL)
    maps, depths = [], []
    for p, yaw in zip(pos, yaws, strict=True):
        lam = np.where(b < -1e-6, CAM_Z / np.maximum(-b, 1e-6), 1000.0)  # depth along the optical axis
        gx = p[0] + lam * (np.cos(yaw) - a * np.sin(yaw))
        gy = p[1] + lam * (np.sin(yaw) + a * np.cos(yaw))
        col, row = np.floor((gx - BEV_X0) * BEV_PPM), np.floor((gy - BEV_Y0) * BEV_PPM)
        ok = (lam < 100) & (col >= 0) & (col < BEV_SIZE) & (row >= 0) & (row < BEV_SIZE)
        col, row = np.where(ok, col, np.where(b < -1e-6, 1, 0)), np.where(ok, row, 0)
        maps.append(np.stack([col, row], -1).astype(np.int16))
        depths.append(cv2.resize(lam.astype(np.float32), (CAM_W // 4, IMG_H // 4), interpolation=cv2.INTER_AREA))
    return Rig(pos, yaws, np.concatenate(maps, 1), np.concatenate(depths, 1))


def draw_ground(world: World, pose: np.ndarray, s_ego: float, box: tuple[float, float, float, int],
                palette: dict[str, int]) -> np.ndarray:
    """Rasterise the road around ``pose``: row follows y, column follows x; box = (x0, y0, px per m, size)."""
    x0, y0, ppm, size = box
    img = np.full((size, size), palette["terrain"], np.uint8)
    reach = np.hypot(max(abs(x0), abs(x0 + size / ppm)), max(abs(y0), abs(y0 + size / ppm))) + 15
    sel = slice(*np.searchsorted(world.s, [s_ego - reach, s_ego + reach]))
    s, xy, yaw = world.s[sel], world.xy[sel], world.yaw[sel]
    right = np.stack([-np.sin(yaw), np.cos(yaw)], -1)
    c, sn = np.cos(pose[2]), np.sin(pose[2])
    scale = np.array([[c, -sn], [sn, c]]) * ppm * 4  # world -> raster, fixed point with 2 fractional bits
    shift = (np.array([-x0, -y0]) * ppm - 0.5) * 4 - pose[:2] @ scale

    def px(points: np.ndarray) -> np.ndarray:
        return np.round(points @ scale + shift).astype(np.int32)

    junctions = [j for j in world.junctions if np.hypot(*(j.centre - pose[:2])) < reach + 60]
    stubs = [(j.centre, np.array([np.cos(a), np.sin(a)])) for j in junctions for a in j.stub_dirs]
    for lo, hi, key in ((WALK_LO, WALK_HI, "walk"), (ROAD_LO, ROAD_HI, "road")):
        strip = np.concatenate([xy[::4] + lo * right[::4], (xy[::4] + hi * right[::4])[::-1]])
        cv2.fillPoly(img, [px(strip)], palette[key], cv2.LINE_8, 2)
        half = (hi - lo) / 2
        for centre, u in stubs:  # the cross road: a 60 m straight arm, as wide as the main road
            n = np.array([-u[1], u[0]]) * half
            cv2.fillConvexPoly(img, px(np.stack([centre - n, centre + n, centre + n + 60 * u, centre - n + 60 * u])),
                               palette[key], cv2.LINE_8, 2)
    free = np.ones(len(s), bool)
    for j in junctions:
        free &= (s < j.s0 - 1) | (s > j.s1 + 1)
    for d, key, mask in ((-0.5 * LANE_W, "centre", free), (1.5 * LANE_W, "solid", free),
                         (0.5 * LANE_W, "broken", free & (s % 6.0 < 3.0))):
        idx = np.flatnonzero(mask)
        line = px(xy[idx] + d * right[idx])
        runs = np.split(line, np.flatnonzero(np.diff(idx) > 1) + 1)
        cv2.polylines(img, [r for r in runs if len(r) > 1], False, palette[key], max(1, round(0.15 * ppm)),
                      cv2.LINE_8, 2)
    return img


HDMAP_PALETTE = dict(terrain=0, walk=0, road=1, centre=3, solid=3, broken=4)
CAMERA_PALETTE = dict(terrain=M_TERRAIN, walk=M_WALK, road=M_ROAD, centre=M_YELLOW, solid=M_MARK, broken=M_MARK)


def render(rig: Rig, ground: np.ndarray, corners: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Id image (384, 1152) uint8 and depth (96, 288) float32 of boxes (B, 8, 3, ego frame) over the ground."""
    img = cv2.remap(ground, rig.ground_map, None, cv2.INTER_NEAREST)
    depth = rig.depth.copy()
    for c in range(len(CAMERAS)):
        view, dview = img[:, c * CAM_W:(c + 1) * CAM_W], depth[:, c * CAM_W // 4:(c + 1) * CAM_W // 4]
        rel = corners - rig.pos[c]
        cy, sy = np.cos(rig.yaw[c]), np.sin(rig.yaw[c])
        pc = np.stack([rel[..., 0] * cy + rel[..., 1] * sy, rel[..., 1] * cy - rel[..., 0] * sy, rel[..., 2]], -1)
        a, b = pc[:, _EDGES[:, 0]], pc[:, _EDGES[:, 1]]
        cross = (a[..., 0] - NEAR) * (b[..., 0] - NEAR) < 0  # edges through the near plane are clipped to it
        tt = np.where(cross, (NEAR - a[..., 0]) / np.where(cross, b[..., 0] - a[..., 0], 1.0), 0.0)
        pts = np.concatenate([pc, a + tt[..., None] * (b - a)], 1)
        ok = np.concatenate([pc[..., 0] >= NEAR, cross], 1)
        fwd = np.where(ok, pts[..., 0], 1.0)
        u = np.clip(CAM_W / 2 + FOCAL * pts[..., 1] / fwd, -3e4, 3e4)
        v = np.clip(IMG_H / 2 - FOCAL * pts[..., 2] / fwd, -3e4, 3e4)
        inf = np.where(ok, 0.0, np.inf)
        seen = ((ok.sum(1) >= 3) & ((u - inf).max(1) > 0) & ((u + inf).min(1) < CAM_W)
                & ((v - inf).max(1) > 0) & ((v + inf).min(1) < IMG_H))
        dist = (fwd * ok).sum(1) / np.maximum(ok.sum(1), 1)
        full = np.round(np.stack([u - 0.5, v - 0.5], -1) * 4).astype(np.int32)
        low = np.round(np.stack([u / 4 - 0.5, v / 4 - 0.5], -1) * 4).astype(np.int32)
        for i in np.flatnonzero(seen)[np.argsort(-dist[seen])]:
            keep = np.flatnonzero(ok[i])
            hull = keep[cv2.convexHull(full[i, keep], returnPoints=False).ravel()]
            cv2.fillConvexPoly(view, full[i, hull], int(ids[i]), cv2.LINE_8, 2)
            cv2.fillConvexPoly(dview, low[i, hull], float(dist[i]), cv2.LINE_8, 2)
    return img, depth


@dataclasses.dataclass
class Faces:
    """The five faces a sensor can hit (not the bottom) of B boxes: arrays (B, 5, ...) in world coordinates."""

    centre: np.ndarray  # (B, 5, 3)
    normal: np.ndarray  # (B, 5, 3)
    t1: np.ndarray  # (B, 5, 3) in-face axes; for the four sides t2 is +z
    t2: np.ndarray
    h1: np.ndarray  # (B, 5) half sizes along t1 and t2
    h2: np.ndarray

    @staticmethod
    def of(sol: Solids) -> Faces:
        c, s = np.cos(sol.yaw)[:, None], np.sin(sol.yaw)[:, None]

        def rot(v: np.ndarray) -> np.ndarray:
            z = np.broadcast_to(v[:, 2], c.shape[:1] + (5,))
            return np.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1], z], -1)

        ext = sol.extent[:, None, :]
        hn, h1, h2 = ((ext * np.abs(_FACES[:, k])).sum(-1) for k in range(3))
        normal = rot(_FACES[:, 0])
        base = np.concatenate([sol.xy, sol.z[:, None]], 1)[:, None]
        return Faces(base + normal * hn[..., None], normal, rot(_FACES[:, 1]), rot(_FACES[:, 2]), h1, h2)

    def take(self, idx: np.ndarray) -> Faces:
        return Faces(*(getattr(self, f.name)[idx] for f in dataclasses.fields(Faces)))

    @staticmethod
    def concat(*parts: Faces) -> Faces:
        return Faces(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Faces)))


def lidar_sweep(rng: np.random.Generator, faces: Faces, sensor: np.ndarray, density: float = 3000.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) on the faces that face the sensor, density ~ area·cos/distance², and the box of each.

    ``sensor`` is (3,) or one position per box (B, 1, 3), so several sweeps can be sampled in one call.
    """
    to = sensor - faces.centre
    dist = np.maximum(np.linalg.norm(to, axis=-1), 1.0)
    cos = (faces.normal * to).sum(-1) / dist
    expected = np.where((cos > 0) & (dist < 80), density * 4 * faces.h1 * faces.h2 * cos / dist**2, 0.0)
    n = np.minimum(np.floor(expected + rng.random(expected.shape)), 400).astype(int).ravel()
    face = np.repeat(np.arange(n.size), n)
    uv = rng.uniform(-1.0, 1.0, (face.size, 2))
    # 6 cm inside the box, more than the LAZ rounding (5 cm), so the stored points stay inside their box
    base = (faces.centre - 0.06 * faces.normal).reshape(-1, 3)
    axis1 = (np.maximum(faces.h1 - 0.06, 0.0)[..., None] * faces.t1).reshape(-1, 3)
    axis2 = (np.maximum(faces.h2 - 0.06, 0.0)[..., None] * faces.t2).reshape(-1, 3)
    pts = base[face] + uv[:, :1] * axis1[face] + uv[:, 1:] * axis2[face]
    rel = pts - np.broadcast_to(sensor, faces.centre.shape).reshape(-1, 3)[face]
    h = np.hypot(rel[:, 0], rel[:, 1])
    keep = (rel[:, 2] < 0.18 * h) & (rel[:, 2] > -0.58 * h)  # vertical field of view +10° .. -30°
    return pts[keep], face[keep] // 5


def radar_hits(rng: np.random.Generator, faces: Faces, vel: np.ndarray, sensor: np.ndarray, sensor_yaw: float,
               ego_vel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Detections (N, 4) = world x, y, z, radial velocity where the sensor's plane meets the visible sides."""
    sides = faces.take((slice(None), slice(0, 4)))  # radar beams are horizontal: the top is never hit
    centre, normal, t1, h1, h2 = sides.centre, sides.normal, sides.t1, sides.h1, sides.h2
    to = sensor - centre
    dist = np.maximum(np.linalg.norm(to[..., :2], axis=-1), 1.0)
    hit = ((normal * to).sum(-1) > 0) & (np.abs(sensor[2] - centre[..., 2]) < h2) & (dist < 100)
    n = np.where(hit, np.minimum(np.round(40 * h1 / dist + rng.random(hit.shape) * 0.8), 6), 0).astype(int).ravel()
    face = np.repeat(np.arange(n.size), n)
    u = rng.uniform(-0.95, 0.95, face.size)
    pts = centre.reshape(-1, 3)[face] + (u * h1.ravel()[face])[:, None] * t1.reshape(-1, 3)[face]
    pts[:, 2] = sensor[2]
    rel = pts - sensor
    keep = np.abs(_wrap(np.arctan2(rel[:, 1], rel[:, 0]) - sensor_yaw)) < np.pi / 4
    pts, face, rel = pts[keep], face[keep] // 4, rel[keep]
    unit = rel[:, :2] / np.maximum(np.linalg.norm(rel[:, :2], axis=1, keepdims=True), 1e-6)
    v_rad = ((vel[face] - ego_vel) * unit).sum(1)
    return np.concatenate([pts, v_rad[:, None]], 1), face


def laz_bytes(points: np.ndarray, sweep: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Encode LEAD's LAZ (format 0, scale 0.1, offsets = minimum, uint8 ``time``); also the stored coordinates."""
    offset = points.min(0)
    q = np.round((points - offset) / 0.1).astype(np.int32)
    header = laspy.LasHeader(point_format=0, version="1.2")
    header.add_extra_dim(laspy.ExtraBytesParams(name="time", type=np.uint8))
    header.offsets, header.scales = offset, np.array([0.1, 0.1, 0.1])
    header.creation_date = datetime.date(2024, 1, 1)  # laspy defaults to today: keep files reproducible
    record = np.zeros(len(q), header.point_format.dtype())
    record["X"], record["Y"], record["Z"], record["time"] = q[:, 0], q[:, 1], q[:, 2], sweep
    buf = io.BytesIO()
    las = laspy.LasData(header, points=laspy.PackedPointRecord(record, header.point_format))
    las.write(buf, do_compress=True, laz_backend=laspy.LazBackend.Lazrs)
    return buf.getvalue(), q * 0.1 + offset


def points_in_boxes(points: np.ndarray, centre: np.ndarray, yaw: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """Number of points (N, 3) inside each box (B): |R(yaw)ᵀ(p − centre)| ≤ extent on every axis."""
    key = np.floor(points[:, 0] * 10).astype(np.int16)  # |x| < 3276 m; int16 sorts by radix, 3x faster
    order = np.argsort(key, kind="stable")
    key, px = key[order], points[order]
    counts = np.zeros(len(centre), int)
    for k in range(len(centre)):
        r = np.hypot(extent[k, 0], extent[k, 1])
        lo = np.searchsorted(key, np.floor((centre[k, 0] - r) * 10))
        hi = np.searchsorted(key, np.ceil((centre[k, 0] + r) * 10), "right")
        rel = px[lo:hi] - centre[k]
        c, s = np.cos(yaw[k]), np.sin(yaw[k])
        lx, ly = c * rel[:, 0] + s * rel[:, 1], c * rel[:, 1] - s * rel[:, 0]
        counts[k] = int(((np.abs(lx) <= extent[k, 0]) & (np.abs(ly) <= extent[k, 1])
                         & (np.abs(rel[:, 2]) <= extent[k, 2])).sum())
    return counts


# ------------------------------------------------------------------------------------------------ a route
@dataclasses.dataclass
class Scene:
    """One simulated route: world, per-tick ego state, actors, statics and per-route render state."""

    spec: RouteSpec
    world: World
    ego: dict[str, np.ndarray]  # per tick: s, speed, accel, target_speed, brake, hazard, xy (T,2), yaw
    actors: Actors
    velocity: np.ndarray  # (A, T, 2) actor world velocity
    statics: Solids
    static_faces: Faces
    keypoints: np.ndarray  # (K,) arc length of the route keypoints
    commands: list[int]
    route_end: float
    scenario_window: tuple[float, float]  # arc lengths where the scenario is active
    light_release: dict[int, int]  # junction index -> tick its red light turns green
    perturbation: tuple[float, float]  # (t metres, r degrees)
    rigs: tuple[Rig, Rig]
    rgb_lut: np.ndarray  # (256, 3) uint8 material colours under this weather
    noise: tuple[np.ndarray, np.ndarray]  # uint8 texture added to / subtracted from rgb


def build_scene(spec: RouteSpec, num_frames: int) -> Scene:
    """Simulate route ``spec`` for ``num_frames`` saved frames (5 ticks each)."""
    rng = _rng(spec.seed, spec.index, 1)
    ticks = (num_frames - 1) * SAVE_EVERY + 1
    v_max = rng.uniform(8.0, 12.5)
    reach = v_max * ticks * DT
    world = build_world(rng, spec.scenario, reach + 200)
    stops = [Stop(j.s0 - 3.5, "light" if j.control == "light" else "stop_sign",
                  int(rng.integers(40, 160)) if j.control == "light" else 30, k)
             for k, j in enumerate(world.junctions) if j.control == "stop" or j.red]
    if rng.random() < 0.6:
        s_walk = rng.uniform(25, max(30, 0.7 * reach))
        if world.junction_at(s_walk, 25) is None:
            stops.append(Stop(s_walk, "walker", 0))
    stops.sort(key=lambda st: st.s)
    ego = drive(world, stops, v_max, ticks)
    ego["xy"], ego["yaw"] = world.pose(ego["s"])
    obstacle_s = next((float(s) for s in rng.uniform(50, 130, 8) if world.junction_at(s, 30) is None), 80.0)
    actors = build_actors(rng, world, spec.scenario, stops, ticks, obstacle_s)
    route_end = float(min(ego["s"][-1] + 30.0, world.s[-1] - 1.0))
    marks = sorted({0.0, route_end, *(b for j in world.junctions for b in (j.s0, j.s1) if b < route_end)})
    keypoints = np.concatenate([np.linspace(a, b, int(np.ceil((b - a) / 45.0)) + 1)[:-1]
                                for a, b in zip(marks[:-1], marks[1:], strict=True)] + [[route_end]])
    # a keypoint carries the road option of the stretch it starts, as CARLA's route does
    commands = [next((j.command for j in world.junctions if j.s0 <= (a + b) / 2 <= j.s1), LANEFOLLOW)
                for a, b in zip(keypoints[:-1], keypoints[1:], strict=True)] + [LANEFOLLOW]
    first_j = world.junctions[0] if world.junctions else None
    window = ((first_j.s0 - 40, first_j.s1 + 5) if spec.scenario == "SignalizedJunctionLeftTurn" and first_j
              else (obstacle_s - 60, obstacle_s + 20) if spec.scenario != "noScenarios" else (np.inf, np.inf))
    release = {st.junction: st.release_tick for st in stops if st.kind == "light"}
    shift = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 1.0))
    rot = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 12.5))
    brightness, sky = WEATHERS[spec.weather]
    lut = np.zeros((256, 3))
    lut[: len(BASE_RGB)] = np.array(BASE_RGB) * brightness
    lut[M_SKY] = sky
    noise = tuple(cv2.resize(rng.integers(0, 40, (IMG_H // 2, CAM_W * 3 // 2 + 32, 3), np.uint8),
                             (CAM_W * 3 + 64, IMG_H), interpolation=cv2.INTER_NEAREST) for _ in range(2))
    statics = build_statics(rng, world)
    return Scene(spec, world, ego, actors, actors.velocity(), statics, Faces.of(statics), keypoints, commands,
                 route_end, window, release, (shift, rot), (make_rig(0.0, 0.0), make_rig(shift, rot)),
                 np.clip(lut, 0, 255).astype(np.uint8), noise)


def _actor_solids(sc: Scene, tick: int, idx: np.ndarray) -> Solids:
    a = sc.actors
    return Solids(a.xy[idx, tick], a.extent[idx, 2], a.yaw[idx, tick], a.extent[idx], M_ACTOR + np.arange(len(idx)))


def _lidar(sc: Scene, rng: np.random.Generator, t: int, near: np.ndarray, statics: Faces) -> tuple[np.ndarray, ...]:
    """Points (N, 3) in the LAZ frame of tick t and their sweep age: the last ≤ 5 ticks, compensated."""
    ticks = np.arange(t, max(t - 5, -1), -1)
    parts = [Faces.concat(Faces.of(_actor_solids(sc, k, near[sc.actors.valid[near, k]])), statics) for k in ticks]
    sizes = np.array([len(f.h1) for f in parts])
    faces = Faces.concat(*parts)
    sensors = np.concatenate([sc.ego["xy"][ticks], np.full((len(ticks), 1), LIDAR_Z)], 1)
    pts, box = lidar_sweep(rng, faces, np.repeat(sensors, sizes, axis=0)[:, None])
    age = np.repeat(np.arange(len(ticks)), sizes)[box]
    n = 300 * len(ticks)  # kerbs and the ground RANSAC leaves behind, per sweep
    s = rng.uniform(-30, 60, (2, n)) + np.repeat(sc.ego["s"][ticks], 300)
    d = np.concatenate([rng.choice([ROAD_LO, ROAD_HI], n), rng.uniform(WALK_LO, WALK_HI, n)])
    z = np.concatenate([rng.uniform(0.0, 0.15, n), rng.normal(0.0, 0.03, n)])
    pts = np.concatenate([pts, np.concatenate([sc.world.point(s.ravel(), d), z[:, None]], 1)])
    age = np.concatenate([age, np.tile(np.repeat(np.arange(len(ticks)), 300), 2)])
    pose = np.array([*sc.ego["xy"][t], sc.ego["yaw"][t]])
    return np.concatenate([_to_local(pts[:, :2], pose), pts[:, 2:] - LIDAR_Z / 2], 1), age


def _radar(sc: Scene, rng: np.random.Generator, t: int, faces: Faces, vel: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """Per sensor: detections (N, 4) in the ego frame (x, y, z, v) and the box index of each."""
    pose = np.array([*sc.ego["xy"][t], sc.ego["yaw"][t]])
    c, s = np.cos(pose[2]), np.sin(pose[2])
    ego_vel = sc.ego["speed"][t] * np.array([c, s])
    out = []
    for x, y, yaw in RADARS:
        sensor = np.array([pose[0] + c * x - s * y, pose[1] + s * x + c * y, 0.6])
        hits, src = radar_hits(rng, faces, vel, sensor, pose[2] + np.deg2rad(yaw), ego_vel)
        det = np.concatenate([_to_local(hits[:, :2], pose), 0.3 + rng.normal(0, 0.05, (len(hits), 1)), hits[:, 3:]], 1)
        out.append((det, src))
    return out


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _numpy1_pickle(obj: Any) -> bytes:
    """``obj`` pickled so that numpy 1.x can load it too (LEAD pins numpy 1.26).

    numpy 2 names its array and scalar constructors ``numpy._core.multiarray.*``, a module numpy 1 lacks;
    numpy 1 wrote ``numpy.core.multiarray.*``, which numpy 2 still loads. Protocol 3 writes each global as a
    text GLOBAL opcode (no frames, no length prefixes), so renaming the module in those opcodes, found with
    pickletools, is exact.
    """
    data = pickle.dumps(obj, protocol=3)
    out, last = [], 0
    for op, arg, pos in pickletools.genops(data):
        if op.name == "GLOBAL" and arg.startswith("numpy._core."):
            module, name = arg.split(" ", 1)
            out += [data[last:pos], b"c" + f"numpy.core.{module.removeprefix('numpy._core.')}\n{name}\n".encode()]
            last = pos + 1 + len(module) + 1 + len(name) + 1
    return b"".join([*out, data[last:]])


def _pickle(obj: Any) -> bytes:
    # An xz stream like LEAD's; preset 1 is ~5x faster than the default 6 on these small pickles, ~5% larger.
    return lzma.compress(_numpy1_pickle(obj), preset=1)


def _png(img: np.ndarray) -> bytes:
    # Level 6 like LEAD. A fixed "up" filter and run-length matching cut the time 4x on label maps (libpng's
    # adaptive filter choice dominates otherwise); any PNG decoder reads the result the same.
    params = [cv2.IMWRITE_PNG_COMPRESSION, 6, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
              cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    return cv2.imencode(".png", img, params)[1].tobytes()


def frame_files(sc: Scene, f: int) -> dict[str, bytes]:
    """Encode every file of frame ``f`` (tick 5f): folder name -> file bytes."""
    t, act = f * SAVE_EVERY, sc.actors
    rng = _rng(sc.spec.seed, sc.spec.index, 2, f)
    pose = np.array([*sc.ego["xy"][t], sc.ego["yaw"][t]])
    dist = np.linalg.norm(act.xy[:, t] - pose[:2], axis=1)
    near = np.flatnonzero(act.valid[:, t] & (dist < 110))
    near = near[np.argsort(dist[near], kind="stable")][:200]  # actor k of the frame is drawn as M_ACTOR + k
    static_idx = np.flatnonzero(np.linalg.norm(sc.statics.xy - pose[:2], axis=1) < 140)
    statics = sc.statics.take(static_idx)
    out, visible = _camera_files(sc, rng, t, pose, near, statics)
    shift, rot = sc.perturbation
    pert = np.array([0.0, shift, np.deg2rad(rot)])  # the perturbed frame inside the ego frame
    pert_pose = np.array([*(pose[:2] + shift * np.array([-np.sin(pose[2]), np.cos(pose[2])])), pose[2] + pert[2]])
    for suffix, p in (("", pose), ("_perturbated", pert_pose)):
        out["hdmap" + suffix] = _png(draw_ground(sc.world, p, sc.ego["s"][t], (-64.0, -64.0, 2.0, 256), HDMAP_PALETTE))
    static_faces = sc.static_faces.take(static_idx)
    faces = Faces.concat(Faces.of(_actor_solids(sc, t, near)), static_faces)
    radar = _radar(sc, rng, t, faces, np.concatenate([sc.velocity[near, t], np.zeros((len(static_idx), 2))]))
    for suffix, frame in (("", np.zeros(3)), ("_perturbated", pert)):
        out["radar" + suffix] = _npz({f"radar{k + 1}": np.concatenate([_to_local(det[:, :2], frame), det[:, 2:]], 1)
                                      .astype(np.float16) for k, (det, _) in enumerate(radar)})
    radar_src = np.concatenate([src for _, src in radar])
    num_radar = np.bincount(radar_src[radar_src < len(near)], minlength=len(near))
    points, age = _lidar(sc, rng, t, near, static_faces)
    rad = np.concatenate([det[:, :3] for det, _ in radar])
    rad = np.concatenate([rad] + [rad[np.hypot(rad[:, 0], rad[:, 1]) < 32]] * 5)  # LEAD adds 5 copies within 32 m
    rad[:, 2] += 0.3 - LIDAR_Z / 2  # radar hits are at 0.6 m; the LAZ z is vehicle z − 1.25
    points, age = np.concatenate([points, rad]), np.concatenate([age, np.zeros(len(rad), int)])
    keep = ((points[:, 0] > -32) & (points[:, 0] < 64) & (np.abs(points[:, 1]) < 40) & (points[:, 2] > -4)
            & (points[:, 2] < 10) & ~((np.abs(points[:, 0]) < EGO_EXTENT[0]) & (np.abs(points[:, 1]) < EGO_EXTENT[1])))
    out["lidar"], stored = laz_bytes(points[keep], age[keep])
    box_pos = np.concatenate([_to_local(act.xy[near, t], pose), act.extent[near, 2:] - LIDAR_Z / 2], 1)
    num_points = points_in_boxes(stored, box_pos, act.yaw[near, t] - pose[2], act.extent[near])
    out["bboxes"] = _pickle(_boxes(sc, t, pose, near, num_points, visible, num_radar))
    out["metas"] = _pickle(_meta(sc, t, pose))
    return out


def _camera_files(sc: Scene, rng: np.random.Generator, t: int, pose: np.ndarray, near: np.ndarray,
                  statics: Solids) -> tuple[dict[str, bytes], np.ndarray]:
    """rgb, semantics and depth files of both rigs, and each near actor's visible pixels (normal rig)."""
    solids = Solids.concat([_actor_solids(sc, t, near), statics])
    corners = _corners(solids)
    corners[..., :2] = _to_local(corners[..., :2], pose)
    ground = draw_ground(sc.world, pose, sc.ego["s"][t], (BEV_X0, BEV_Y0, BEV_PPM, BEV_SIZE), CAMERA_PALETTE)
    ground[0, :2] = M_SKY, M_FAR  # the remap tables send sky and far pixels here
    rgb_lut, sem_lut = sc.rgb_lut.copy(), np.array(BASE_SEM + [0] * (256 - len(BASE_SEM)), np.uint8)
    rgb_lut[M_ACTOR:M_ACTOR + len(near)] = sc.actors.rgb[near] * WEATHERS[sc.spec.weather][0]
    sem_lut[M_ACTOR:M_ACTOR + len(near)] = sc.actors.sem[near]
    out: dict[str, bytes] = {}
    visible = np.zeros(len(near), int)
    for suffix, rig in (("", sc.rigs[0]), ("_perturbated", sc.rigs[1])):
        ids, depth = render(rig, ground, corners, solids.material)
        if not suffix:
            histogram = cv2.calcHist([ids], [0], None, [256], [0, 256]).ravel().astype(int)
            visible = histogram[M_ACTOR:M_ACTOR + len(near)]
        rgb = cv2.applyColorMap(ids, rgb_lut.reshape(256, 1, 3))  # a 1 -> 3 channel lookup
        o1, o2 = rng.integers(0, 64, 2)  # texture: add and subtract shifted noise
        rgb = cv2.subtract(cv2.add(rgb, sc.noise[0][:, o1:o1 + rgb.shape[1]]), sc.noise[1][:, o2:o2 + rgb.shape[1]])
        out["rgb" + suffix] = simplejpeg.encode_jpeg(rgb, 30, "RGB", "420")  # 4:2:0 like cv2.imwrite
        out["semantics" + suffix] = _png(cv2.LUT(ids, sem_lut))
        out["depth" + suffix] = _png((np.clip(depth, 0, 50) / 50 * 255).astype(np.uint8))
    return out, visible


def _boxes(sc: Scene, t: int, pose: np.ndarray, near: np.ndarray, num_points: np.ndarray, visible: np.ndarray,
           num_radar: np.ndarray) -> list[dict[str, Any]]:
    """LEAD's box list (§3): ego first, then actors within 96 m and the controls ahead, sorted by distance."""
    act, ticks = sc.actors, len(sc.ego["s"])
    local = _to_local(act.xy[near, t], pose)
    speed = np.linalg.norm(sc.velocity[near, t], axis=1)
    boxes = []
    for k, a in enumerate(near):
        info, ext = act.info[a], act.extent[a]
        position = [float(local[k, 0]), float(local[k, 1]), float(ext[2])]
        distance = float(np.linalg.norm(position))
        if distance > 96:
            continue
        box = {"class": info["cls"], **{k: v for k, v in info.items() if k != "cls"}}
        box.update(extent=[float(e) for e in ext], position=position, yaw=float(_wrap(act.yaw[a, t] - pose[2])),
                   distance=distance, speed=float(speed[k]), num_points=int(num_points[k]),
                   visible_pixels=int(visible[k]), num_radar_points=int(num_radar[k]),
                   transfuser_semantics_id=int(act.sem[a]))
        if box["class"] == "car":
            box["brake"] = 1.0 if speed[k] < 0.1 and info["role_name"] != "parked" else 0.0
        if box["class"] in ("car", "walker"):
            ks = np.arange(t, min(t + 41, ticks))
            ks = ks[act.valid[a, ks]]
            box["future_positions"] = _to_local(act.xy[a, ks], pose).astype(np.float16)
            box["future_yaws"] = _wrap(act.yaw[a, ks] - pose[2]).astype(np.float16)
        boxes.append(box)
    s_ego = sc.ego["s"][t]
    for k, j in enumerate(sc.world.junctions):
        if j.control is None or not 0 <= j.s0 - 1.0 - s_ego <= 64:
            continue
        (p,), (yaw,) = sc.world.pose(np.array([j.s0 - 1.0]))
        (x, y), = _to_local(p[None], pose)
        box = {"class": "traffic_light" if j.control == "light" else "stop_sign", "extent": [1.0, 1.75, 1.0],
               "position": [float(x), float(y), 1.0], "yaw": float(_wrap(yaw - pose[2])),
               "distance": float(np.hypot(x, y)), "id": 5000 + k, "affects_ego": True,
               "transfuser_semantics_id": 3 if j.control == "light" else 0,
               "type_id": "traffic.traffic_light" if j.control == "light" else "traffic.stop"}
        if j.control == "light":
            box["state"] = "Red" if t < sc.light_release.get(k, -1) else "Green"
        boxes.append(box)
    boxes.sort(key=lambda b: b["distance"])
    ego = {"class": "ego_car", "extent": list(EGO_EXTENT), "position": [0.0, 0.0, EGO_EXTENT[2]], "yaw": 0.0,
           "distance": 0.0, "speed": float(sc.ego["speed"][t]), "brake": float(sc.ego["brake"][t]), "id": 1,
           "num_points": -1, "transfuser_semantics_id": 1, "role_name": "hero", "type_id": CAR_TYPES[0]}
    return [ego, *boxes]


def _meta(sc: Scene, t: int, pose: np.ndarray) -> dict[str, Any]:
    """LEAD's meta dict (§2) for tick t."""
    ego, world, spec = sc.ego, sc.world, sc.spec
    s_ego, ticks = float(ego["s"][t]), len(ego["s"])
    fut = slice(t, min(t + 61, ticks))
    future = _to_local(ego["xy"][fut], pose)
    route_s = s_ego + 2.5 + np.arange(50.0)
    c, s = np.cos(pose[2]), np.sin(pose[2])
    hazard, junction = ego["hazard"][t], world.junction_at(s_ego)
    ahead = [j for j in world.junctions if j.s0 > s_ego]
    dist_of = lambda ctl: next((float(j.s0 - 1.0 - s_ego) for j in ahead if ctl in (None, j.control)), None)
    dists = np.linalg.norm(sc.actors.xy[:, t] - pose[:2], axis=1)
    walkers = [dists[k] for k, i in enumerate(sc.actors.info) if i["cls"] == "walker" and sc.actors.valid[k, t]]
    parked = sum(1 for k, i in enumerate(sc.actors.info) if i["lane_type_str"] == "Parking" and dists[k] < 25)
    start, end = sc.scenario_window
    accel = float(ego["accel"][t])
    meta: dict[str, Any] = {
        "pos_global": [float(pose[0]), float(pose[1]), 0.0], "theta": float(pose[2]),
        "ego_matrix": np.array([[c, -s, 0, pose[0]], [s, c, 0, pose[1]], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32),
        "speed": float(ego["speed"][t]), "target_speed": float(ego["target_speed"][t]),
        "brake": bool(ego["brake"][t]), "throttle": float(np.clip(accel / 2.0, 0, 1)) * (not ego["brake"][t]),
        "steer": float(np.clip(np.arctan(2.9 * np.interp(s_ego, world.s, world.kappa)) / 1.22, -1, 1)),
        "route": _to_local(world.pose(route_s[route_s <= sc.route_end])[0], pose).astype(np.float32),
        "future_positions": np.concatenate([future, np.zeros((len(future), 1))], 1).astype(np.float32),
        "future_yaws": _wrap(ego["yaw"][fut] - pose[2]).astype(np.float32),
        "perturbation_translation": sc.perturbation[0], "perturbation_rotation": sc.perturbation[1],
        "dataset_information": {"save_depth_resolution_ratio": 4, "save_depth_bits": 8, "save_grouped_semantic": True,
                                "data_save_freq": SAVE_EVERY, "jpeg_storage_quality": 30, "lidar_accumulation": 5},
        "scenario_obstacles_ids": [i["id"] for i in sc.actors.info if i["role_name"] == "scenario"],
        "vehicle_opened_door": False, "vehicle_door_side": None, "over_head_traffic_light": spec.town == "Town13",
        "europe_traffic_light": False,
        "current_active_scenario_type": spec.scenario if start <= s_ego <= end else None,
        "previous_active_scenario_type": spec.scenario if s_ego > end else None,
        "town": spec.town, "weather_setting": spec.weather, "jpeg_storage_quality": 30,
        "visual_visibility": 1.0 if WEATHERS[spec.weather][0] > 0.7 else 0.6, "lane_type_str": "Driving",
        "ego_lane_id": -1, "changed_route": False, "is_intersection": junction is not None,
        "stop_sign_hazard": hazard == "stop_sign", "walker_hazard": hazard == "walker",
        "light_hazard": hazard == "light", "vehicle_hazard": False,
        "stop_sign_close": bool((dist_of("stop") or np.inf) < 10), "does_emergency_brake_for_pedestrians": False,
        "num_parking_vehicles_in_proximity": parked,
        "slower_bad_visibility": WEATHERS[spec.weather][0] < 0.7, "slower_clutterness": False,
        "slower_occluded_junction": False, "num_dangerous_adversarial": 0, "num_safe_adversarial": 0,
        "num_ignored_adversarial": 0, "rear_adversarial_id": -1,
        "dist_to_junction": dist_of(None), "dist_to_traffic_light": dist_of("light"),
        "dist_to_stop_sign": dist_of("stop"), "dist_to_pedestrian": float(min(walkers)) if walkers else None,
        "accel_x": accel, "step": t,
    }
    for key in ("construction_obstacle_two_ways_stuck", "accident_two_ways_stuck", "parked_obstacle_two_ways_stuck",
                "vehicle_opens_door_two_ways_stuck", "rear_danger_8", "rear_danger_16", "brake_cutin",
                "emergency_brake_for_special_vehicle"):
        meta[key] = False
    keypoints = [[float(x), float(y), 0.0] for x, y in world.pose(sc.keypoints)[0]]
    for radius in TP_RADII:  # the first kept keypoint is the last one within radius; two always remain
        first = max(0, min(int(np.searchsorted(sc.keypoints, s_ego + radius, "right")) - 1, len(keypoints) - 2))
        meta[f"next_target_points_{radius}"] = keypoints[first:]
        meta[f"next_commands_{radius}"] = list(sc.commands[first:])
    return meta


def _results(sc: Scene) -> dict[str, Any]:
    spec = sc.spec
    status, score, counts = {**PASS_OUTCOMES, **FAIL_OUTCOMES}[spec.outcome]
    x, y = (float(v) for v in sc.ego["xy"][len(sc.ego["s"]) // 2])
    infractions = {k: [f"{k} #{n} at (x={x + n:.3f}, y={y:.3f}, z=0.000)" for n in range(counts.get(k, 0))]
                   for k in INFRACTION_KEYS}
    finished = status in ("Completed", "Perfect")
    return {"index": spec.index, "route_id": f"RouteScenario_{spec.index}", "status": status,
            "num_infractions": sum(counts.values()), "infractions": infractions,
            "scores": {"score_route": 100.0 if finished else min(100.0, score * 1.4), "score_penalty": score / 100
                       if finished else 0.7, "score_composed": score},
            "meta": {"route_length": round(sc.route_end, 3), "duration_game": len(sc.ego["s"]) * DT,
                     "duration_system": round(len(sc.ego["s"]) * DT * 1.7, 3)},
            "town": spec.town, "weather": spec.weather, "scenario": spec.scenario}


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
    results = json.dumps(_results(scene), indent=2).encode()
    (tmp / "results.json").write_bytes(results)
    if route_dir.exists():
        shutil.rmtree(route_dir)
    os.replace(tmp, route_dir)
    return RouteStats(spec, num_frames, total + len(results))


def _existing(root: Path, spec: RouteSpec) -> RouteStats:
    route = root / spec.relpath
    files = [p for p in route.rglob("*") if p.is_file()]
    return RouteStats(spec, len(list((route / "metas").glob("*.pkl"))), sum(p.stat().st_size for p in files), True)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


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
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    def run() -> int:
        summary = generate_root(args.root, args.routes, args.frames, args.seed, args.workers, not args.quiet)
        rate = summary.frames / max(summary.seconds, 1e-9)
        print(f"wrote {summary.routes_written} routes ({summary.routes_skipped} already complete), {summary.frames} "
              f"frames, {summary.bytes / 1e6:.1f} MB in {summary.seconds:.1f} s ({rate:.1f} frames/s, "
              f"{summary.bytes / max(summary.frames, 1) / 1e3:.0f} KB/frame); {len(summary.passing)}/"
              f"{len(summary.routes)} routes pass LEAD's route filter")
        return 0

    return run_guarded(run, args.verbose, prog)


if __name__ == "__main__":
    raise SystemExit(main())
