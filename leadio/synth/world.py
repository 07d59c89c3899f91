"""The static world of a synthetic route: the constants of the road and rig, the centre-line with its junctions,
and the static boxes (buildings, trees, lamps, junction furniture).

Everything here is a pure function of a seeded generator; `leadio.synth.drive` moves things through it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

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


def seeded_rng(*key: int) -> np.random.Generator:
    """The generator of one stream, keyed by (seed, route index, stream, ...): same key, same numbers."""
    return np.random.default_rng([int(k) for k in key])


def wrap_angle(a: np.ndarray | float) -> np.ndarray:
    """Angles (rad) wrapped into [−π, π)."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def to_local(xy: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """World (...,2) -> the frame of pose (x, y, yaw): R(yaw)ᵀ(p − o)."""
    c, s = np.cos(pose[2]), np.sin(pose[2])
    dx, dy = xy[..., 0] - pose[0], xy[..., 1] - pose[1]
    return np.stack([c * dx + s * dy, -s * dx + c * dy], -1)


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
    corners = box_corners(sol)[:, ::2, :2]  # (M, 4, 2) footprint corners
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


def box_corners(sol: Solids) -> np.ndarray:
    """(B, 8, 3) world corners; corner i has signs _SIGNS[i]."""
    local = _SIGNS[None] * sol.extent[:, None, :]
    c, s = np.cos(sol.yaw)[:, None], np.sin(sol.yaw)[:, None]
    return np.stack([sol.xy[:, 0, None] + local[..., 0] * c - local[..., 1] * s,
                     sol.xy[:, 1, None] + local[..., 0] * s + local[..., 1] * c, sol.z[:, None] + local[..., 2]], -1)
