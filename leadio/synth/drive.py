"""The expert and the traffic: the ego's speed profile and stops (lights, stop signs, walkers) at 20 Hz, and
the other actors (cars, parked cars, walkers, scenario obstacles) as per-tick boxes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from leadio.synth.world import CAR_EXTENTS, CAR_TYPES, DT, LANE_W, ROAD_HI, S_BACK, WALK_HI, WALK_LO, World


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
