"""leadio.lead: every key of the LEAD-format batch against a computation from the raw files written here.

The expectations follow docs/format.md §4 and LEAD's loader (kesai-labs/lead 4489176) with numpy/OpenCV in the
test: never leadio's own target code. Routes are hand-written (tests/lead_fixtures.py) and synthetic
(leadio.synth). Where LEAD's numpy 1.26 promoted float32 scalars to float64, the test casts explicitly.
"""

from __future__ import annotations

import lzma
import math
import pickle

import cv2
import laspy
import numpy as np
import pytest
import torch

from leadio.decode.cpu import decode_member
from leadio.format.config import DATASET_CONFIGS
from leadio.lead import LeadBatches, centernet_targets, radar_detections, to_lead_batch
from leadio.preprocess import preprocess_frame
from leadio.schema import TARGET_FIELDS, member_layout, member_name
from tests.lead_fixtures import PASSED, frame_content, write_frame

CFG = DATASET_CONFIGS["carla_leaderboard2"]
N_FRAMES = 18  # frames 0..9 have 8 future waypoints (41 ticks), 10..17 do not
SCENARIOS = ("Accident", "AccidentTwoWays", "BlockedIntersection", "ConstructionObstacle",
             "ConstructionObstacleTwoWays", "ControlLoss", "CrossJunctionDefectTrafficLight", "CrossingBicycleFlow",
             "DynamicObjectCrossing", "EnterActorFlow", "EnterActorFlowV2", "HardBreakRoute", "HazardAtSideLane",
             "HazardAtSideLaneTwoWays", "HighwayCutIn", "HighwayExit", "InterurbanActorFlow",
             "InterurbanAdvancedActorFlow", "InvadingTurn", "MergerIntoSlowTraffic", "MergerIntoSlowTrafficV2",
             "NonSignalizedJunctionLeftTurn", "NonSignalizedJunctionLeftTurnEnterFlow",
             "NonSignalizedJunctionRightTurn", "noScenarios", "OppositeVehicleRunningRedLight",
             "OppositeVehicleTakingPriority", "ParkedObstacle", "ParkedObstacleTwoWays", "ParkingCrossingPedestrian",
             "ParkingCutIn", "ParkingExit", "PedestrianCrossing", "PriorityAtJunction", "RedLightWithoutLeadVehicle",
             "SequentialLaneChange", "SignalizedJunctionLeftTurn", "SignalizedJunctionLeftTurnEnterFlow",
             "SignalizedJunctionRightTurn", "StaticCutIn", "T_Junction", "VanillaNonSignalizedTurn",
             "VanillaNonSignalizedTurnEncounterStopsign", "VanillaSignalizedTurnEncounterGreenLight",
             "VanillaSignalizedTurnEncounterRedLight", "VehicleOpensDoorTwoWays", "VehicleTurningRoute",
             "VehicleTurningRoutePedestrian", "YieldToEmergencyVehicle", "NA")  # LEAD's SCENARIO_TYPES, copied

#: The key table: name -> (dtype, shape per sample) of LEAD's collated batch.
KEY_TABLE = {
    "rgb": (torch.uint8, (3, 384, 1152)), "rasterized_lidar": (torch.float32, (1, 320, 384)),
    "semantic": (torch.uint8, (384, 1152)), "depth": (torch.float32, (384, 1152)),
    "hdmap": (torch.uint8, (320, 384)), "bev_semantic": (torch.uint8, (320, 384)),
    "center_net_bounding_boxes": (torch.float32, (90, 9)), "center_net_heatmap": (torch.float32, (8, 80, 96)),
    "center_net_wh": (torch.float32, (2, 80, 96)), "center_net_offset": (torch.float32, (2, 80, 96)),
    "center_net_yaw_class": (torch.int32, (80, 96)), "center_net_yaw_res": (torch.float32, (1, 80, 96)),
    "center_net_velocity": (torch.float32, (1, 80, 96)), "center_net_brake": (torch.int32, (80, 96)),
    "center_net_pixel_weight": (torch.float32, (2, 80, 96)), "center_net_avg_factor": (torch.int64, ()),
    "radar": (torch.float32, (300, 5)), **{f"radar{i}": (torch.float32, (75, 5)) for i in range(1, 5)},
    "radar_detections": (torch.float32, (20, 4)),
    "target_point": (torch.float64, (2,)), "target_point_next": (torch.float64, (2,)),
    "target_point_previous": (torch.float64, (2,)), "command": (torch.float64, (6,)),
    "next_command": (torch.float64, (6,)), "previous_command": (torch.float64, (6,)),
    "speed": (torch.float64, ()), "target_speed": (torch.float64, ()), "scenario_type_id": (torch.int64, ()),
    "perturbate_sensor": (torch.bool, ()), "perturbation_translation": (torch.float64, ()),
    "perturbation_rotation": (torch.float64, ()), "source_dataset": (torch.int64, ()),
    "loading_time": (torch.float64, ()), "loading_meta_time": (torch.float64, ()),
    "loading_sensor_time": (torch.float64, ()),
}  # fmt: skip
PLANNING_TABLE = {"future_waypoints": (torch.float64, (8, 2)), "future_yaws": (torch.float64, (8,)),
                  "route": (torch.float64, (10, 2)), "route_labels_curvature": (torch.float64, ())}  # fmt: skip


# ------------------------------------------------------------------------------------------------ helpers
def compact_batch(samples: list[tuple]) -> dict[str, torch.Tensor]:
    """(route_dir, frame, view) list -> leadio's compact batch (the loader's layout), via the pipeline."""
    layout, per = member_layout(CFG), []
    for route, frame, view in samples:
        members = preprocess_frame(route, frame, CFG)
        per.append({k: decode_member(m, members[member_name(m, view)]) for k, m in layout.items()})
    batch = {"rgb": torch.from_numpy(np.stack([p["rgb"] for p in per])).permute(0, 3, 1, 2)}
    for key, name in (("semantic", "semantic"), ("depth", "depth"), ("lidar", "lidar"), ("bev_semantic", "bev"),
                      ("radar", "radar"), ("boxes", "boxes")):
        batch[key] = torch.from_numpy(np.stack([p[name] for p in per]))
    records, col = np.stack([p["targets"] for p in per]), 0
    for name, shape in TARGET_FIELDS:
        size = int(np.prod(shape))
        batch[name] = torch.from_numpy(records[:, col : col + size].reshape(len(per), *shape).copy())
        col += size
    batch["row"] = torch.arange(len(per))
    batch["view"] = torch.tensor([v == "perturbated" for _, _, v in samples], dtype=torch.uint8)
    return batch


def lzma_pickle(path):
    with lzma.open(path, "rb") as f:
        return pickle.load(f)  # noqa: S301 - files this test wrote itself


def p_points(xy, t, r_deg):
    """§0: p' = R(r)ᵀ(p − (0, t))."""
    a = np.deg2rad(r_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (rot.T @ (np.asarray(xy, np.float64) - np.array([0.0, t])).T).T


def normalize(a):
    a = a % (2 * np.pi)
    return a - 2 * np.pi if a > np.pi else a


def gaussian_radius(h, w, mo=0.1):
    b1, c1 = h + w, w * h * (1 - mo) / (1 + mo)
    b2, c2 = 2 * (h + w), (1 - mo) * w * h
    a3, b3, c3 = 4 * mo, -2 * mo * (h + w), (mo - 1) * w * h
    return min((b1 - math.sqrt(b1**2 - 4 * c1)) / 2, (b2 - math.sqrt(b2**2 - 16 * c2)) / 8,
               (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / (2 * a3))  # fmt: skip


def expected_centernet(rows: np.ndarray) -> dict[str, np.ndarray]:
    """§4.6 / LEAD's get_centernet_labels + gen_gaussian_target, one row at a time, all 90 rows (padding too)."""
    h, w = 80, 96
    out = {"heatmap": np.zeros((8, h, w), np.float32), "wh": np.zeros((2, h, w), np.float32),
           "offset": np.zeros((2, h, w), np.float32), "yaw_class": np.zeros((h, w), np.int32),
           "yaw_res": np.zeros((1, h, w), np.float32), "velocity": np.zeros((1, h, w), np.float32),
           "brake": np.zeros((h, w), np.int32), "pixel_weight": np.zeros((2, h, w), np.float32)}  # fmt: skip
    for row in np.asarray(rows, np.float32):
        cx, cy = row[0] / np.float32(4), row[1] / np.float32(4)
        ix, iy = int(cx), int(cy)
        if not (0 <= ix < w and 0 <= iy < h):
            continue
        ex, ey = float(row[2]) / 4, float(row[3]) / 4
        r = max(2, int(gaussian_radius(ey, ex)))
        sigma = (2 * r + 1) / 6
        x = np.arange(-r, r + 1, dtype=np.float32).reshape(1, -1)
        g = np.exp(-(x * x + x.T * x.T) / np.float32(2 * sigma * sigma))
        g[g < np.finfo(np.float32).eps * g.max()] = 0
        left, right, top, bottom = min(ix, r), min(w - ix, r + 1), min(iy, r), min(h - iy, r + 1)
        sub = out["heatmap"][int(row[7]), iy - top : iy + bottom, ix - left : ix + right]
        np.maximum(sub, g[r - top : r + bottom, r - left : r + right], out=sub)
        angle = float(row[4]) % (2 * np.pi)
        step = 2 * np.pi / 12.0
        shifted = (angle + step / 2) % (2 * np.pi)
        k = shifted // step
        out["wh"][:, iy, ix] = ex, ey
        out["offset"][:, iy, ix] = float(cx) - ix, float(cy) - iy
        out["yaw_class"][iy, ix], out["yaw_res"][0, iy, ix] = int(k), shifted - (k * step + step / 2)
        out["velocity"][0, iy, ix], out["brake"][iy, ix] = row[5], int(round(float(row[6])))
        out["pixel_weight"][:, iy, ix] = 1
    out["avg_factor"] = np.int64(max(1, int((out["heatmap"] == 1).sum())))
    return out


def expected_radar_detections(rows: np.ndarray) -> np.ndarray:
    """LEAD's parse_radar_detection_labels on (90, 9) rows."""
    rows = np.asarray(rows, np.float32)
    x, y = rows[:, 0] / np.float32(4) + np.float64(-32), rows[:, 1] / np.float32(4) + np.float64(-40)
    x, y = x.astype(np.float32), y.astype(np.float32)
    keep = ((x != 0) | (y != 0)) & (rows[:, 8] > 0)
    prio = {4: 0, 0: 1, 1: 2, 5: 3, 6: 4}
    idx = np.flatnonzero(keep)
    keys = (-rows[idx, 8], [prio.get(int(c), 5) for c in rows[idx, 7]], -rows[idx, 5])
    idx = idx[np.lexsort(keys)][:20]
    out = np.zeros((20, 4), np.float32)
    out[: len(idx)] = np.stack([x[idx], y[idx], rows[idx, 5], np.ones(len(idx))], 1)
    return out


def check_centernet_and_radar_labels(lead: dict, boxes: torch.Tensor) -> None:
    for i in range(len(boxes)):
        exp = expected_centernet(boxes[i].numpy())
        for key, value in exp.items():
            got = lead[f"center_net_{key}"][i].numpy()
            if key in ("heatmap", "yaw_class", "brake", "pixel_weight", "avg_factor"):
                np.testing.assert_array_equal(got, value, err_msg=key)
            else:
                np.testing.assert_allclose(got, value, rtol=1e-5, atol=1e-5, err_msg=key)
        np.testing.assert_allclose(lead["radar_detections"][i].numpy(), expected_radar_detections(boxes[i].numpy()),
                                   rtol=1e-5, atol=1e-5)  # fmt: skip


def check_table(lead: dict, n: int, planning: bool) -> None:
    table = {**KEY_TABLE, "brake": (torch.bool if planning else torch.float64, ())}
    table.update(PLANNING_TABLE if planning else {})
    assert set(lead) == set(table)
    for key, (dtype, shape) in table.items():
        assert lead[key].dtype == dtype and tuple(lead[key].shape) == (n, *shape), key
        # as the reference's collate stacks them; rgb stays the loader's channels-last view (same values, no copy)
        layout = torch.channels_last if key == "rgb" else torch.contiguous_format
        assert lead[key].is_contiguous(memory_format=layout), key


# ------------------------------------------------------------------------------------------------ raw routes
@pytest.fixture(scope="module")
def hand_route(tmp_path_factory):
    """A route written by hand: 18 frames of every modality, both views, one visible car per frame."""
    root = tmp_path_factory.mktemp("lead") / "data" / "carla_leaderboard2"
    route = root / "data" / "noScenarios" / "Town12_Rep0_1_route0_01_01_00_00_00"
    for f in range(N_FRAMES):
        content = frame_content(100 + f)
        content["boxes"][1]["position"] = [12.0 - 0.5 * f, -3.5 + 0.2 * f, 0.0]
        content["boxes"][1]["yaw"] = 0.1 - 0.4 * f  # passes 0 and -2π·k: yaw classes near 360° too
        write_frame(route, f, N_FRAMES, content)
        write_frame(route, f, N_FRAMES, content, view_suffix="_perturbated")
    (route / "results.json").write_text(__import__("json").dumps(PASSED))
    return root, route


def _car_bev_and_row(out: dict, bev: np.ndarray, car: dict, t: float, r: float) -> None:
    """§4.5 occupancy and §4.6 row of one visible car: BEV class 1 + 3, box class VEHICLE."""
    (x, y), yaw = p_points(car["position"][:2], t, r), normalize(car["yaw"] - np.deg2rad(r))
    canvas = np.zeros((1024, 1024), np.uint8)
    corners = cv2.boxPoints((((x + 128) * 4, (y + 128) * 4), (car["extent"][0] * 8, car["extent"][1] * 8),
                             np.rad2deg(yaw))).astype(np.int32)  # fmt: skip
    cv2.fillPoly(canvas, [corners], 1)
    occupancy = canvas[352:672, 384:768]
    bev[occupancy != 0] = occupancy[occupancy != 0] + 3
    out["bev_semantic"] = out["hdmap"] = bev
    boxes = np.zeros((90, 9), np.float32)
    boxes[0] = [(x + 32) * 4, (y + 40) * 4, car["extent"][0] * 4, car["extent"][1] * 4, yaw, car["speed"],
                car["brake"], 0, car["num_radar_points"]]  # fmt: skip
    out["center_net_bounding_boxes"] = boxes


def expected_from_raw(route, frame: int, view: str, planning: bool, hand: bool = True) -> dict[str, np.ndarray]:
    """The LEAD-format sample from the raw files (§4), by the spec, in numpy/OpenCV (``hand``: the BEV and
    box rows of the hand-written frames' single car, and their straight-ahead keypoints)."""
    sfx = "_perturbated" if view == "perturbated" else ""
    stem = f"{frame:04d}"
    meta = lzma_pickle(route / "metas" / f"{stem}.pkl")
    t, r = (meta["perturbation_translation"], meta["perturbation_rotation"]) if sfx else (0.0, 0.0)
    out = {}
    bgr = cv2.imdecode(np.fromfile(route / f"rgb{sfx}" / f"{stem}.jpg", np.uint8), cv2.IMREAD_UNCHANGED)
    out["rgb"] = np.transpose(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (2, 0, 1))
    las = laspy.read(route / "lidar" / f"{stem}.laz")
    pts = np.asarray(las.xyz)[np.asarray(las["time"]) < 10]
    xy = p_points(pts[:, :2], t, r)
    keep = (pts[:, 2] >= -4) & (pts[:, 2] <= 10)
    hist = np.histogramdd(xy[keep], bins=(np.linspace(-32, 64, 385), np.linspace(-40, 40, 321)))[0]
    out["rasterized_lidar"] = (np.minimum(hist, 5) / 5).T.astype(np.float32)[None]
    out["semantic"] = cv2.imread(str(route / f"semantics{sfx}" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
    depth = cv2.imread(str(route / f"depth{sfx}" / f"{stem}.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255 * 50
    out["depth"] = cv2.resize(depth, (depth.shape[1] * 4, depth.shape[0] * 4), interpolation=cv2.INTER_LINEAR)
    hdmap = cv2.imread(str(route / f"hdmap{sfx}" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
    bev = np.array([0, 1, 0, 2, 2, 3, 0, 0, 0], np.uint8)[hdmap][48:208, 64:256].repeat(2, 0).repeat(2, 1)
    car = lzma_pickle(route / "bboxes" / f"{stem}.pkl")[1] if hand else None
    if car is not None:
        _car_bev_and_row(out, bev, car, t, r)
    npz = np.load(route / f"radar{sfx}" / f"{stem}.npz")
    per = []
    for i in range(4):
        arr = npz[f"radar{i + 1}"].astype(np.float32)
        arr = arr[(arr[:, 0] >= -32) & (arr[:, 0] <= 64) & (arr[:, 1] >= -40) & (arr[:, 1] <= 40)][:75]
        padded = np.zeros((75, 5), np.float32)
        padded[: len(arr), :4], padded[:, 4] = arr, i
        per.append(padded)
        out[f"radar{i + 1}"] = padded
    out["radar"] = np.concatenate(per)
    ego = np.array(meta["pos_global"][:2])  # theta = 0: ego frame = world frame shifted
    kps = [p_points(np.array(p[:2]) - ego, t, r) for p in meta["next_target_points_3.25"]]
    out["target_point_previous"], out["target_point"] = kps[0], kps[1]
    out["target_point_next"] = kps[2] if len(kps) > 2 else kps[1]
    onehot = np.eye(6)[3]  # LANEFOLLOW (4) for every keypoint of straight_meta
    out["command"] = out["next_command"] = out["previous_command"] = onehot
    out["speed"], out["target_speed"] = np.float64(meta["speed"]), np.float64(meta["target_speed"])
    out["scenario_type_id"] = np.int64(SCENARIOS.index("NA"))
    out["perturbate_sensor"] = np.bool_(view == "perturbated")
    out["perturbation_translation"] = np.float64(meta["perturbation_translation"])  # meta values, both views
    out["perturbation_rotation"] = np.float64(meta["perturbation_rotation"])
    out["source_dataset"] = np.int64(1)
    out["brake"] = np.bool_(meta["brake"]) if planning else np.float64(meta["brake"])
    if planning:
        fut = np.asarray(meta["future_positions"], np.float64)[5:41:5, :2]
        out["future_waypoints"] = p_points(fut, t, r)
        out["future_yaws"] = np.array([normalize(float(v) - np.deg2rad(r)) for v in
                                       np.asarray(meta["future_yaws"])[5:41:5]])  # fmt: skip
        route_pts, points, last = p_points(np.asarray(meta["route"])[:20], t, r), [], np.zeros(2)
        for k in range(10):  # the first 2.5 m towards route[0], then 1 m towards route[k]
            step = route_pts[k] - last
            last = last + (2.5 if k == 0 else 1.0) * step / np.linalg.norm(step)
            points.append(last)
        out["route"] = np.array(points)
        out["route_labels_curvature"] = np.abs(np.arctan2(out["route"][:, 1], out["route"][:, 0])).mean()
    return out


def check_sample(lead: dict, i: int, exp: dict) -> None:
    for key, value in exp.items():
        got = lead[key][i].cpu().numpy()
        if np.asarray(value).dtype.kind in "biu" or key in ("hdmap", "bev_semantic"):
            np.testing.assert_array_equal(got, value, err_msg=key)
        else:
            np.testing.assert_allclose(got, value, rtol=1e-5, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("planning", [False, True])
def test_hand_written_route_both_views(hand_route, planning):
    _, route = hand_route
    # planning (post-training): frames with 8 future waypoints; pre-training: also frames at the route's end
    frames = [2, 9] if planning else [1, 12, 16]
    samples = [(route, f, v) for f in frames for v in ("normal", "perturbated")]
    batch = compact_batch(samples)
    lead = to_lead_batch(batch, planning=planning)
    check_table(lead, len(samples), planning)
    assert lead["hdmap"] is lead["bev_semantic"]
    for i, (_, frame, view) in enumerate(samples):
        check_sample(lead, i, expected_from_raw(route, frame, view, planning))
    check_centernet_and_radar_labels(lead, lead["center_net_bounding_boxes"])
    # the padding quirk: fewer than 90 rows -> a class-0 Gaussian at cell (0, 0), counted in avg_factor
    assert (lead["center_net_heatmap"][:, 0, 0, 0] == 1).all() and (lead["center_net_avg_factor"] == 2).all()


def test_planning_refuses_samples_without_waypoints(hand_route):
    _, route = hand_route
    batch = compact_batch([(route, 3, "normal"), (route, 14, "normal")])
    with pytest.raises(ValueError, match=r"catalog rows \[1\] have no 8 future waypoints"):
        to_lead_batch(batch, planning=True)
    assert torch.isnan(batch["waypoints"][1]).all() and torch.isfinite(batch["target_point"][1]).all()


def test_synthetic_routes(synth_root_template):
    routes = sorted(p for p in (synth_root_template / "data").glob("*/*") if p.is_dir())
    samples = [(routes[0], 3, "normal"), (routes[1], 5, "perturbated"), (routes[2], 19, "perturbated"),
               (routes[3], 8, "normal")]  # fmt: skip
    batch = compact_batch(samples)
    lead = to_lead_batch(batch)
    check_table(lead, len(samples), planning=False)
    for i, (route, frame, view) in enumerate(samples):
        exp = expected_from_raw(route, frame, view, planning=False, hand=False)
        meta = lzma_pickle(route / "metas" / f"{frame:04d}.pkl")
        kind = meta["current_active_scenario_type"] or meta["previous_active_scenario_type"] or "NA"
        exp["scenario_type_id"] = np.int64(SCENARIOS.index(kind))
        onehot = np.eye(6)[[(4 if c < 0 else c) - 1 for c in meta["next_commands_3.25"][:2]]]
        exp["command"] = exp["previous_command"] = onehot[0]
        exp["next_command"] = onehot[1]
        theta, ego = meta["theta"], np.array(meta["pos_global"][:2])
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        t, r = (meta["perturbation_translation"], meta["perturbation_rotation"]) if view != "normal" else (0, 0)
        kps = [p_points(rot.T @ (np.array(p[:2]) - ego), t, r) for p in meta["next_target_points_3.25"][:3]]
        exp["target_point_previous"], exp["target_point"] = kps[0], kps[1]
        exp["target_point_next"] = kps[2] if len(kps) > 2 else kps[1]
        check_sample(lead, i, exp)
    # BEV: the map layer wherever no box of the frame can have been drawn (a generous footprint mask)
    for i, (route, frame, view) in enumerate(samples):
        sfx, meta = ("_perturbated" if view != "normal" else ""), lzma_pickle(route / "metas" / f"{frame:04d}.pkl")
        t, r = (meta["perturbation_translation"], meta["perturbation_rotation"]) if sfx else (0.0, 0.0)
        hdmap = cv2.imread(str(route / f"hdmap{sfx}" / f"{frame:04d}.png"), cv2.IMREAD_UNCHANGED)
        bev = np.array([0, 1, 0, 2, 2, 3, 0, 0, 0], np.uint8)[hdmap][48:208, 64:256].repeat(2, 0).repeat(2, 1)
        mask = np.zeros((1024, 1024), np.uint8)
        corners_all = []
        for box in lzma_pickle(route / "bboxes" / f"{frame:04d}.pkl")[1:]:
            (x, y), e = p_points(box["position"][:2], t, r), max(box["extent"][:2]) * 2.5 + 1.0
            c = cv2.boxPoints((((x + 128) * 4, (y + 128) * 4), (e * 8, e * 8), 0.0)).astype(np.int32)
            cv2.fillPoly(mask, [c], 1)
            corners_all.append(c)
        if corners_all:
            cv2.fillPoly(mask, [cv2.convexHull(np.concatenate(corners_all))], 1)  # hull fills
        free = mask[352:672, 384:768] == 0
        np.testing.assert_array_equal(lead["bev_semantic"][i].numpy()[free], bev[free])
        assert lead["hdmap"][i].data_ptr() == lead["bev_semantic"][i].data_ptr()
    check_centernet_and_radar_labels(lead, batch["boxes"])
    np.testing.assert_array_equal(lead["center_net_bounding_boxes"].numpy(), batch["boxes"].numpy())


# ------------------------------------------------------------------------------------------------ CenterNet
def rows_batch(rows_per_sample: list[list[list[float]]]) -> torch.Tensor:
    boxes = torch.zeros(len(rows_per_sample), 90, 9)
    for i, rows in enumerate(rows_per_sample):
        if rows:
            boxes[i, : len(rows)] = torch.tensor(rows, dtype=torch.float32)
    return boxes


def test_heatmap_cases():
    yaw_359 = math.radians(359.99)
    boxes = rows_batch([
        # overlapping boxes: same class, centres 1-2 cells apart, and two boxes sharing a cell (later wins)
        [[100.0, 100.0, 8.8, 3.6, 0.2, 5.0, 0.5, 0, 3], [104.5, 102.0, 8.8, 3.6, -0.2, 2.0, 1.5, 0, 1],
         [101.0, 101.0, 16.0, 6.0, 3.0, 7.0, 1.0, 0, 0], [100.0, 100.0, 2.0, 2.0, 1.0, 1.0, 0.0, 1, 2]],
        # boxes at the grid edge (last row and column, first row and column) with radii > 2
        [[383.9, 319.9, 120.0, 100.0, -3.0, 1.0, 0.0, 2, 0], [0.1, 319.0, 60.0, 160.0, 0.0, 0.0, 0.0, 3, 0],
         [383.0, 0.5, 200.0, 40.0, 1.0, 0.0, 0.0, 4, 5]],
        # tiny boxes (radius floor 2), zero size, and yaws near 360° / -0 / 2π
        [[200.0, 150.0, 0.4, 0.4, yaw_359, 0.0, 0.0, 5, 0], [220.0, 150.0, 0.0, 0.0, -1e-7, 0.0, 0.0, 6, 0],
         [240.0, 150.0, 1.0, 1.0, 2 * math.pi, 0.0, 0.0, 7, 0], [260.0, 150.0, 1.0, 1.0, -math.pi, 0.0, 0.0, 7, 0]],
        [],  # no box: only LEAD's padding box at (0, 0)
        [[float(x), float(y), 8.0, 4.0, 0.1 * x, 1.0, 0.0, x % 8, 1] for x in range(0, 380, 4) for y in (3.0,)][:90],
    ])  # fmt: skip
    t = centernet_targets(boxes)
    for i in range(len(boxes)):
        exp = expected_centernet(boxes[i].numpy())
        for key, value in exp.items():
            if key in ("heatmap", "yaw_class", "brake", "pixel_weight", "avg_factor"):
                np.testing.assert_array_equal(t[key][i].numpy(), value, err_msg=f"{key} sample {i}")
            else:
                np.testing.assert_allclose(t[key][i].numpy(), value, rtol=1e-5, atol=1e-5, err_msg=key)
    assert t["yaw_class"][2, 37, 50] == 0 and t["yaw_res"][2, 0, 37, 50] == pytest.approx(-math.radians(0.01), abs=1e-6)
    assert t["heatmap"][3].sum() == t["heatmap"][3, 0, :3, :3].sum() > 0 and t["avg_factor"][3] == 1
    assert (t["heatmap"][1, :, 79, 95] <= 1).all() and t["heatmap"][1, 2, 79, 95] == 1
    assert t["avg_factor"][4] == 90 and t["pixel_weight"][4, 0].sum() == 90  # full: no padding box
    # leadtrain's view: rows past num_boxes ignored, int64 classes
    ignored = centernet_targets(boxes, torch.tensor([4, 3, 4, 0, 90]))
    assert ignored["heatmap"][3].sum() == 0 and ignored["avg_factor"][3] == 1


def test_radar_detections_order_and_limits():
    rows = [[(x + 32) * 4, 160.0 + k, 4, 4, 0, v, 0, c, n] for k, (x, v, c, n) in enumerate([
        (10, 5.0, 0, 3), (11, 5.0, 4, 1), (12, 5.0, 4, 2), (13, 9.0, 6, 1), (14, 5.0, 1, 0), (15, 1.0, 7, 4)])]
    rows.append([128.0, 160.0, 4, 4, 0, 20.0, 0, 0, 5])  # metric (0, 0): dropped by LEAD's padding test
    rows += [[(20 + k) * 4.0, 100.0, 4, 4, 0, 2.0, 0, 0, 1] for k in range(30)]  # more than 20 with radar hits
    boxes = rows_batch([rows, []])
    got = radar_detections(boxes)
    assert got.shape == (2, 20, 4) and got.dtype == torch.float32
    for i in range(2):
        np.testing.assert_allclose(got[i].numpy(), expected_radar_detections(boxes[i].numpy()), atol=1e-6)
    assert got[0, :4, 2].tolist() == [9.0, 5.0, 5.0, 5.0] and got[0, 1:4, 0].tolist() == [12.0, 11.0, 10.0]
    assert not got[1].any()


def test_device_argument_and_open_dataset_output_lead(hand_route):
    from leadio import open_dataset
    from leadio.shard.build import build_shard_set

    root, _ = hand_route
    report = build_shard_set(root, "full_pretrain", workers=1, samples_per_shard=8, progress=False)
    loader = open_dataset(report.set_dir, output="lead", batch_size=4, backend="cpu", seed=1)
    assert isinstance(loader, LeadBatches) and loader.planning is False  # frames at the route's end
    batches = list(loader)
    assert len(batches) == len(loader.plan(0)) // 4 == 4 and loader.epoch == 1
    first = batches[0]
    check_table(first, 4, planning=False)
    compact = open_dataset(report.set_dir, batch_size=4, backend="cpu", seed=1)
    again = to_lead_batch(next(iter(compact)), device="cpu")
    for key, value in again.items():
        if not key.startswith("loading"):
            assert torch.equal(value, first[key]), key
    post = open_dataset(report.set_dir, collection="full_posttrain", output="lead", batch_size=1, backend="cpu")
    assert post.planning is True and "future_waypoints" in next(iter(post))


def test_avg_factor_from_distinct_centres_equals_counting_the_map(monkeypatch):
    """avg_factor is counted from the distinct centre cells (every kernel is 1 at its centre only); the pass
    over the heatmap it replaces gives the same counts, duplicated rows and shared cells included."""
    same = [100.0, 100.0, 8.8, 3.6, 0.2, 5.0, 0.0, 1, 0]
    boxes = rows_batch([[same, same, same, [100.0, 100.0, 40.0, 40.0, 0.0, 0.0, 0.0, 1, 0]],  # one cell, 2 radii
                        [same, [*same[:7], 2, 0]], [[0.0] * 9] * 3])  # other class; padding-like rows
    fast = centernet_targets(boxes)
    assert fast["avg_factor"].tolist() == [2, 3, 1]  # sample 0: padding at (0, 0) + one centre
    # LEAD's definition: the cells of the heatmap that equal 1, counted over the map
    by_map = fast["heatmap"].eq(1).flatten(1).sum(1).clamp(min=1)
    assert torch.equal(fast["avg_factor"], by_map.to(fast["avg_factor"].dtype))


@pytest.fixture(scope="module")
def hand_set(hand_route):
    from leadio.shard.build import build_shard_set

    root, _ = hand_route
    return build_shard_set(root, "full_pretrain", workers=1, samples_per_shard=8, progress=False).set_dir


@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("planning", [False, True])
@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_lead_batches_built_in_the_decode_threads_equal_to_lead_batch(hand_set, workers, planning, rate):
    """The decode threads build the LEAD batches (issue 24): each equals `to_lead_batch` of the compact
    loader's batch, for 0/1/2 threads, both phases and both views."""
    from leadio import open_dataset

    n = 1 if planning else 2  # the post-training collection holds the route's first frames only
    opts = dict(batch_size=n, backend="cpu", seed=3, perturbation_rate=rate,
                collection="full_posttrain" if planning else "full_pretrain")
    compact = open_dataset(hand_set, num_workers=0, **opts)
    expected = [to_lead_batch(b, planning=planning) for b in compact]
    loader = open_dataset(hand_set, output="lead", num_workers=workers, **opts)
    assert loader.planning is planning
    got = list(loader)
    assert len(got) == len(expected) >= 2
    for i, (batch, exp) in enumerate(zip(got, expected, strict=True)):
        assert batch.keys() == exp.keys()
        assert batch["perturbate_sensor"].tolist() == [rate == 1.0] * n
        assert (batch["loading_time"] >= 0).all() and torch.equal(batch["loading_time"], batch["loading_sensor_time"])
        for key, value in exp.items():
            if not key.startswith("loading"):
                assert value.dtype == batch[key].dtype and torch.equal(batch[key], value), (i, key)
    loader.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_lead_batches_reuse_buffers_and_never_overwrite_a_kept_batch(hand_set, workers):
    """LeadBatches writes depth and rasterized_lidar into reused buffers: the values equal a fresh conversion,
    a batch the user keeps is left as it was, and a dropped batch's buffers are written again (at most the
    batches in flight, the kept one and the consumer's are held at once)."""
    from leadio import open_dataset

    compact = open_dataset(hand_set, batch_size=4, backend="cpu", seed=1, num_workers=0)
    expected = [to_lead_batch(b) for _ in range(2) for b in compact]  # two epochs
    loader = open_dataset(hand_set, output="lead", batch_size=4, backend="cpu", seed=1, num_workers=workers)
    kept, pointers = None, []
    for _ in range(2):
        for batch in loader:
            for key, value in expected[len(pointers)].items():
                if not key.startswith("loading"):
                    assert torch.equal(batch[key], value), (len(pointers), key)
            pointers.append(batch["depth"].data_ptr())
            kept = batch if kept is None else kept
            del batch  # the loop variable would keep it alive while the next batch is built
    assert len(pointers) == len(expected) == 8
    for key in ("depth", "rasterized_lidar", "rgb"):
        assert torch.equal(kept[key], expected[0][key]), key  # 7 conversions later, still the first batch
    assert pointers[0] not in pointers[1:]
    if workers == 0:
        assert len(set(pointers[1:])) == 1 and loader._buffers._ring.allocated == 2  # one buffer serves the rest
    else:  # the batches queued ahead (prefetch) each hold one
        assert len(set(pointers)) < len(pointers)
        assert loader._buffers._ring.allocated <= loader.loader._threads.prefetch + 2
    loader.close()


@pytest.mark.parametrize("persistent", [True, False])
def test_lead_batches_leave_no_threads_or_buffers(hand_set, persistent):
    """Deleted mid-epoch or closed, a LEAD loader whose threads build the batches leaves no decode thread and
    no buffer ring behind; a batch kept past its end stays valid."""
    import gc
    import threading
    import weakref

    from leadio import open_dataset

    def decode_threads():
        return [t for t in threading.enumerate() if t.name.startswith("leadio-decode")]

    gc.collect()
    assert decode_threads() == []
    opts = dict(batch_size=2, backend="cpu", seed=1, num_workers=2, persistent_workers=persistent)
    expected = to_lead_batch(next(iter(open_dataset(hand_set, **{**opts, "num_workers": 0}))))
    loader = open_dataset(hand_set, output="lead", **opts)
    it = iter(loader)
    batch = next(it)
    assert len(decode_threads()) == 2
    buffers = weakref.ref(loader._buffers)
    del it  # abandoned mid-epoch, batches queued
    if not persistent:
        assert decode_threads() == []
    del loader
    assert decode_threads() == []
    gc.collect()
    assert buffers() is None  # the ring and its buffers went with the loader
    for key, value in expected.items():
        if not key.startswith("loading"):
            assert torch.equal(batch[key], value), key
    closed = open_dataset(hand_set, output="lead", **opts)
    assert len(list(closed)) >= 1
    closed.close()
    assert decode_threads() == []
    del closed


def test_to_lead_batch_out_buffers_are_checked():
    n = 2
    batch = {"row": torch.arange(n), "view": torch.zeros(n, dtype=torch.uint8),
             "depth": torch.randint(0, 256, (n, 4, 6), dtype=torch.uint8),
             "lidar": torch.randint(0, 6, (n, 1, 8, 8), dtype=torch.uint8)}
    fresh = to_lead_batch(batch)
    out = {"depth": torch.full((n, 16, 24), -1.0), "rasterized_lidar": torch.full((n, 1, 8, 8), -1.0)}
    into = to_lead_batch(batch, out=out)
    assert into["depth"] is out["depth"] and into["rasterized_lidar"] is out["rasterized_lidar"]
    assert torch.equal(into["depth"], fresh["depth"]) and torch.equal(into["rasterized_lidar"],
                                                                      fresh["rasterized_lidar"])
    with pytest.raises(ValueError, match=r"buffer 'depth' is torch.float32 \(2, 16, 25\) on cpu \(contiguous: True\); "
                                         r"this batch needs a contiguous CPU float32 \(2, 16, 24\)"):
        to_lead_batch(batch, out={"depth": torch.zeros(n, 16, 25)})
    with pytest.raises(ValueError, match=r"buffer 'rasterized_lidar' is torch.float64"):
        to_lead_batch(batch, out={"rasterized_lidar": torch.zeros(n, 1, 8, 8, dtype=torch.float64)})
    with pytest.raises(ValueError, match=r"'depth' and 'rasterized_lidar' only, got \['rgb'\]"):
        to_lead_batch(batch, out={"rgb": torch.zeros(1)})
