"""The reference's own bucket builds (kesai-labs/lead at 4489176), reproduced step for step on a LEAD root so
that leadio's catalog scan can be compared with them per frame. No code of the reference is used; this is
what its code does, written again.

`full_bucket_build`: what ``FullPretrainBucketCollection`` does from scratch (``force_rebuild_bucket``;
``lead/data_buckets/abstract_bucket_collection.py``, ``full_pretrain_bucket_collection.py``, ``bucket.py``,
``route_filtering.py``):

1. list the scenario folders of ``<root>/data`` (sorted), then each one's route folders (``os.listdir``,
   sorted);
2. per route: ``route_not_finished`` (``isfile(results.json)``) and ``route_failed``: ``isfile`` of
   results.json and of ``metas/0000.pkl``, parse results.json (the reference uses ujson, not installed here:
   the stdlib json reads the ~1 KB file once per route) and apply the filter;
3. count the frames as ``len(os.listdir(<route>/bboxes))`` and, per frame in range(1, n - 1), ``Bucket.add``:
   17 formatted path strings appended to 17 lists, plus the route index, the frame and a global index;
4. ``Bucket.finalize``: each list to ``np.array(list).astype(np.bytes_)`` (``np.string_`` in numpy 1), the
   int lists to arrays;
5. save: ``pickle.dump`` of ``{buckets, total_routes, trainable_routes, all_frames, trainable_frames}`` into
   ``lzma.open(path, "wb")`` (xz preset 6). The reference's Bucket also pickles its TrainingConfig (a few KB)
   and is a class instance; here the same arrays go in a dict.

It reads no meta and no box. `property_bucket_build` is the reference's bucket build that does: its
property-mined collection (``NavSimBucketCollection._build_buckets``) iterates ``CARLAData(build_buckets=True)``
in one process after the full build above, and per frame ``__getitem__`` (``lead/data_loader/carla_dataset.py``)
reads the meta and the boxes (``common_utils.read_pickle``: ``lzma.open`` + ``pickle.load``), copies the meta
into the sample minus its variable-length keys, then copies ~40 named non-numeric and ~40 numeric attributes
(None -> inf) and derives the scenario type. Reproduced: the full build above, then per frame exactly these
reads and copies, with `leadio.format.pickles.load_lzma_pickle` (the restricted unpickler) instead of
``pickle.load``. Left out, in the reference's favour: its route smoothing and curvature per frame, its
per-scenario mining checks, and the collection's own save.
"""

from __future__ import annotations

import json
import lzma
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from leadio.format.pickles import load_lzma_pickle

__all__ = ["full_bucket_build", "property_bucket_build"]

#: Bucket's per-frame path lists: (attribute, folder, extension)
_PATHS = (
    ("bev_3rd_person_images", "3rd_person", "jpg"), ("images", "rgb", "jpg"),
    ("images_perturbated", "rgb_perturbated", "jpg"), ("semantics", "semantics", "png"),
    ("semantics_perturbated", "semantics_perturbated", "png"), ("hdmap", "hdmap", "png"),
    ("hdmap_perturbated", "hdmap_perturbated", "png"), ("depth", "depth", "png"),
    ("depth_perturbated", "depth_perturbated", "png"), ("lidars", "lidar", "laz"), ("radars", "radar", "npz"),
    ("radars_perturbated", "radar_perturbated", "npz"), ("bboxes", "bboxes", "pkl"), ("metas", "metas", "pkl"),
)
_HARD_FAILURES = ("Failed - Agent couldn't be set up", "Failed", "Failed - Simulation crashed",
                  "Failed - Agent crashed")
#: meta keys the build_buckets branch deletes from the sample (variable length); absent ones are skipped here
_DROPPED = ("past_filtered_state", "privileged_past_positions", "future_speeds", "future_yaws", "future_positions",
            "past_positions", "past_speeds", "past_yaws", "previous_target_points", "next_target_points",
            "previous_commands", "next_commands")
_NON_NUMERIC = (
    "town", "current_active_scenario_type", "previous_active_scenario_type", "changed_route", "stop_sign_hazard",
    "walker_hazard", "light_hazard", "vehicle_hazard", "lane_type_str", "is_intersection",
    "does_emergency_brake_for_pedestrians", "construction_obstacle_two_ways_stuck", "accident_two_ways_stuck",
    "parked_obstacle_two_ways_stuck", "vehicle_opens_door_two_ways_stuck", "vehicle_opened_door",
    "vehicle_door_side", "ego_lane_id", "rear_danger_8", "rear_danger_16", "brake_cutin", "weather_setting",
    "jpeg_storage_quality", "emergency_brake_for_special_vehicle", "visual_visibility",
    "num_parking_vehicles_in_proximity", "slower_bad_visibility", "slower_clutterness", "slower_occluded_junction",
    "over_head_traffic_light", "europe_traffic_light", "vehicle_hazard", "light_hazard", "walker_hazard",
    "stop_sign_hazard", "stop_sign_close", "num_dangerous_adversarial", "num_safe_adversarial",
    "num_ignored_adversarial", "rear_adversarial_id",
)
_NUMERIC = (
    "steer", "throttle", "brake", "dist_to_construction_site", "dist_to_accident_site", "dist_to_parked_obstacle",
    "dist_to_vehicle_opens_door", "dist_to_cutin_vehicle", "dist_to_pedestrian", "dist_to_biker",
    "distance_to_next_junction", "signed_dist_to_lane_change", "speed", "accel_x", "accel_y", "accel_z",
    "angular_velocity_x", "angular_velocity_y", "angular_velocity_z", "speed_limit", "steer", "throttle",
    "privileged_acceleration", "route_curvature", "distance_to_next_junction", "distance_to_intersection_index_ego",
    "ego_lane_width", "route_left_length", "distance_ego_to_route", "target_speed_limit", "target_speed", "theta",
    "privileged_yaw", "traffic_light_height", "second_highest_speed", "second_highest_speed_limit",
    "perturbation_rotation", "perturbation_translation",
)


def _route_failed(route: str) -> bool:
    if not os.path.isfile(route + "/results.json") or not os.path.isfile(route + "/metas/0000.pkl"):
        return True
    with open(route + "/results.json", encoding="utf-8") as f:
        res = json.load(f)
    score, n = res["scores"]["score_composed"], res["num_infractions"]
    min_speed, lanes = len(res["infractions"]["min_speed_infractions"]), len(res["infractions"]["outside_route_lanes"])
    good = (score == 100.0 or (score < 100.0 and n == min_speed)
            or (res["status"] == "Completed" and n == min_speed + lanes) or res["status"] == "Perfect")
    return not good or res["status"] in _HARD_FAILURES


def _collect(root: Path, skip_first: int = 1, skip_last: int = 1) -> dict[str, Any]:
    """Steps 1-4 of the full build: the bucket's arrays and the totals."""
    lists: dict[str, list] = {name: [] for name, _, _ in _PATHS}
    lists.update(route_dirs=[], route_indices=[], sample_start=[], global_indices=[])
    totals = {"total_routes": 0, "trainable_routes": 0, "all_frames": 0, "trainable_frames": 0}
    data = root / "data"
    for scenario in sorted(str(p) for p in data.iterdir() if p.is_dir()):
        for name in sorted(os.listdir(scenario)):
            totals["total_routes"] += 1
            route = scenario + "/" + name  # os.path.join in the reference
            if not os.path.isfile(route + "/results.json") or _route_failed(route):
                continue
            totals["trainable_routes"] += 1
            n = len(os.listdir(route + "/bboxes"))
            for seq in range(skip_first, n - skip_last):
                totals["all_frames"] += 1
                for attr, folder, ext in _PATHS:
                    lists[attr].append(route + "/" + folder + f"/{seq:04}.{ext}")
                lists["route_dirs"].append(route)
                lists["route_indices"].append(seq)
                lists["sample_start"].append(seq)
                lists["global_indices"].append(len(lists["global_indices"]))
                totals["trainable_frames"] += 1
    bucket = {k: np.array(v).astype(np.bytes_) for k, v in lists.items()
              if k not in ("route_indices", "sample_start", "global_indices")}
    bucket["route_indices"] = np.array(lists["route_indices"]).astype(int)
    bucket["sample_start"] = np.array(lists["sample_start"])
    bucket["global_indices"] = np.array(lists["global_indices"])
    bucket["global_index"] = len(lists["global_indices"])
    return {"buckets": [bucket], **totals}


def _build(root: Path, scratch: Path) -> dict[str, Any]:
    collection = _collect(root)
    scratch.mkdir(parents=True, exist_ok=True)
    with lzma.open(scratch / "full_pretrain_buckets.gz", "wb") as f:
        pickle.dump(collection, f)
    return collection


def full_bucket_build(root: str | Path, scratch: str | Path) -> int:
    """The reference's full_pretrain bucket build from scratch; writes ``scratch/full_pretrain_buckets.gz`` and
    returns the frames in the bucket."""
    return int(_build(Path(root), Path(scratch))["trainable_frames"])


def _sample(meta_path: str, box_path: str) -> dict[str, Any]:
    """What ``CARLAData.__getitem__`` builds per frame with ``build_buckets=True``, up to its route features."""
    meta = load_lzma_pickle(meta_path)
    data: dict[str, Any] = {"perturbate_sensor": False, "route_number": meta_path.split("/")[-3],
                            "frame_number": meta_path.split("/")[-1].split(".")[0]}
    data.update(meta)
    for key in _DROPPED:
        data.pop(key, None)
    data["boxes"] = load_lzma_pickle(box_path)
    data.update(route_dir="/".join(box_path.split("/")[:-2]), seq=int(box_path.split("/")[-1].split(".")[0]))
    for attr in _NON_NUMERIC:
        value = meta.get(attr)
        if attr == "vehicle_door_side":
            data[attr] = "NA" if value is None else (value[0] if isinstance(value, list) else value)
        else:
            data[attr] = value
    for attr in _NUMERIC:
        if attr in meta:
            data[attr] = np.inf if meta[attr] is None else float(meta[attr])
    for attr in ("current_active_scenario_type", "previous_active_scenario_type"):
        if meta.get(attr) is None:
            data[attr] = "NA"
    current, previous = data["current_active_scenario_type"], data["previous_active_scenario_type"]
    data["scenario_type"] = current if current != "NA" else previous if previous != "NA" else "NA"
    return data


def property_bucket_build(root: str | Path, scratch: str | Path) -> int:
    """The full build (`full_bucket_build`), then the per-frame reads of the reference's property-mined build
    over the bucket's frames; returns the frames read."""
    bucket = _build(Path(root), Path(scratch))["buckets"][0]
    n = 0
    for meta_path, box_path in zip(bucket["metas"], bucket["bboxes"], strict=True):
        _sample(str(meta_path, "utf-8"), str(box_path, "utf-8"))
        n += 1
    return n
