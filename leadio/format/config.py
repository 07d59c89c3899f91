"""Named dataset configurations: the sensor setup a LEAD root was recorded with.

LEAD picks its target from the dataset root path (a root whose path contains ``carla_leaderboard2`` is the
3-camera Leaderboard-2 rig). We do the same, and also accept an explicit name. Every number that a later
stage needs (image size, LiDAR BEV ranges, depth ratio, BEV crop) lives here, so no stage hard-codes it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from leadio.schema import LIDAR_HIST_MAX

__all__ = [
    "remembered_config","DATASET_CONFIGS", "DatasetConfig", "UnknownDatasetError", "dataset_config_for_root"]


@dataclass(frozen=True, kw_only=True)
class DatasetConfig:
    """Sensor setup of one LEAD target.

    Attributes:
        name: the config's name, also the root substring that selects it.
        image_width, image_height: size of the camera strip in pixels (W x H).
        num_cameras: cameras concatenated left to right in the strip.
        camera_fov_deg: horizontal field of view of each camera.
        camera_yaws_deg, camera_positions: per camera yaw and (x, y, z) mount position in the ego frame.
        jpeg_quality: JPEG quality the expert stored images with.
        depth_resolution_ratio: depth PNG is downscaled by this factor in both axes.
        depth_max_m: 8-bit depth v encodes v/255 * depth_max_m metres.
        lidar_min_x, lidar_max_x, lidar_min_y, lidar_max_y: BEV range in metres (ego frame).
        lidar_min_z, lidar_max_z: points outside are dropped before the histogram.
        pixels_per_meter: BEV resolution.
        lidar_hist_max_per_pixel: histogram cap.
        lidar_time_steps: number of LiDAR sweeps accumulated in one .laz (``time`` 0..n-1).
        hdmap_size, hdmap_pixels_per_meter: the raw hdmap PNG.
        max_num_bbs: boxes are padded or truncated to this many rows.
    """

    name: str
    image_width: int
    image_height: int
    num_cameras: int
    camera_fov_deg: float
    camera_yaws_deg: tuple[float, ...]
    camera_positions: tuple[tuple[float, float, float], ...]
    jpeg_quality: int = 30
    depth_resolution_ratio: int = 4
    depth_max_m: float = 50.0
    lidar_min_x: float = -32.0
    lidar_max_x: float = 64.0
    lidar_min_y: float = -40.0
    lidar_max_y: float = 40.0
    lidar_min_z: float = -4.0
    lidar_max_z: float = 10.0
    pixels_per_meter: float = 4.0
    lidar_hist_max_per_pixel: int = LIDAR_HIST_MAX
    lidar_time_steps: int = 5
    hdmap_size: int = 256
    hdmap_pixels_per_meter: float = 2.0
    max_num_bbs: int = 90

    @property
    def depth_width(self) -> int:
        return self.image_width // self.depth_resolution_ratio

    @property
    def depth_height(self) -> int:
        return self.image_height // self.depth_resolution_ratio

    @property
    def bev_width(self) -> int:
        """BEV columns (x axis, rear to front)."""
        return round((self.lidar_max_x - self.lidar_min_x) * self.pixels_per_meter)

    @property
    def bev_height(self) -> int:
        """BEV rows (y axis, left to right)."""
        return round((self.lidar_max_y - self.lidar_min_y) * self.pixels_per_meter)

    def to_dict(self) -> dict:
        return asdict(self)


LEADERBOARD2 = DatasetConfig(
    name="carla_leaderboard2",
    image_width=1152,
    image_height=384,
    num_cameras=3,
    camera_fov_deg=60.0,
    camera_yaws_deg=(-54.5, 0.0, 54.5),
    camera_positions=((0.1, -0.35, 2.25), (0.35, 0.0, 2.25), (0.1, 0.35, 2.25)),
)

#: Known configs by name. To add one, append a DatasetConfig here (its name is the root substring that
#: selects it) or pass ``dataset_config=DatasetConfig(...)`` to the functions that take one.
DATASET_CONFIGS: dict[str, DatasetConfig] = {LEADERBOARD2.name: LEADERBOARD2}


class UnknownDatasetError(ValueError):
    """The root's path names no known dataset config and none was given."""


def remembered_config(root: str | Path) -> str | None:
    """The dataset config the root's catalog was built with (``<root>/catalog.zarr``'s attributes), if any: a
    root whose path names no config needs ``--dataset-config`` once, then every step finds it here."""
    path = Path(root) / "catalog.zarr" / "zarr.json"
    try:
        name = json.loads(path.read_text()).get("attributes", {}).get("dataset_config")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def dataset_config_for_root(root: str | Path, name: str | None = None) -> DatasetConfig:
    """Pick the dataset config for ``root`` as LEAD does, or by explicit ``name``, or as its catalog remembers.

    Args:
        root: the dataset root (``<carla_root>``); its resolved path is searched for a known config name, then
            its catalog's record (`remembered_config`).
        name: an explicit config name; overrides the path rule.

    Raises:
        UnknownDatasetError: the name is unknown, or neither the root's path nor its catalog names a config.
    """
    known = ", ".join(sorted(DATASET_CONFIGS))
    how = (
        f"scan it once with `python -m leadio.catalog --root {root} --dataset-config <name>` (the root's catalog "
        "remembers it for every later step and the trainer), put the data under a folder named after a config "
        "(LEAD's default root is data/carla_leaderboard2), or add a DatasetConfig to "
        "leadio.format.config.DATASET_CONFIGS"
    )
    if name is not None:
        if name not in DATASET_CONFIGS:
            raise UnknownDatasetError(f"unknown dataset config {name!r}; known configs: {known}. To add one, {how}")
        return DATASET_CONFIGS[name]
    path = str(Path(root).resolve())
    for config_name, config in DATASET_CONFIGS.items():
        if config_name in path:
            return config
    remembered = remembered_config(root)
    if remembered in DATASET_CONFIGS:
        return DATASET_CONFIGS[remembered]
    raise UnknownDatasetError(
        f"cannot tell the sensor setup of dataset root {path!r}: its path contains none of the known config "
        f"names ({known}) and it has no catalog that names one. To fix it, {how}"
    )
