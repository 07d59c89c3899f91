"""The LEAD raw route format: route discovery, the failed-route filter, per-modality readers.

See ``docs/format.md`` §1-§3 for the specification this package implements.
"""

from leadio.format.config import DATASET_CONFIGS, DatasetConfig, UnknownDatasetError, dataset_config_for_root
from leadio.format.errors import FrameReadError, RouteError, UnsafePickleError
from leadio.format.frame import MODALITIES, REQUIRED_META_KEYS, VIEWS, frame_file, read_frame
from leadio.format.pickles import load_lzma_pickle, loads_restricted
from leadio.format.routes import FRAME_FOLDERS, RouteInfo, discover_routes, list_frames, route_filter_reason

__all__ = [
    "DATASET_CONFIGS",
    "FRAME_FOLDERS",
    "MODALITIES",
    "REQUIRED_META_KEYS",
    "VIEWS",
    "DatasetConfig",
    "FrameReadError",
    "RouteError",
    "RouteInfo",
    "UnknownDatasetError",
    "UnsafePickleError",
    "dataset_config_for_root",
    "discover_routes",
    "frame_file",
    "list_frames",
    "load_lzma_pickle",
    "loads_restricted",
    "read_frame",
    "route_filter_reason",
]
