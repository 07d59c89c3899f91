"""The LEAD raw route format: dataset configs (`config`), route discovery and the failed-route filter
(`routes`), per-modality readers (`frame`, which needs OpenCV and laspy), the checks of a meta's values (`metas`),
the restricted unpickler (`pickles`).

See ``docs/format.md`` §1-§3 for the specification this package implements. Names are imported from their
module on first use, so the reading side, which needs `config` and `routes` only, never loads cv2 or laspy.
"""

from leadio.lazy import lazy_exports

_HOME = {
    "DATASET_CONFIGS": "leadio.format.config", "DatasetConfig": "leadio.format.config",
    "UnknownDatasetError": "leadio.format.config", "dataset_config_for_root": "leadio.format.config",
    "FrameReadError": "leadio.format.errors", "RouteError": "leadio.format.errors",
    "UnsafePickleError": "leadio.format.errors",
    "MODALITIES": "leadio.format.frame", "REQUIRED_META_KEYS": "leadio.format.frame", "VIEWS": "leadio.format.frame",
    "check_rgb_jpeg": "leadio.format.frame", "frame_file": "leadio.format.frame", "read_frame": "leadio.format.frame",
    "meta_problems": "leadio.format.metas",
    "load_lzma_pickle": "leadio.format.pickles", "loads_restricted": "leadio.format.pickles",
    "FRAME_FOLDERS": "leadio.format.routes", "RouteInfo": "leadio.format.routes",
    "discover_routes": "leadio.format.routes", "frame_names": "leadio.format.routes",
    "list_frames": "leadio.format.routes",
    "route_filter_reason": "leadio.format.routes", "trainable_routes_on_disk": "leadio.format.routes",
}
__all__ = sorted(_HOME)
__getattr__, __dir__ = lazy_exports(__name__, _HOME)
