"""One simulated route (`Scene`, built by `build_scene`) and the per-tick LiDAR and radar it sees.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from leadio.synth.drive import Actors, Stop, build_actors, drive
from leadio.synth.records import RouteSpec
from leadio.synth.render import Faces, Rig, lidar_sweep, make_rig, radar_hits
from leadio.synth.world import (
    BASE_RGB,
    CAM_W,
    DT,
    IMG_H,
    LANEFOLLOW,
    LIDAR_Z,
    M_ACTOR,
    M_SKY,
    RADARS,
    ROAD_HI,
    ROAD_LO,
    SAVE_EVERY,
    WALK_HI,
    WALK_LO,
    WEATHERS,
    Solids,
    World,
    build_statics,
    build_world,
    seeded_rng,
    to_local,
)


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
    rng = seeded_rng(spec.seed, spec.index, 1)
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


def actor_solids(sc: Scene, tick: int, idx: np.ndarray) -> Solids:
    """Actors ``idx`` at ``tick`` as solids; the k-th gets camera material M_ACTOR + k."""
    a = sc.actors
    return Solids(a.xy[idx, tick], a.extent[idx, 2], a.yaw[idx, tick], a.extent[idx], M_ACTOR + np.arange(len(idx)))


def lidar_points(sc: Scene, rng: np.random.Generator, t: int, near: np.ndarray,
                 statics: Faces) -> tuple[np.ndarray, ...]:
    """Points (N, 3) in the LAZ frame of tick t and their sweep age: the last ≤ 5 ticks, compensated."""
    ticks = np.arange(t, max(t - 5, -1), -1)
    parts = [Faces.concat(Faces.of(actor_solids(sc, k, near[sc.actors.valid[near, k]])), statics) for k in ticks]
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
    return np.concatenate([to_local(pts[:, :2], pose), pts[:, 2:] - LIDAR_Z / 2], 1), age


def radar_detections(sc: Scene, rng: np.random.Generator, t: int, faces: Faces,
                     vel: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """Per sensor: detections (N, 4) in the ego frame (x, y, z, v) and the box index of each."""
    pose = np.array([*sc.ego["xy"][t], sc.ego["yaw"][t]])
    c, s = np.cos(pose[2]), np.sin(pose[2])
    ego_vel = sc.ego["speed"][t] * np.array([c, s])
    out = []
    for x, y, yaw in RADARS:
        sensor = np.array([pose[0] + c * x - s * y, pose[1] + s * x + c * y, 0.6])
        hits, src = radar_hits(rng, faces, vel, sensor, pose[2] + np.deg2rad(yaw), ego_vel)
        det = np.concatenate([to_local(hits[:, :2], pose), 0.3 + rng.normal(0, 0.05, (len(hits), 1)), hits[:, 3:]], 1)
        out.append((det, src))
    return out
