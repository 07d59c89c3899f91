"""The sensors' geometry: camera rigs, the ground raster, box silhouettes into rgb/semantics/depth, LiDAR and
radar hits on box faces, and the LAZ encoding.

No occlusion for LiDAR and radar and flat-coloured boxes: cheap, and enough for labels that agree.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import io

import cv2
import laspy
import numpy as np

from leadio.synth.world import (
    BEV_PPM,
    BEV_SIZE,
    BEV_X0,
    BEV_Y0,
    CAM_W,
    CAM_Z,
    CAMERAS,
    FOCAL,
    IMG_H,
    LANE_W,
    M_MARK,
    M_ROAD,
    M_TERRAIN,
    M_WALK,
    M_YELLOW,
    NEAR,
    ROAD_HI,
    ROAD_LO,
    WALK_HI,
    WALK_LO,
    Solids,
    World,
    wrap_angle,
)

# The 12 edges of a box as pairs of `box_corners` indices: corners i and j share an edge when their sign
# patterns differ in one axis (one bit of the index).
_EDGES = np.array([(i, i ^ b) for i in range(8) for b in (1, 2, 4) if i < i ^ b])
_FACES = np.array([  # per visible face: normal, tangent 1, tangent 2 (box-local axes); the bottom is never hit
    [[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[-1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 1, 0], [1, 0, 0], [0, 0, 1]],
    [[0, -1, 0], [1, 0, 0], [0, 0, 1]], [[0, 0, 1], [1, 0, 0], [0, 1, 0]]], float)


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
    keep = np.abs(wrap_angle(np.arctan2(rel[:, 1], rel[:, 0]) - sensor_yaw)) < np.pi / 4
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
