"""`to_lead_batch`: a leadio batch -> LEAD's batch dict; `LeadBatches`: a loader yielding them, with the large
float outputs in reused buffers (`LeadBuffers`). The quirks kept are listed in `leadio.lead`'s docstring."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from leadio.engine import BatchRing
from leadio.lead.targets import centernet_targets, radar_detections
from leadio.schema import DEPTH_MAX_M, LIDAR_HIST_MAX, Member

__all__ = ["LeadBatches", "LeadBuffers", "to_lead_batch"]

DEPTH_RESOLUTION_RATIO = 4  # meta dataset_information.save_depth_resolution_ratio
SOURCE_DATASET_CARLA = 1  # lead.common.constants.SourceDataset.CARLA
# leadio target field -> LEAD key (float64 in LEAD's batch)
_TARGET_KEYS = {"target_point": "target_point", "next_target_point": "target_point_next",
                "previous_target_point": "target_point_previous", "command": "command",
                "next_command": "next_command", "speed": "speed", "target_speed": "target_speed"}  # fmt: skip
_PLANNING_KEYS = {"waypoints": "future_waypoints", "waypoint_yaws": "future_yaws", "route": "route"}


def _upsample_depth(metres: Tensor, out: Tensor | None = None) -> Tensor:
    """(B, h, w) float32 metres -> (B, h*r, w*r), r = DEPTH_RESOLUTION_RATIO, bilinear with half-pixel centres,
    written into ``out`` (a contiguous CPU float32 tensor of that shape) when given.

    On the CPU this is the reference's own ``cv2.resize(..., INTER_LINEAR)`` per sample, written into one
    output (3x faster than ``F.interpolate`` here: 30 against 100 ms for a batch of 64 on one core); on another
    device ``F.interpolate(align_corners=False)``, the same sampling (the two differ by <= 2 float32 ulp).
    """
    size = (metres.shape[-2] * DEPTH_RESOLUTION_RATIO, metres.shape[-1] * DEPTH_RESOLUTION_RATIO)
    if metres.device.type != "cpu":
        return F.interpolate(metres[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    import cv2

    src = metres.contiguous().numpy()
    out = torch.empty((len(src), *size)) if out is None else out
    dst = out.numpy()
    for i in range(len(src)):
        cv2.resize(src[i], (size[1], size[0]), dst=dst[i], interpolation=cv2.INTER_LINEAR)
    return out


def to_lead_batch(batch: dict, device: str | torch.device | None = None, *, planning: bool = False,
                  out: dict[str, Tensor] | None = None) -> dict:
    """A leadio batch -> the batch LEAD's ``CARLAData`` + collate gives (the module docstring lists the quirks).

    Keys come from whichever leadio keys the batch holds: ``rgb``; ``lidar`` -> ``rasterized_lidar``;
    ``semantic``; ``depth``; ``bev_semantic`` -> ``bev_semantic`` and ``hdmap``; ``boxes`` ->
    ``center_net_*``, ``radar_detections``; ``radar`` -> ``radar``, ``radar1``..``radar4``; the targets ->
    target points, commands, speeds, ``scenario_type_id``, perturbation values; always ``perturbate_sensor``,
    ``source_dataset`` and the logger's timing keys.

    Args:
        batch: a `LeadLoader` batch (CPU or device tensors).
        device: where to build it (default: where the batch is).
        planning: LEAD's ``use_planning_decoder``: add ``future_waypoints``, ``future_yaws``, ``route``,
            ``route_labels_curvature``; ``brake`` becomes bool (float64 without).
        out: CPU buffers to write ``depth`` and ``rasterized_lidar`` into (contiguous float32 of their LEAD
            shapes), instead of fresh memory: `LeadBatches` lends them from a ring of reused buffers, which
            saves the page faults of 144 MB per batch of 64 (``python -m benchmarks.lead_convert``).

    Raises:
        ValueError: ``planning`` and a sample without waypoints (a frame in a route's last 8; use a
            post-training collection); a batch without the keys ``planning`` needs.
    """
    dev = torch.device(device) if device is not None else batch["row"].device
    if planning:
        missing = [k for k in (*_PLANNING_KEYS, "has_targets") if k not in batch]
        if missing:
            raise ValueError(f"to_lead_batch(planning=True) needs the batch keys {missing}; load 'targets'")
        lacking = (batch["has_targets"] <= 0.5).nonzero().flatten().tolist()
        if lacking:
            rows = batch["row"][lacking].tolist()
            raise ValueError(f"to_lead_batch(planning=True): catalog rows {rows[:5]} have no 8 future waypoints "
                             "(last 8 frames of a route); train the planner on a post-training collection")

    def get(key: str) -> Tensor:
        return batch[key].to(dev, non_blocking=True)

    n = len(batch["row"])
    buffers = _check_buffers(out, batch) if out is not None and dev.type == "cpu" else {}
    out = {}
    if "rgb" in batch:
        out["rgb"] = get("rgb")
    if "lidar" in batch:  # reference: counts / 5 computed in float64, stored float32 (== float32 division)
        lidar = get("lidar")
        buf = buffers.get("rasterized_lidar")
        # copy, then divide in place: 2.5x faster than one mixed-dtype torch.div(uint8, 5, out=float32 buffer)
        out["rasterized_lidar"] = (lidar.float() if buf is None else buf.copy_(lidar)).div_(LIDAR_HIST_MAX)
    if "semantic" in batch:
        out["semantic"] = get("semantic")
    if "depth" in batch:  # decode_depth_8bit, float32
        out["depth"] = _upsample_depth(get("depth").float().div_(255).mul_(DEPTH_MAX_M), buffers.get("depth"))
    if "bev_semantic" in batch:
        out["bev_semantic"] = out["hdmap"] = get("bev_semantic")  # reference: one array
    if "boxes" in batch:
        boxes = get("boxes").float()
        out["center_net_bounding_boxes"] = boxes
        out.update({f"center_net_{k}": v for k, v in centernet_targets(boxes).items()})
        out["radar_detections"] = radar_detections(boxes)
    if "radar" in batch:
        radar = get("radar").float()
        out["radar"] = radar
        per = radar.shape[1] // 4
        out.update({f"radar{i + 1}": radar[:, i * per : (i + 1) * per].contiguous() for i in range(4)})
    if "target_point" in batch:
        out.update({lead: get(key).double() for key, lead in _TARGET_KEYS.items()})
        out["previous_command"] = out["command"]  # reference: cmd[0] for both (§9.4)
        out["scenario_type_id"] = get("scenario_type_id").long()
        out["perturbation_translation"] = get("perturbation_translation").double()
        out["perturbation_rotation"] = get("perturbation_rotation").double()
        brake = get("brake")
        out["brake"] = brake > 0.5 if planning else brake.double()
    if planning:
        out.update({lead: get(key).double() for key, lead in _PLANNING_KEYS.items()})
        route = out["route"]
        out["route_labels_curvature"] = torch.atan2(route[..., 1], route[..., 0]).abs().mean(-1)
    out["perturbate_sensor"] = get("view") == 1
    out["source_dataset"] = torch.full((n,), SOURCE_DATASET_CARLA, dtype=torch.int64, device=dev)
    for key in ("loading_time", "loading_meta_time", "loading_sensor_time"):
        out[key] = torch.zeros(n, dtype=torch.float64, device=dev)
    return out


def _buffer_shapes(batch: dict) -> dict[str, tuple[int, ...]]:
    """Per-sample shapes of the outputs `to_lead_batch` can write into buffers, for the keys the batch holds."""
    shapes = {}
    if "depth" in batch:
        h, w = batch["depth"].shape[-2:]
        shapes["depth"] = (h * DEPTH_RESOLUTION_RATIO, w * DEPTH_RESOLUTION_RATIO)
    if "lidar" in batch:
        shapes["rasterized_lidar"] = tuple(batch["lidar"].shape[1:])
    return shapes


def _check_buffers(out: dict[str, Tensor], batch: dict) -> dict[str, Tensor]:
    """``out`` of `to_lead_batch`, checked against the shapes the batch gives; a clear error otherwise."""
    n = len(batch["row"])
    expected = {key: (n, *shape) for key, shape in _buffer_shapes(batch).items()}
    unknown = sorted(set(out) - {"depth", "rasterized_lidar"})
    if unknown:
        raise ValueError(f"to_lead_batch(out=...): buffers are taken for 'depth' and 'rasterized_lidar' only, "
                         f"got {unknown}")
    for key, buf in out.items():
        if key in expected and (tuple(buf.shape) != expected[key] or buf.dtype != torch.float32
                                or buf.device.type != "cpu" or not buf.is_contiguous()):
            raise ValueError(f"to_lead_batch(out=...): buffer {key!r} is {buf.dtype} {tuple(buf.shape)} on "
                             f"{buf.device} (contiguous: {buf.is_contiguous()}); this batch needs a contiguous "
                             f"CPU float32 {expected[key]}")
    return out


class LeadBuffers:
    """Reused CPU buffers for `to_lead_batch`'s two large float outputs (``depth``, ``rasterized_lidar``: 144 MB
    per batch of 64), lent from a `leadio.engine.BatchRing`: a buffer is written again only once no tensor of
    the batch that held it is alive, so a batch the user keeps is never overwritten.

    ``buffers(batch, device)`` gives the ``out=`` dict for that batch, or None when it is built off the CPU.
    """

    def __init__(self):
        self._ring, self._members = None, None
        self._lock = threading.Lock()  # lent from several decode threads at once

    def __call__(self, batch: dict, device: str | torch.device | None = None) -> dict[str, Tensor] | None:
        dev = torch.device(device) if device is not None else batch["row"].device
        if dev.type != "cpu":
            return None
        members = {key: Member(key, "f32", "raw", "float32", shape) for key, shape in _buffer_shapes(batch).items()}
        if not members:
            return None
        n = len(batch["row"])
        with self._lock:
            if self._ring is None or self._ring.batch_size != n or self._members != members:
                self._ring, self._members = BatchRing(members, n), members
            ring = self._ring
        return ring.lend(ring.acquire())

    def __getstate__(self):  # the ring and the lock: a copy starts with none (non-empty: __setstate__ runs)
        return {"_ring": None, "_members": None}

    def __setstate__(self, state):
        self.__init__()


class LeadBatches:
    """A `LeadLoader` yielding `to_lead_batch` dicts; everything else (``set_epoch``, ``state_dict``,
    ``load_state_dict``, ``len``, ``stats`` ...) is the loader's.

    Built on the CPU with two or more decode threads, each batch is converted by the decode thread that decoded
    it, right after (through `LeadLoader.iterate`), so the consumer's thread only hands it over and the
    conversion scales with the threads; with one thread the consumer converts while the thread decodes the
    next batch; a batch built on a GPU is converted in the consumer's thread. ``loading_time`` is the consumer's
    wait for the batch, per sample.

    Args:
        loader: the compact loader.
        device: where batches are built (default: where the loader puts them).
        planning: LEAD's ``use_planning_decoder``; None: True when every frame the collection plans has 8
            future waypoints (a post-training collection), from the shard set's catalog.
    """

    def __init__(self, loader, device: str | torch.device | None = None, planning: bool | None = None):
        self.loader, self.device = loader, device
        self.planning = _all_frames_have_waypoints(loader) if planning is None else bool(planning)
        self._buffers = LeadBuffers()

    def __iter__(self) -> Iterator[dict]:
        # a LeadLoader with 2+ decode threads: the threads build the batches. With one thread the consumer
        # converts while the thread decodes the next batch, which measured ~10% faster at batch 64 (575 against
        # 524 samples/s); with none, both run in the consumer either way.
        threads = getattr(self.loader, "num_workers", 0)
        iterate = getattr(self.loader, "iterate", None) if threads >= 2 else None
        # what the threads run holds no reference to self (nor the loader): their last reference dropped in a
        # decode thread would close the threads from one of them
        build = functools.partial(_build, self.device, self.planning, self._buffers)
        batches = iter(self.loader) if iterate is None else iterate(build)
        try:
            while True:
                start = time.perf_counter()
                try:
                    item = next(batches)
                except StopIteration:
                    return
                waited = time.perf_counter() - start  # the consumer's wait for the batch (loading_time)
                out = item.batch if isinstance(item, _Built) else \
                    to_lead_batch(item, self.device, planning=self.planning, out=self._buffers(item, self.device))
                out["loading_time"] = out["loading_sensor_time"] = torch.full_like(out["loading_time"],
                                                                                   waited / len(out["loading_time"]))
                yield out
                del out, item  # not alive while the next one is built: its buffers can be reused for it
        finally:
            if hasattr(batches, "close"):  # ends the loader's iteration now (it refuses a second one meanwhile)
                batches.close()

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):
        if name == "loader":  # not yet set (unpickling)
            raise AttributeError(name)
        return getattr(self.loader, name)


class _Built:
    """A LEAD batch a decode thread built (told apart from a compact batch left to the consumer)."""

    __slots__ = ("batch",)

    def __init__(self, batch: dict):
        self.batch = batch


def _build(device: str | torch.device | None, planning: bool, buffers: LeadBuffers, batch: dict) -> _Built | dict:
    """In a decode thread, right after it decoded ``batch``: the LEAD batch when it is built on the CPU (in
    ``buffers``); a batch built on a GPU is left to the consumer's thread (its stream is the consumer's)."""
    dev = torch.device(device) if device is not None else batch["row"].device
    if dev.type != "cpu":
        return batch
    return _Built(to_lead_batch(batch, device, planning=planning, out=buffers(batch, device)))


def _all_frames_have_waypoints(loader) -> bool:
    """Whether every frame of the loader's collection lies 8 or more frames before its route's end."""
    cat = loader.shard_set.catalog
    rows = np.concatenate([np.zeros(0, np.int64), *loader.bucket_rows])
    frames, lengths = np.asarray(cat["frame"])[rows], np.asarray(cat["route_num_frames"])[rows]
    return bool(len(rows)) and bool(np.all(frames < lengths - 8))
