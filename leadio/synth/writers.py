"""The per-modality files of one frame (JPEG, PNG, LAZ, npz, numpy-1-readable xz pickles) and the route's
results.json; bytes only, no file I/O.
"""

from __future__ import annotations

import io
import lzma
import pickle
import pickletools
from typing import Any

import cv2
import numpy as np
import simplejpeg

from leadio.synth.render import CAMERA_PALETTE, HDMAP_PALETTE, Faces, draw_ground, laz_bytes, points_in_boxes, render
from leadio.synth.scene import Scene, actor_solids, lidar_points, radar_detections
from leadio.synth.world import (
    BASE_SEM,
    BEV_PPM,
    BEV_SIZE,
    BEV_X0,
    BEV_Y0,
    CAR_TYPES,
    DT,
    EGO_EXTENT,
    FAIL_OUTCOMES,
    INFRACTION_KEYS,
    LIDAR_Z,
    M_ACTOR,
    M_FAR,
    M_SKY,
    PASS_OUTCOMES,
    SAVE_EVERY,
    TP_RADII,
    WEATHERS,
    Solids,
    box_corners,
    seeded_rng,
    to_local,
    wrap_angle,
)


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
    rng = seeded_rng(sc.spec.seed, sc.spec.index, 2, f)
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
    faces = Faces.concat(Faces.of(actor_solids(sc, t, near)), static_faces)
    radar = radar_detections(sc, rng, t, faces, np.concatenate([sc.velocity[near, t], np.zeros((len(static_idx), 2))]))
    for suffix, frame in (("", np.zeros(3)), ("_perturbated", pert)):
        out["radar" + suffix] = _npz({f"radar{k + 1}": np.concatenate([to_local(det[:, :2], frame), det[:, 2:]], 1)
                                      .astype(np.float16) for k, (det, _) in enumerate(radar)})
    radar_src = np.concatenate([src for _, src in radar])
    num_radar = np.bincount(radar_src[radar_src < len(near)], minlength=len(near))
    points, age = lidar_points(sc, rng, t, near, static_faces)
    rad = np.concatenate([det[:, :3] for det, _ in radar])
    rad = np.concatenate([rad] + [rad[np.hypot(rad[:, 0], rad[:, 1]) < 32]] * 5)  # LEAD adds 5 copies within 32 m
    rad[:, 2] += 0.3 - LIDAR_Z / 2  # radar hits are at 0.6 m; the LAZ z is vehicle z − 1.25
    points, age = np.concatenate([points, rad]), np.concatenate([age, np.zeros(len(rad), int)])
    keep = ((points[:, 0] > -32) & (points[:, 0] < 64) & (np.abs(points[:, 1]) < 40) & (points[:, 2] > -4)
            & (points[:, 2] < 10) & ~((np.abs(points[:, 0]) < EGO_EXTENT[0]) & (np.abs(points[:, 1]) < EGO_EXTENT[1])))
    out["lidar"], stored = laz_bytes(points[keep], age[keep])
    box_pos = np.concatenate([to_local(act.xy[near, t], pose), act.extent[near, 2:] - LIDAR_Z / 2], 1)
    num_points = points_in_boxes(stored, box_pos, act.yaw[near, t] - pose[2], act.extent[near])
    out["bboxes"] = _pickle(_boxes(sc, t, pose, near, num_points, visible, num_radar))
    out["metas"] = _pickle(_meta(sc, t, pose))
    return out


def _camera_files(sc: Scene, rng: np.random.Generator, t: int, pose: np.ndarray, near: np.ndarray,
                  statics: Solids) -> tuple[dict[str, bytes], np.ndarray]:
    """rgb, semantics and depth files of both rigs, and each near actor's visible pixels (normal rig)."""
    solids = Solids.concat([actor_solids(sc, t, near), statics])
    corners = box_corners(solids)
    corners[..., :2] = to_local(corners[..., :2], pose)
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
    local = to_local(act.xy[near, t], pose)
    speed = np.linalg.norm(sc.velocity[near, t], axis=1)
    boxes = []
    for k, a in enumerate(near):
        info, ext = act.info[a], act.extent[a]
        position = [float(local[k, 0]), float(local[k, 1]), float(ext[2])]
        distance = float(np.linalg.norm(position))
        if distance > 96:
            continue
        box = {"class": info["cls"], **{k: v for k, v in info.items() if k != "cls"}}
        box.update(extent=[float(e) for e in ext], position=position, yaw=float(wrap_angle(act.yaw[a, t] - pose[2])),
                   distance=distance, speed=float(speed[k]), num_points=int(num_points[k]),
                   visible_pixels=int(visible[k]), num_radar_points=int(num_radar[k]),
                   transfuser_semantics_id=int(act.sem[a]))
        if box["class"] == "car":
            box["brake"] = 1.0 if speed[k] < 0.1 and info["role_name"] != "parked" else 0.0
        if box["class"] in ("car", "walker"):
            ks = np.arange(t, min(t + 41, ticks))
            ks = ks[act.valid[a, ks]]
            box["future_positions"] = to_local(act.xy[a, ks], pose).astype(np.float16)
            box["future_yaws"] = wrap_angle(act.yaw[a, ks] - pose[2]).astype(np.float16)
        boxes.append(box)
    s_ego = sc.ego["s"][t]
    for k, j in enumerate(sc.world.junctions):
        if j.control is None or not 0 <= j.s0 - 1.0 - s_ego <= 64:
            continue
        (p,), (yaw,) = sc.world.pose(np.array([j.s0 - 1.0]))
        (x, y), = to_local(p[None], pose)
        box = {"class": "traffic_light" if j.control == "light" else "stop_sign", "extent": [1.0, 1.75, 1.0],
               "position": [float(x), float(y), 1.0], "yaw": float(wrap_angle(yaw - pose[2])),
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
    future = to_local(ego["xy"][fut], pose)
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
        "route": to_local(world.pose(route_s[route_s <= sc.route_end])[0], pose).astype(np.float32),
        "future_positions": np.concatenate([future, np.zeros((len(future), 1))], 1).astype(np.float32),
        "future_yaws": wrap_angle(ego["yaw"][fut] - pose[2]).astype(np.float32),
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


def route_results(sc: Scene) -> dict[str, Any]:
    """The route's results.json (LEAD's leaderboard record) for the outcome in its spec."""
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
