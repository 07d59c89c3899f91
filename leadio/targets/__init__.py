"""One raw LEAD frame -> the fixed-shape training arrays of docs/format.md §4 (pure numpy + OpenCV, no I/O).

Input is the dict of `leadio.format.read_frame`. With ``perturbated=True`` every geometric label gets
P(t, r) (§0) from meta's ``perturbation_translation`` (m) and ``perturbation_rotation`` (deg). The hdmap
and radar twins are already rendered from the shifted pose: for that view the caller passes
``hdmap_perturbated`` / ``radar_perturbated`` and they get no P here. Outputs: `lidar_bev_histogram` uint8
(1, 320, 384) counts (§4.2; /5 at decode), `bev_semantic` uint8 (320, 384) (§4.5), `box_rows` float32
(90, 9) + count (§3 filters, §4.6 rows), `planning_targets` -> `leadio.schema.pack_targets` 292-byte
record (§4.7), `radar_input` float16 (300, 5).

Fidelity: the rules are LEAD's own code (kesai-labs/lead data_loader/carla_dataset[_utils].py,
tfv6/planning_decoder.py), not a simplification: relabelling uses LEAD's tables (emergency and biker
``type_id`` sets, the parked-vehicle ``mesh_path`` extent table, cone/warning sizes, scenario-type lists,
the opened-door widening), and the cone/warning, scenario-obstacle and traffic-light hulls are filled.
Deliberate differences:

- LiDAR BEV is stored as uint8 counts; `lidar_bev_to_float` gives LEAD's float32 bit for bit. LEAD reads
  LAS coordinates as float64; a float32 reader can move a point lying within one float32 ulp of an edge.
- ValueError where LEAD asserts, crashes or emits NaN: fewer than 41 future positions (LEAD silently drops
  the key), fewer than 2 distinct target points, a route with fewer than 2 distinct points or a zero-length
  step, a negative target speed, a missing meta key.
- The two-hot is computed in float64 -> float32 (LEAD encodes it on the device in the training dtype).
- Boxes: a missing ``num_points`` / ``visible_pixels`` means unknown (-1), a missing or None ``brake`` 0.
- ``previous_command`` is not stored: it always equals ``command`` (§9.4).
- The radar box filter is closed, [min, max], as in LEAD's code.

This package: `common` (LEAD's training constants and tables, shared box helpers, P(t, r)), `lidar` (LiDAR
histogram, radar input), `boxes`, `bev` and `planning`. The format facts the reader shares (box classes and
columns, the packed planning record, scenario types) are in `leadio.schema`.
"""

from leadio.targets.bev import bev_semantic
from leadio.targets.boxes import box_rows
from leadio.targets.common import LIDAR_USED_TIME_STEPS, perturb_points, perturb_yaw
from leadio.targets.lidar import lidar_bev_histogram, lidar_bev_to_float, radar_input
from leadio.targets.planning import planning_targets

__all__ = [
    "LIDAR_USED_TIME_STEPS", "bev_semantic", "box_rows", "lidar_bev_histogram", "lidar_bev_to_float",
    "perturb_points", "perturb_yaw", "planning_targets", "radar_input",
]  # fmt: skip
