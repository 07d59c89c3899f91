"""Cost of the LEAD-format conversion vs decoding: ``python -m benchmarks.lead_convert [--root R]``.

Takes 64 samples (both views of 32 frames) of a dataset root (default: a small synthetic one in a temporary
folder), runs them through the preprocessing pipeline once, then times per batch of 64 on the CPU:

- ``decode``: the member bytes -> leadio's compact batch by the loader's own decoder
  (`leadio.decode.cpu.decode_batch`), single-threaded as in one decode thread;
- ``convert``: `leadio.lead.to_lead_batch` on that batch (torch ops, CPU), with and without ``planning``, and
  as `leadio.lead.LeadBatches` runs it (``reused``: depth and LiDAR written into a ring of reused buffers);
  with ``--device cuda`` also built on the GPU from the (pinned) CPU batch, the copy included.

Prints one JSON line: ms per batch (median of ``--repeat``, after ``--warmup`` untimed conversions) and
convert/decode. Timings on a shared machine
are noisy; the ratio is the figure to compare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from leadio.decode.cpu import decode_batch
from leadio.format.config import DATASET_CONFIGS
from leadio.lead import LeadBuffers, to_lead_batch
from leadio.preprocess import preprocess_frame
from leadio.schema import member_layout, member_name

BATCH = 64


def raw_samples(root: Path, config) -> list[tuple[dict[str, bytes], str]]:
    """(member bytes of one sample, view) for 32 frames with 8 future waypoints, both views."""
    routes = sorted(p for p in (root / "data").glob("*/*") if (p / "metas").is_dir())
    frames = [(r, f) for r in routes for f in range(1, len(list((r / "metas").glob("*.pkl"))) - 8)]
    if len(frames) < BATCH // 2:
        raise SystemExit(f"{root}: {len(frames)} frames with 8 future waypoints, need {BATCH // 2}")
    out = []
    for route, frame in frames[: BATCH // 2]:
        members = preprocess_frame(route, frame, config)
        out += [(members, "normal"), (members, "perturbated")]
    return out


def decode(samples: list[tuple[dict[str, bytes], str]], layout: dict) -> dict[str, torch.Tensor]:
    """The loader's compact batch of ``samples``, decoded by the loader's own decoder (one core)."""
    raw: dict = {name: [members[member_name(m, view)] for members, view in samples] for name, m in layout.items()}
    raw["row"] = np.arange(len(samples))
    raw["view"] = np.array([v == "perturbated" for _, v in samples], np.uint8)
    batch, failures = decode_batch(raw, layout, tensors=True)
    if failures:
        raise SystemExit(f"samples do not decode: {failures}")
    return batch


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="dataset root (default: synthetic, 2 routes x 26 frames)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=10, help="untimed conversions first (steady state)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (convert)")
    parser.add_argument("--device", default=None, help="also time the conversion onto this device (e.g. cuda)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = DATASET_CONFIGS["carla_leaderboard2"]
    with tempfile.TemporaryDirectory(prefix="leadio-lead-convert-") as tmp:
        root = args.root
        if root is None:
            from leadio.synth import generate_root

            root = Path(tmp) / "data" / "carla_leaderboard2"
            generate_root(root, num_routes=2, frames_per_route=26, seed=0, workers=1, progress=False)
        samples = raw_samples(root, config)
    layout = member_layout(config)
    batch = decode(samples, layout)
    for _ in range(args.warmup):  # kernel tables, and the allocator and page tables reach their steady state
        to_lead_batch(batch)
    decode_ms = timed(lambda: decode(samples, layout), args.repeat)
    convert_ms = timed(lambda: to_lead_batch(batch), args.repeat)
    planning_ms = timed(lambda: to_lead_batch(batch, planning=True), args.repeat)
    buffers = LeadBuffers()  # as LeadBatches converts: depth and LiDAR written into reused buffers
    for _ in range(args.warmup):
        to_lead_batch(batch, out=buffers(batch))
    reused_ms = timed(lambda: to_lead_batch(batch, out=buffers(batch)), args.repeat)
    result = {"batch": BATCH, "threads": args.threads, "decode_ms": round(decode_ms, 1),
              "convert_ms": round(convert_ms, 1), "convert_planning_ms": round(planning_ms, 1),
              "convert_reused_ms": round(reused_ms, 1), "convert_over_decode": round(convert_ms / decode_ms, 3),
              "convert_reused_over_decode": round(reused_ms / decode_ms, 3)}
    if args.device:
        pinned = {k: v.pin_memory() if args.device.startswith("cuda") else v for k, v in batch.items()}

        def on_device():
            out = to_lead_batch(pinned, args.device, planning=True)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return out

        on_device()
        device_ms = timed(on_device, args.repeat)
        result.update({"device": args.device, "device_convert_ms": round(device_ms, 1),
                       "device_convert_over_decode": round(device_ms / decode_ms, 3)})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
