"""Tests for leadio.targets: hand-built frames with known geometry, checked against hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leadio.format.config import DATASET_CONFIGS
from leadio.schema import TARGET_LAYOUT, TARGET_RECORD_BYTES, BoxClass, pack_targets, unpack_targets
from leadio.targets.bev import bev_semantic
from leadio.targets.boxes import box_rows
from leadio.targets.common import perturb_points, perturb_yaw
from leadio.targets.lidar import lidar_bev_histogram, lidar_bev_to_float, radar_input
from leadio.targets.planning import command_onehot, planning_targets, resample_route, target_speed_twohot

CFG = DATASET_CONFIGS["carla_leaderboard2"]
T_PERT, R_PERT = 1.0, 90.0  # perturbation used by the perturbated cases: 1 m right, yawed 90 deg


def make_meta(**overrides):
    k = np.arange(61, dtype=np.float32)
    meta = {
        "pos_global": [100.0, 200.0, 0.0],
        "theta": math.pi / 2,  # facing world +y
        "speed": 5.0,
        "target_speed": 8.0,
        "brake": False,
        "route": np.stack([2.5 + np.arange(50), np.zeros(50)], axis=1).astype(np.float32),
        "future_positions": np.stack([0.5 * k, 0.1 * k, np.zeros(61)], axis=1).astype(np.float32),
        "future_yaws": (0.01 * k).astype(np.float32),
        "next_target_points_3.25": [[100.0, 210.0, 0.0], [100.0, 230.0, 0.0], [100.0, 250.0, 0.0]],
        "next_commands_3.25": [4, 4, 4],
        "perturbation_translation": T_PERT,
        "perturbation_rotation": R_PERT,
        "scenario_obstacles_ids": [],
        "over_head_traffic_light": False,
        "europe_traffic_light": False,
        "current_active_scenario_type": None,
        "previous_active_scenario_type": None,
        "vehicle_opened_door": False,
        "vehicle_door_side": None,
    }
    meta.update(overrides)
    return meta


EGO = {"class": "ego_car", "position": [0.0, 0.0, 0.0], "extent": [2.4, 1.0, 0.8], "yaw": 0.0, "id": 1,
       "speed": 0.0}  # fmt: skip
EMPTY_MAP = np.zeros((256, 256), np.uint8)
EMPTY_MAP.setflags(write=False)


def make_box(cls="car", position=(10.0, 5.0, 0.0), extent=(2.0, 1.0, 0.75), **overrides):
    box = {
        "class": cls,
        "position": list(position),
        "extent": list(extent),
        "yaw": 0.0,
        "speed": 3.0,
        "brake": float("nan"),
        "num_points": 100,
        "visible_pixels": 100,
        "num_radar_points": 4,
        "transfuser_semantics_id": {"car": 1, "walker": 4, "traffic_light": 3}.get(cls, 0),
        "id": 7,
        "role_name": "autopilot",
        "type_id": "vehicle.tesla.model3",
        "lane_type_str": "Driving",
    }
    box.update(overrides)
    return box


def unperturb(xy, t, r_deg):
    """Inverse of P: p = R(r) p' + (0, t)."""
    a = math.radians(r_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.asarray(xy) @ rot.T + np.array([0.0, t])


# ------------------------------------------------------------------------------------------------ P


def test_perturbation_known_values_and_round_trip():
    # Ego yawed 90 deg to the right: a point ahead is now on its left.
    np.testing.assert_allclose(perturb_points([1.0, 0.0], 0.0, 90.0), [0.0, -1.0], atol=1e-15)
    np.testing.assert_allclose(perturb_points([0.0, 1.0], 1.0, 0.0), [0.0, 0.0])
    assert perturb_yaw(0.0, 90.0) == pytest.approx(-math.pi / 2)
    assert perturb_yaw(-math.pi, 0.0) == pytest.approx(math.pi)  # normalize: -pi -> pi
    rng = np.random.default_rng(0)
    xy = rng.uniform(-50, 50, (100, 2))
    for t, r in [(0.7, -11.3), (-1.0, 12.5), (0.0, 0.0)]:
        np.testing.assert_allclose(unperturb(perturb_points(xy, t, r), t, r), xy, atol=1e-12)
        yaw = rng.uniform(-3, 3, 50)
        back = perturb_yaw(perturb_yaw(yaw, r), -r)
        np.testing.assert_allclose(np.angle(np.exp(1j * (back - yaw))), 0.0, atol=1e-12)
    np.testing.assert_array_equal(perturb_points(xy, 0.0, 0.0), xy)  # identity is exact


# ------------------------------------------------------------------------------------------------ LiDAR


def reference_lidar_bev(points, time, t, r, perturbated):
    """LEAD's rasterize_lidar path: time filter, align_lidar (3x3), z filter, np.histogramdd, clip, /5, .T."""
    pts = points[time < 10].astype(np.float64)
    if perturbated:
        a = np.deg2rad(r)
        rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
        pts = (rot.T @ (pts - np.array([0.0, t, 0.0])).T).T
    pts = pts[(pts[:, 2] <= 10) & (-4 <= pts[:, 2])]
    xbins, ybins = np.linspace(-32, 64, 96 * 4 + 1), np.linspace(-40, 40, 80 * 4 + 1)
    hist = np.histogramdd(pts[:, :2], bins=(xbins, ybins))[0]
    hist[hist > 5] = 5
    return (hist / 5).T.astype(np.float32)[None]


def lidar_cloud(rng, n=40_000, with_edges=True):
    pts = np.stack([rng.uniform(-40, 70, n), rng.uniform(-45, 45, n), rng.uniform(-6, 12, n)], axis=1)
    if with_edges:
        xe, ye = np.linspace(-32, 64, 385), np.linspace(-40, 40, 321)
        extra = [
            np.stack([xe, rng.uniform(-40, 40, xe.size), np.zeros(xe.size)], 1),
            np.stack([rng.uniform(-32, 64, ye.size), ye, np.zeros(ye.size)], 1),
            [[64, 40, 0], [-32, -40, 0], [64, -40, 0], [-32, 40, 0], [64, 40, 10], [0, 0, -4],
             [1, 1, 10.0001]],  # fmt: skip
        ]
        pts = np.concatenate([pts, *extra])
        near = pts[-(xe.size + ye.size + 7) :].astype(np.float32)
        up, down = near.copy(), near.copy()
        up[:, :2] = np.nextafter(near[:, :2], np.float32(np.inf))
        down[:, :2] = np.nextafter(near[:, :2], np.float32(-np.inf))
        pts = np.concatenate([pts, up, down])
    pts = np.concatenate([pts, np.tile([[12.1, -3.3, 0.5]], (9, 1))])  # 9 hits in one pixel: capped at 5
    return pts.astype(np.float32), rng.integers(0, 13, len(pts)).astype(np.uint8)


def test_lidar_histogram_equals_histogramdd_including_edges():
    points, time = lidar_cloud(np.random.default_rng(1))
    hist = lidar_bev_histogram(points, time, make_meta(), CFG, perturbated=False)
    assert hist.dtype == np.uint8 and hist.shape == (1, 320, 384)
    expected = reference_lidar_bev(points, time, 0.0, 0.0, perturbated=False)
    np.testing.assert_array_equal(lidar_bev_to_float(hist, CFG), expected)
    assert hist.max() == 5 and lidar_bev_to_float(hist, CFG).max() == 1.0


def test_lidar_histogram_perturbated_equals_reference():
    points, time = lidar_cloud(np.random.default_rng(2), with_edges=False)
    meta = make_meta(perturbation_translation=0.8, perturbation_rotation=-7.5)
    hist = lidar_bev_histogram(points, time, meta, CFG, perturbated=True)
    expected = reference_lidar_bev(points, time, 0.8, -7.5, perturbated=True)
    np.testing.assert_array_equal(lidar_bev_to_float(hist, CFG), expected)


def test_lidar_histogram_pixel_index_and_filters():
    points = np.array([[0.1, -39.9, 0.0], [0.1, -39.9, 10.5], [0.1, -39.9, 0.0], [5.0, 5.0, 0.0]], np.float32)
    hist = lidar_bev_histogram(points, np.array([0, 0, 10, 9], np.uint8), make_meta(), CFG, False)
    assert hist[0, 0, 128] == 1  # row floor((y+40)*4) = 0, column floor((x+32)*4) = 128; z and time drop 2
    assert hist[0, 180, 148] == 1 and hist.sum() == 2
    empty = lidar_bev_histogram(np.zeros((0, 3), np.float32), np.zeros(0, np.uint8), {}, CFG, False)
    assert empty.shape == (1, 320, 384) and empty.sum() == 0


# ------------------------------------------------------------------------------------------------ boxes + BEV


def test_single_car_box_row_and_bev_rectangle():
    meta, boxes = make_meta(), [EGO, make_box()]
    rows, count = box_rows(boxes, meta, CFG, perturbated=False)
    assert rows.shape == (90, 9) and rows.dtype == np.float32 and count == 1
    # x_px = (10+32)*4, y_px = (5+40)*4, extents*4, yaw, speed, brake NaN -> 0, VEHICLE, radar points.
    np.testing.assert_array_equal(rows[0], [168, 180, 8, 4, 0, 3, 0, 0, 4])
    assert not rows[1:].any()

    bev = bev_semantic(EMPTY_MAP, boxes, meta, CFG, perturbated=False)
    # Occupancy centre (column (10+128)*4 = 552, row (5+128)*4 = 532), half-size 8 x 4 px, crop offset
    # (352, 384): rows 176..184 and columns 160..176 inclusive get VEHICLE (1) + 3.
    expected = np.zeros((320, 384), np.uint8)
    expected[176:185, 160:177] = 4
    assert bev.dtype == np.uint8
    np.testing.assert_array_equal(bev, expected)


def test_single_car_box_row_and_bev_perturbated():
    meta, boxes = make_meta(), [EGO, make_box()]
    rows, count = box_rows(boxes, meta, CFG, perturbated=True)
    # P(1 m, 90 deg): p' = R(90)^T (10, 5-1) = (4, -10); yaw' = -pi/2.
    assert count == 1
    expected = [(4 + 32) * 4, (-10 + 40) * 4, 8, 4, -math.pi / 2, 3, 0, 0, 4]
    np.testing.assert_allclose(rows[0], expected, atol=1e-4)

    bev = bev_semantic(EMPTY_MAP, boxes, meta, CFG, perturbated=True)
    # Centre column (4+128)*4-384 = 144, row (-10+128)*4-352 = 120; turned 90 deg: +-4 columns, +-8 rows.
    assert (bev[113:128, 141:148] == 4).all()
    ring = np.ones_like(bev, bool)
    ring[110:131, 138:151] = False
    assert not bev[ring].any()
    assert 15 * 7 <= (bev == 4).sum() <= 17 * 9


def test_bev_map_layer_remap_crop_and_repeat():
    hdmap = np.zeros((256, 256), np.uint8)
    hdmap[48, 64] = 1  # first cropped pixel: road
    hdmap[207, 255] = 4  # last cropped pixel: broken lane marking -> lane markers
    hdmap[100, 100] = 5  # stop sign
    hdmap[120, 120] = 2  # sidewalk -> unlabeled
    hdmap[47, 64] = hdmap[48, 63] = 1  # outside the crop
    expected = np.zeros((320, 384), np.uint8)
    expected[0:2, 0:2] = 1
    expected[318:320, 382:384] = 2
    expected[104:106, 72:74] = 3
    np.testing.assert_array_equal(bev_semantic(hdmap, [], make_meta(), CFG, False), expected)
    # Boxes are drawn over the map.
    road = np.ones((256, 256), np.uint8)
    bev = bev_semantic(road, [EGO, make_box()], make_meta(), CFG, False)
    assert bev[180, 168] == 4 and bev[0, 0] == 1


def test_bev_walker_scaling_and_traffic_light_labels():
    walker = make_box("walker", position=(10.0, 0.0, 0.0), extent=(0.2, 0.2, 0.9), speed=1.0)
    red = make_box("traffic_light", (30.0, 0.0, 0.0), (0.5, 1.0, 1.0), affects_ego=True, state="Red")
    bev = bev_semantic(EMPTY_MAP, [walker, red], make_meta(), CFG, False)
    # Walker half-extent max(0.2, 0.4) * 2.5 = 1 m = 4 px around column 168, row 160: a 9 x 9 square.
    expected = np.zeros((320, 384), bool)
    expected[156:165, 164:173] = True
    np.testing.assert_array_equal(bev == 5, expected)
    assert bev[160, 248] == 11  # red light, normal: 8 + 3 (column (30+32)*4)
    bev = bev_semantic(EMPTY_MAP, [red], make_meta(over_head_traffic_light=True), CFG, False)
    assert bev[160, 248] == 12
    green = dict(red, state="Green")
    assert bev_semantic(EMPTY_MAP, [green], make_meta(), CFG, False)[160, 248] == 10


def test_box_filters_and_relabelling():
    lincoln = "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/Lincoln/SM_LincolnParked.SM_LincolnParked"
    boxes = [
        EGO,
        make_box("walker", (5, -3, 0), num_points=2, visible_pixels=3),  # occluded pedestrian: dropped
        make_box("walker", (5, -3, 0), speed=1.2),
        make_box("traffic_light", (20, 2, 0), affects_ego=True, state="Red"),
        make_box("traffic_light", (20, 2, 0), affects_ego=True, state="Green"),  # dropped
        make_box("stop_sign", (20, 2, 0), affects_ego=False),  # dropped
        make_box("stop_sign", (20, 3, 0), affects_ego=True, state="Green"),  # kept: no state rule for signs
        make_box(position=(70, 0, 0)),  # out of range: dropped
        make_box(position=(-32, 0, 0)),  # the range is open: dropped (its x_px = 0 would pass)
        make_box(position=(10, 0, 5)),  # z out of range: dropped
        make_box("static", (8, 1, 0), type_id="static.prop.bench"),  # not a cone/warning/parked car: dropped
        make_box("static", (8, 1, 0), type_id="static.prop.constructioncone"),
        make_box("static", (8, -1, 0), type_id="static.prop.mesh", mesh_path=lincoln),
        make_box("static_prop_car", (8, 3, 0)),
        make_box(position=(15, 0, 0), role_name="scenario", type_id="vehicle.ford.ambulance"),
        make_box(position=(15, 3, 0), type_id="vehicle.bh.crossbike"),
    ]
    rows, count = box_rows(boxes, make_meta(), CFG, perturbated=False)
    classes = [BoxClass(int(c)) for c in rows[:count, 7]]
    B = BoxClass
    assert classes == [B.WALKER, B.TRAFFIC_LIGHT, B.STOP_SIGN, B.OBSTACLE, B.PARKING, B.PARKING, B.SPECIAL,
                       B.BIKER]  # fmt: skip
    np.testing.assert_allclose(rows[3, 2:4], np.float32(0.1720348298549652) * 4)  # LEAD's cone size
    np.testing.assert_allclose(rows[4, 2:4], np.float32([2.44619083404541, 1.115301489830017]) * 4)
    assert rows[0, 5] == np.float32(1.2) and rows[1, 8] == 4


def test_box_rows_truncate_to_max():
    boxes = [make_box(position=(float(i % 60), float(i // 60), 0.0), id=i) for i in range(100)]
    rows, count = box_rows(boxes, make_meta(), CFG, False)
    assert count == 90
    np.testing.assert_array_equal(rows[:, 0], (np.arange(90) % 60 + 32) * 4)


def test_box_rows_opened_door_widens_box():
    meta = make_meta(current_active_scenario_type="VehicleOpensDoorTwoWays", scenario_obstacles_ids=[7],
                     vehicle_opened_door=True, vehicle_door_side="left")  # fmt: skip
    box = make_box(role_name="scenario", speed=0.0)
    rows, _ = box_rows([box], meta, CFG, False)
    np.testing.assert_allclose(rows[0, [1, 3, 7]], [(5.6 + 40) * 4, 1.6 * 4, BoxClass.OBSTACLE], rtol=1e-6)


def test_bev_occlusion_relabelling_and_cone_hull():
    occluded = make_box(position=(20.0, 0.0, 0.0), num_points=0, visible_pixels=0)
    assert not bev_semantic(EMPTY_MAP, [occluded], make_meta(), CFG, False).any()
    ambulance = make_box(position=(20.0, 0.0, 0.0), type_id="vehicle.ford.ambulance")
    assert bev_semantic(EMPTY_MAP, [ambulance], make_meta(), CFG, False)[160, 208] == 8  # special vehicle
    # A parked scenario car of an Accident scenario is an obstacle (box class 5, BEV class 6).
    meta = make_meta(current_active_scenario_type="Accident", scenario_obstacles_ids=[7])
    crash = make_box(position=(20.0, 0.0, 0.0), role_name="scenario", speed=0.0)
    assert box_rows([crash], meta, CFG, False)[0][0, 7] == BoxClass.OBSTACLE
    assert bev_semantic(EMPTY_MAP, [crash], meta, CFG, False)[160, 208] == 6
    # Six cones on a 3 m circle around (20, 0) plus a warning: their convex hull is filled as obstacle.
    angles = np.arange(6) * math.pi / 3
    cone = "static.prop.constructioncone"
    cones = [make_box("static", (20 + 3 * math.cos(a), 3 * math.sin(a), 0.0), type_id=cone) for a in angles]
    warning = make_box("static", (20.0, 8.0, 0.0), type_id="static.prop.trafficwarning")
    assert bev_semantic(EMPTY_MAP, cones + [warning], make_meta(), CFG, False)[160, 208] == 6
    assert bev_semantic(EMPTY_MAP, cones[:5] + [warning], make_meta(), CFG, False)[160, 208] == 0


# ------------------------------------------------------------------------------------------------ planning


def test_route_straight_and_l_shaped():
    straight = np.stack([2.5 + np.arange(5.0), np.zeros(5)], 1)  # only 5 points: the rest is extrapolated
    np.testing.assert_allclose(resample_route(straight), np.stack([2.5 + np.arange(20.0), np.zeros(20)], 1))
    l_route = [(2.5, 0), (3.5, 0), (4.5, 0), (4.5, 1), (4.5, 2), (4.5, 3)]
    expected = [(2.5, 0), (3.5, 0), (4.5, 0)] + [(4.5, float(k)) for k in range(1, 8)]
    np.testing.assert_allclose(resample_route(l_route)[:10], expected, atol=1e-12)
    # Corner cut: from (4.5, 0) one metre towards route[3] = (3, 1).
    cut = resample_route([(1, 0), (2, 0), (3, 0), (3, 1), (3, 2), (3, 3)])
    np.testing.assert_allclose(cut[:3], [(2.5, 0), (3.5, 0), (4.5, 0)], atol=1e-12)
    np.testing.assert_allclose(cut[3], (4.5 - 1.5 / math.sqrt(3.25), 1 / math.sqrt(3.25)), atol=1e-12)


def test_route_extrapolates_along_last_segment_and_dedupes():
    out = resample_route([(3, 0), (3, 1)])
    p1 = (2.5 + 0.5 / math.sqrt(1.25), 1 / math.sqrt(1.25))  # 1 m from (2.5, 0) towards (3, 1)
    y2 = p1[1] + math.sqrt(1 - (3 - p1[0]) ** 2)  # circle around p1 cut with the line x = 3
    np.testing.assert_allclose(out[:4], [(2.5, 0), p1, (3, y2), (3, y2 + 1)], atol=1e-12)
    dup = resample_route([(2.5, 0), (2.5, 0), (3.5, 0), (2.5, 0), (4.5, 0)])
    np.testing.assert_allclose(dup, np.stack([2.5 + np.arange(20.0), np.zeros(20)], 1), atol=1e-12)
    with pytest.raises(ValueError, match="distinct"):
        resample_route([(1, 1), (1, 1)])


def test_planning_route_waypoints_and_perturbation():
    meta = make_meta()
    out = planning_targets(meta, perturbated=False)
    np.testing.assert_allclose(out["route"], np.stack([2.5 + np.arange(10.0), np.zeros(10)], 1), atol=1e-6)
    ticks = np.arange(5, 41, 5)
    np.testing.assert_allclose(out["waypoints"], np.stack([0.5 * ticks, 0.1 * ticks], 1), rtol=1e-6)
    np.testing.assert_allclose(out["waypoint_yaws"], 0.01 * ticks, rtol=1e-6)
    pert = planning_targets(meta, perturbated=True)
    expected = perturb_points(out["waypoints"], T_PERT, R_PERT)
    np.testing.assert_allclose(pert["waypoints"], expected, atol=1e-5)
    np.testing.assert_allclose(pert["waypoint_yaws"], 0.01 * ticks - math.pi / 2, atol=1e-6)
    assert all(v.dtype == np.float32 for v in pert.values())
    assert [k for k, _, _ in TARGET_LAYOUT] == list(out)


def test_target_speed_twohot():
    def hot(v, brake=False):
        return target_speed_twohot(v, brake).tolist()

    assert hot(9.0, brake=True) == [1, 0, 0, 0, 0, 0, 0, 0]
    assert hot(0.0) == [1, 0, 0, 0, 0, 0, 0, 0]
    assert hot(9.0) == [0, 0, 0.5, 0.5, 0, 0, 0, 0]
    assert hot(25.0) == [0, 0, 0, 0, 0, 0, 0, 1] == hot(20.0)
    assert hot(16.0) == [0, 0, 0, 0, 0, 1, 0, 0]
    assert hot(13.88888888) == [0, 0, 0, 0, 1, 0, 0, 0]
    np.testing.assert_allclose(hot(2.0), [0.5, 0.5, 0, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="target speed"):
        target_speed_twohot(-1.0, False)


def test_command_onehot():
    assert np.argmax(command_onehot(-1)) == 3  # VOID -> LANEFOLLOW
    for c in range(1, 7):
        assert command_onehot(c).tolist() == [float(i == c - 1) for i in range(6)]
    assert np.argmax(command_onehot(7)) == 3 and np.argmax(command_onehot(0)) == 3


def test_target_points_three_with_duplicates_and_two():
    # Ego at (100, 200) facing world +y: world (100, 200 + d) is d metres ahead, world (90, 200) 10 m right.
    out = planning_targets(make_meta(), perturbated=False)
    np.testing.assert_allclose(out["previous_target_point"], [10, 0], atol=1e-5)
    np.testing.assert_allclose(out["target_point"], [30, 0], atol=1e-5)
    np.testing.assert_allclose(out["next_target_point"], [50, 0], atol=1e-5)
    right = make_meta(**{"next_target_points_3.25": [[90.0, 200.0, 0.0], [100.0, 230.0, 0.0]]})
    np.testing.assert_allclose(planning_targets(right, False)["previous_target_point"], [0, 10], atol=1e-5)

    points = [[100, 210, 0], [100, 210.000000001, 0], [100, 230, 0], [100, 230, 0], [100, 250, 0]]
    dup = make_meta(**{"next_target_points_3.25": points, "next_commands_3.25": [1, 2, 3, 4, 5]})
    out = planning_targets(dup, perturbated=False)
    np.testing.assert_allclose(out["target_point"], [30, 0], atol=1e-5)
    np.testing.assert_allclose(out["next_target_point"], [50, 0], atol=1e-5)
    assert np.argmax(out["command"]) == 0 and np.argmax(out["next_command"]) == 2

    points = [[100, 210, 0], [100, 210, 0]]
    two = make_meta(**{"next_target_points_3.25": points, "next_commands_3.25": [5, 6]})
    out = planning_targets(two, perturbated=False)
    for key in ("previous_target_point", "target_point", "next_target_point"):
        np.testing.assert_allclose(out[key], [10, 0], atol=1e-5)
    assert np.argmax(out["command"]) == 4 and np.argmax(out["next_command"]) == 5

    # Perturbated: (30, 0) -> R(90)^T (30, -1) = (-1, -30).
    np.testing.assert_allclose(planning_targets(make_meta(), True)["target_point"], [-1, -30], atol=1e-5)
    same = make_meta(**{"next_target_points_3.25": [[100, 210, 0]] * 3})
    with pytest.raises(ValueError, match="at least 2"):
        planning_targets(same, False)


def test_missing_future_positions_is_a_clear_error():
    meta = make_meta(future_positions=np.zeros((40, 3), np.float32))
    with pytest.raises(ValueError, match=r"'future_positions' has 40 entries, need >= 41"):
        planning_targets(meta, False)
    meta = make_meta()
    del meta["future_yaws"]
    with pytest.raises(ValueError, match="future_yaws"):
        planning_targets(meta, False)


def test_pack_unpack_round_trip():
    targets = planning_targets(make_meta(brake=True, speed=3.25), perturbated=True)
    record = pack_targets(targets)
    assert isinstance(record, bytes) and len(record) == TARGET_RECORD_BYTES == 73 * 4
    back = unpack_targets(record)
    assert list(back) == list(targets)
    for name, value in targets.items():
        assert back[name].dtype == np.float32 and back[name].shape == value.shape
        np.testing.assert_array_equal(back[name], value)
    assert pack_targets(back) == record
    back["speed"][...] = 1.0  # writable copies
    with pytest.raises(ValueError, match="missing"):
        pack_targets({k: v for k, v in targets.items() if k != "route"})
    with pytest.raises(ValueError, match="shape"):
        pack_targets(dict(targets, route=np.zeros((9, 2))))
    with pytest.raises(ValueError, match="bytes"):
        unpack_targets(record[:-4])


# ------------------------------------------------------------------------------------------------ radar


def test_radar_input():
    rng = np.random.default_rng(3)
    inside = np.stack([rng.uniform(-30, 60, 100), rng.uniform(-39, 39, 100), np.zeros(100), np.ones(100)], 1)
    radar = {
        "radar1": inside.astype(np.float16),
        "radar2": np.array([[70, 0, 0, 1], [0, 50, 0, 1], [64, 40, 0.5, 2], [-32, -40, 0, 3]], np.float16),
        "radar3": np.zeros((0, 4), np.float16),
        "radar4": inside[:3].astype(np.float16),
    }
    out = radar_input(radar, CFG)
    assert out.shape == (300, 5) and out.dtype == np.float16
    np.testing.assert_array_equal(out[:75, :4], radar["radar1"][:75])
    np.testing.assert_array_equal(out[75:77, :4], radar["radar2"][2:])  # closed box: edges kept
    assert not out[77:150, :4].any() and not out[150:225, :4].any()
    np.testing.assert_array_equal(out[225:228, :4], radar["radar4"])
    np.testing.assert_array_equal(out[:, 4], np.repeat(np.arange(4), 75))
    with pytest.raises(ValueError, match="radar4"):
        radar_input({k: v for k, v in radar.items() if k != "radar4"}, CFG)


def test_route_dedupe_keeps_the_rows_and_order_of_numpys_unique():
    from leadio.targets.planning import unique_rows_in_order

    rng = np.random.default_rng(0)
    for trial in range(3000):
        n = int(rng.integers(1, 30))
        if trial % 2:  # few distinct values: many repeats, signed zeros among them
            pts = rng.integers(-3, 3, size=(n, 2)) * rng.choice([1.0, 0.5, -0.0], size=(n, 2))
        else:
            pts = rng.normal(size=(n, 2))
            pts[rng.integers(0, n, n // 2)] = pts[0]
        want = pts[np.sort(np.unique(pts, return_index=True, axis=0)[1])]
        got = unique_rows_in_order(pts)
        assert got.shape == want.shape and np.array_equal(got, want), pts.tolist()
        assert np.array_equal(np.signbit(got), np.signbit(want)), pts.tolist()  # the first of 0.0 / -0.0 kept
