"""The batch in the reference loader's format: what LEAD's ``CARLAData`` + its collate give, built on the device.

`to_lead_batch` turns a leadio batch (`leadio.schema`) into the dict the reference TransFuser/TFv6 code
reads, key for key: names, dtypes, shapes and values of kesai-labs/lead at 4489176 (docs/format.md §4, §9), so
its model, losses and logger run unchanged. `centernet_targets` is the one implementation of the CenterNet
targets (leadtrain's losses call it too). `LeadBatches` wraps a `LeadLoader` (``open_dataset(...,
output="lead")``).

Modules: `leadio.lead.targets` (CenterNet targets, radar detection labels), `leadio.lead.batch` (the batch
dict, `LeadBuffers`, `LeadBatches`).

Where the spec and the reference's code differ, the reference wins (each is marked "reference:" below):

- ``center_net_*``: LEAD draws every one of the 90 rows, the zero padding too: a sample with fewer than 90
  boxes gets a class-0 box of size 0 at cell (0, 0) (radius 2, pixel weight 1, zero regression targets that
  overwrite a real box there; it counts in avg_factor). ``num_boxes=None`` keeps that; leadtrain passes
  ``num_boxes`` to ignore the padding.
- Yaw class / residual are LEAD's ``angle2class`` in float64 (numpy 1.26 promotes float32 box values to
  float64 there); the CornerNet radius too. The Gaussian kernels are numpy's float32 ``gaussian2d`` values
  (a lookup table built on the host), so heatmaps are bit-equal to LEAD's on any device.
- ``rgb`` is the loader's tensor: LEAD's values, shape and dtype, in channels-last memory (LEAD's collate
  gives a contiguous one; torch ops accept either layout, and a copy would cost 85 MB per batch of 64). Every
  other tensor is contiguous.
- ``hdmap`` is the same tensor as ``bev_semantic`` (LEAD merges the boxes into the map array in place).
- ``previous_command`` equals ``command`` (both keypoint 0, §9.4).
- ``perturbation_translation`` / ``_rotation`` hold the meta's values for both views (LEAD's numeric-meta
  copy overwrites the 0 it sets for the normal view).
- ``brake`` is bool with ``planning=True`` (``use_planning_decoder``: LEAD copies the meta's bool) and float64
  without (only the numeric-meta copy exists then).
- ``radar_detections`` drop a box whose metric centre is exactly (0, 0) (LEAD's padding test).
- Target points, commands, speeds, waypoints and route are float64 (numpy float64 in LEAD; stored here as
  float32, so they equal LEAD's within float32 rounding).

Not reproduced: the imgaug colour augmentation (random; ``use_color_aug``), and the timing keys
(``loading_time`` ... hold leadio's wait for the batch, split evenly, or 0 from `to_lead_batch`).
"""

from leadio.lead.batch import LeadBatches, LeadBuffers, to_lead_batch
from leadio.lead.targets import centernet_targets, radar_detections

__all__ = ["LeadBatches", "LeadBuffers", "centernet_targets", "radar_detections", "to_lead_batch"]
