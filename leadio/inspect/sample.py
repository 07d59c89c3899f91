"""One sample to look at, from a shard set (by row or sample key) or straight from a raw route (route + frame).

Both paths end in the loader's own decoder (`leadio.decode.cpu.decode_batch`): a shard sample is read by
`leadio.dataset.SampleDataset` (what training reads), a raw frame is preprocessed in memory by
`leadio.preprocess.preprocess_frame` (what the shard builder stores) and decoded the same way. So the two
agree exactly when the shard set is current, and a picture of a raw frame shows what training would get.

The descriptive fields (town, weather, speed...) come from the shard set's catalog or, for a raw frame, from
the frame's meta, the source the catalog copies them from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leadio.format.config import dataset_config_for_root
from leadio.format.frame import read_meta
from leadio.format.routes import RouteInfo, discover_routes
from leadio.shard.shardset import ShardSet, open_shard_set

__all__ = ["COMMANDS", "InspectError", "InspectSample", "from_raw", "from_shard_set", "resolve_route"]

#: LEAD's command one-hot order (leadio.targets.command_onehot)
COMMANDS = ("LEFT", "RIGHT", "STRAIGHT", "LANEFOLLOW", "CHANGELANELEFT", "CHANGELANERIGHT")
#: planning-target fields drawn or captioned
_TARGET_KEYS = ("waypoints", "route", "previous_target_point", "target_point", "next_target_point", "command",
                "next_command", "target_speed", "speed", "brake", "has_targets", "num_boxes")


class InspectError(ValueError):
    """Bad input to inspect (unknown sample key, route, frame out of range...); the message says the fix."""


@dataclass
class InspectSample:
    """One decoded sample plus what a caption needs.

    Attributes:
        key: the sample key (``<Scenario>/<Route>/NNNN``).
        route, frame, num_frames: the raw route (``data/<Scenario>/<Route>``), the frame and the route's length.
        view: ``"normal"`` or ``"perturbated"``.
        arrays: ``rgb`` (H, W, 3) uint8, ``semantic`` (H, W), ``depth`` (H/4, W/4), ``lidar`` (320, 384)
            counts, ``bev_semantic`` (320, 384), ``boxes`` (num_boxes, 9) CenterNet rows, and the planning
            targets of `_TARGET_KEYS` (NaN when the frame has none).
        info: scenario, scenario_type, town, weather, speed (m/s), target_speed (m/s), brake.
        bucket: the shard set's bucket holding the sample (None for a raw frame).
        source: where it was read from, for the caption.
        dropped: why LEAD's route filter drops the route ('' when kept; raw routes only).
    """

    key: str
    route: str
    frame: int
    num_frames: int
    view: str
    arrays: dict[str, np.ndarray]
    info: dict
    bucket: str | None = None
    source: str = ""
    dropped: str = ""

    @property
    def has_targets(self) -> bool:
        return bool(self.arrays["has_targets"] > 0.5)

    def command(self, name: str = "command") -> str:
        """The command (or ``next_command``) as LEAD's name; ``"-"`` without targets."""
        onehot = self.arrays[name]
        return COMMANDS[int(np.argmax(onehot))] if self.has_targets and np.isfinite(onehot).all() else "-"


def _check_view(view: str) -> None:
    if view not in ("normal", "perturbated"):
        raise InspectError(f"view must be 'normal' or 'perturbated', got {view!r}")


def _from_batch(batch: dict) -> dict[str, np.ndarray]:
    """Decoded fields of one sample (numpy or torch, no batch axis) -> the arrays of `InspectSample`."""
    def get(k: str) -> np.ndarray:
        v = batch[k]
        return np.array(v.numpy() if hasattr(v, "numpy") else v)

    out = {"rgb": np.ascontiguousarray(get("rgb").transpose(1, 2, 0)), "semantic": get("semantic"),
           "depth": get("depth"), "lidar": get("lidar")[0], "bev_semantic": get("bev_semantic")}
    for k in _TARGET_KEYS:
        out[k] = get(k).astype(np.float32)
    out["boxes"] = get("boxes")[: int(out["num_boxes"])]
    return out


def _info(scenario: str, scenario_type: str, town: str, weather: str, speed: float, target_speed: float,
          brake: bool) -> dict:
    return {"scenario": str(scenario), "scenario_type": str(scenario_type), "town": str(town),
            "weather": str(weather), "speed": float(np.float32(speed)), "target_speed": float(np.float32(target_speed)),
            "brake": bool(brake)}


def from_shard_set(shard_set: str | Path | ShardSet, *, index: int | None = None, key: str | None = None,
                   view: str = "normal") -> InspectSample:
    """The sample at catalog row ``index`` or with sample key ``key`` of a shard set.

    Raises:
        InspectError: neither or both of index/key, an index out of range, an unknown key.
        ShardSetError: the set is missing, incomplete or stale (its message says how to rebuild).
    """
    from leadio.dataset import SampleDataset

    _check_view(view)
    ss = shard_set if isinstance(shard_set, ShardSet) else open_shard_set(shard_set)
    cat = ss.catalog
    n = len(cat)
    if (index is None) == (key is None):
        raise InspectError("give exactly one of a sample index (--index) or a sample key (--key)")
    if key is not None:
        hits = np.flatnonzero(cat["sample_key"] == key)
        if not len(hits):
            raise InspectError(f"sample key {key!r} is not in shard set {ss.path} ({n} samples; keys look like "
                               f"{str(cat['sample_key'][0])!r}); list them with --list")
        index = int(hits[0])
    if not -n <= index < n:
        raise InspectError(f"index {index} is outside shard set {ss.path}: it has {n} samples (0..{n - 1})")
    row = index % n
    sample = SampleDataset(ss, view=view)[row]
    buckets = ss.manifest.get("buckets") or []
    b = int(cat["bucket"][row]) if "bucket" in cat.columns else -1
    return InspectSample(
        key=str(cat["sample_key"][row]), route=str(cat["route"][row]), frame=int(cat["frame"][row]),
        num_frames=int(cat["route_num_frames"][row]), view=view, arrays=_from_batch(sample),
        info=_info(cat["scenario"][row], cat["scenario_type"][row], cat["town"][row], cat["weather"][row],
                   cat["speed"][row], cat["target_speed"][row], cat["brake"][row]),
        bucket=buckets[b]["name"] if 0 <= b < len(buckets) else None,
        source=f"shard set {ss.path.name}, row {row}")


def resolve_route(root: str | Path, route: str) -> RouteInfo:
    """A route given as ``data/<Scenario>/<Route>``, ``<Scenario>/<Route>`` or just ``<Route>``.

    Raises:
        InspectError: no such route, or a bare name that several scenarios hold.
    """
    routes = discover_routes(root)
    text = route.strip().rstrip("/").removeprefix("./")
    hits = [r for r in routes if text in (r.rel_path, r.rel_path.removeprefix("data/"), r.name)
            or r.rel_path.removeprefix("data/").replace(".", "_") == text]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise InspectError(f"route {route!r} is ambiguous under {root}: {[r.rel_path for r in hits]}; give "
                           f"<Scenario>/<Route>")
    shown = ", ".join(r.rel_path for r in routes[:3]) + (f" ... ({len(routes)} routes)" if len(routes) > 3 else "")
    raise InspectError(f"route {route!r} not found under {Path(root) / 'data'}; routes there: {shown or 'none'}")


def from_raw(root: str | Path, route: str, frame: int, *, view: str = "normal",
             dataset_config: str | None = None) -> InspectSample:
    """Frame ``frame`` of a raw route, preprocessed in memory as the shard builder would store it.

    Raises:
        InspectError: unknown route, frame out of range.
        FrameReadError: a file of the frame is missing or malformed (names it).
    """
    from leadio.decode.cpu import decode_batch
    from leadio.preprocess import preprocess_frame
    from leadio.schema import DEFAULT_KEYS, member_layout, member_name, members_for_keys
    from leadio.shard.jobs import sample_key

    _check_view(view)
    root = Path(root)
    info = resolve_route(root, route)
    if not 0 <= frame < info.num_frames:
        raise InspectError(f"frame {frame} is out of range: route {info.rel_path} has {info.num_frames} frames "
                           f"(0..{info.num_frames - 1})")
    config = dataset_config_for_root(root, dataset_config)
    route_dir = info.path(root)
    members = preprocess_frame(route_dir, frame, config)
    wanted = members_for_keys(DEFAULT_KEYS, member_layout(config))
    raw = {name: [members[member_name(m, view)]] for name, m in wanted.items()}
    raw.update(row=np.zeros(1, np.int64), view=np.array([view == "perturbated"], np.uint8))
    batch, failures = decode_batch(raw, wanted)
    if failures:
        raise InspectError(f"route {info.rel_path} frame {frame}: {failures[0]}")
    meta = read_meta(route_dir, frame)
    scenario_type = meta.get("current_active_scenario_type") or meta.get("previous_active_scenario_type") or "NA"
    return InspectSample(
        key=sample_key(info.rel_path, frame), route=info.rel_path, frame=frame, num_frames=info.num_frames,
        view=view, arrays=_from_batch({k: v[0] for k, v in batch.items()}),
        info=_info(info.scenario, scenario_type, meta["town"], meta["weather_setting"], meta["speed"],
                   meta["target_speed"], meta["brake"]),
        source=f"raw route, frame {frame}", dropped=info.filter_reason or "")
