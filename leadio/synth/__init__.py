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

This package: `world` (road, junctions, statics, constants), `drive` (the expert and the actors), `render`
(cameras, LiDAR, radar, LAZ), `scene` (one simulated route), `writers` (one frame's files, results.json),
`records` (`RouteSpec`, `RouteStats`, `SynthSummary`), `generate` (routes to disk) and `cli`.
"""

from leadio.synth.cli import main
from leadio.synth.generate import generate_root, generate_route
from leadio.synth.records import RouteSpec, RouteStats, SynthSummary, route_spec

__all__ = ["RouteSpec", "RouteStats", "SynthSummary", "generate_root", "generate_route", "main", "route_spec"]
