"""GPU check of the DALI path: leadio's ``dali`` backend with ``mixed`` JPEG decoding against the ``cpu`` backend.

    python -m benchmarks.gpu_check --root R [--samples 512] [--batch-size 32] [--workers 8] [--passes 3]

On a machine with an NVIDIA GPU and DALI this

1. opens the root's ``full_pretrain`` shard set (building it when missing) and plans the first ``--samples``
   samples of epoch 0 (both views, ``--perturbation-rate`` 0.5 as LEAD), the same plan for both loaders;
2. iterates ``open_dataset(backend="cpu")`` and ``open_dataset(backend="dali", device="cuda")`` in lockstep and
   compares every tensor: ``rgb`` (decoded by nvJPEG through ``fn.decoders.image(device="mixed")``, which may
   round differently from libjpeg-turbo) within ±1, everything else exactly (NaN == NaN);
3. decodes the same JPEG bytes with stand-alone DALI pipelines — leadio's settings, with
   ``jpeg_fancy_upsampling=True`` (libjpeg-turbo's chroma upsampling) and with ``hw_decoder_load=0`` (no
   hardware JPEG decoder) — and reports each one's difference from simplejpeg, so a failure points at its cause;
4. times both loaders with every tensor delivered on the GPU (the cpu path through pinned memory and a
   non-blocking copy; ``torch.cuda.synchronize()`` ends each pass) and reports samples/s.

Exit status: 0 when everything is within tolerance, 1 when not, 2 when no GPU (or no DALI) is visible.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["compare_batches", "decode_variants", "main"]

RGB_ATOL = 1


def _gpu_problem() -> str | None:
    """Why this machine cannot run the check, or None."""
    if not torch.cuda.is_available():
        return ("no CUDA GPU is visible to torch (torch.cuda.is_available() is False; CUDA build: "
                f"{torch.version.cuda or 'none, this is a CPU-only torch'}); run this on a GPU machine")
    from leadio.decode.dali import dali_available

    ok, why = dali_available()
    return None if ok else why


def compare_batches(cpu: dict, gpu: dict, stats: dict) -> list[str]:
    """Compare one batch of both loaders; update ``stats`` (max abs diff per key, rgb pixel counts)."""
    problems = []
    if set(cpu) != set(gpu):
        problems.append(f"keys differ: only cpu {sorted(set(cpu) - set(gpu))}, only dali {sorted(set(gpu) - set(cpu))}")
    for key in sorted(set(cpu) & set(gpu)):
        a, b = cpu[key], gpu[key]
        if not isinstance(a, torch.Tensor):
            continue
        b = b.cpu()
        if a.dtype != b.dtype or a.shape != b.shape:
            problems.append(f"{key}: cpu {a.dtype}{tuple(a.shape)} vs dali {b.dtype}{tuple(b.shape)}")
            continue
        af, bf = a.double(), b.double()
        nan_a, nan_b = torch.isnan(af), torch.isnan(bf)
        if not torch.equal(nan_a, nan_b):
            problems.append(f"{key}: NaN in different places")
        diff = (af - bf).abs()[~(nan_a | nan_b)]
        d = float(diff.max()) if diff.numel() else 0.0
        stats["max_abs_diff"][key] = max(stats["max_abs_diff"].get(key, 0.0), d)
        if key == "rgb":
            stats["rgb_pixels"] += diff.numel()
            stats["rgb_over_atol"] += int((diff > RGB_ATOL).sum())
            stats["rgb_sum_abs"] += float(diff.sum())
        if d > (RGB_ATOL if key == "rgb" else 0):
            problems.append(f"{key}: max abs diff {d:g} (rows {cpu['row'][:4].tolist()}...)")
    return problems


def decode_variants(jpegs: list[bytes], batch_size: int) -> dict[str, dict[str, float]]:
    """Decode ``jpegs`` with nvJPEG in three DALI configurations; each one's difference from simplejpeg."""
    import simplejpeg
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(num_threads=4, device_id=0, prefetch_queue_depth=1)
    def decode(fancy: bool, hw_load: float):
        data = fn.external_source(name="jpeg", dtype=types.UINT8, ndim=1)
        images = fn.decoders.image(data, device="mixed", output_type=types.RGB, jpeg_fancy_upsampling=fancy,
                                   hw_decoder_load=hw_load)
        return fn.transpose(images, perm=[2, 0, 1])

    reference = [simplejpeg.decode_jpeg(j, colorspace="RGB").transpose(2, 0, 1).astype(np.int16) for j in jpegs]
    out = {}
    for label, fancy, hw_load in (("leadio's settings (DALI defaults)", False, 0.65),
                                  ("jpeg_fancy_upsampling=True", True, 0.65),
                                  ("jpeg_fancy_upsampling=True, hw_decoder_load=0", True, 0.0)):
        pipe = decode(fancy, hw_load, batch_size=batch_size)
        pipe.build()
        worst, over, total = 0, 0, 0
        for a in range(0, len(jpegs), batch_size):
            chunk = jpegs[a:a + batch_size]
            pipe.feed_input("jpeg", [np.frombuffer(j, np.uint8) for j in chunk])
            (images,) = pipe.run()
            decoded = images.as_cpu().as_array().astype(np.int16)
            for img, ref in zip(decoded, reference[a:a + batch_size], strict=True):
                d = np.abs(img - ref)
                worst, over, total = max(worst, int(d.max())), over + int((d > RGB_ATOL).sum()), total + d.size
        out[label] = {"max_abs_diff": worst, "share_over_atol": over / max(total, 1)}
        del pipe
    return out


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _time_loader(loader, passes: int, device: torch.device) -> list[float]:
    """Seconds per pass for delivering every batch, all tensors on ``device``; the first pass is a warm-up."""
    times = []
    for p in range(passes + 1):
        loader.load_state_dict({**loader.state_dict(), "epoch": 0, "consumed": 0})
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for batch in loader:
            _to_device(batch, device)
        torch.cuda.synchronize()
        if p:
            times.append(time.perf_counter() - t0)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, type=Path, help="dataset root (data/carla_leaderboard2)")
    parser.add_argument("--samples", type=int, default=512, help="samples of the plan to check and time")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--passes", type=int, default=3, help="timed passes (after one warm-up pass)")
    parser.add_argument("--perturbation-rate", type=float, default=0.5, help="share of perturbated views")
    args = parser.parse_args(argv)

    problem = _gpu_problem()
    if problem:
        print(f"gpu_check: cannot run: {problem}", file=sys.stderr)
        return 2

    from benchmarks.loader_throughput.bench import choose_rows, chosen_collection, ensure_shard_set
    from benchmarks.reference_loaders import sample_refs
    from leadio.dataset import open_dataset
    from leadio.schema import member_name

    device = torch.device("cuda", 0)
    ss = ensure_shard_set(args.root, workers=os.cpu_count() or 1, samples_per_shard=None)
    n = args.samples // args.batch_size * args.batch_size
    samples = sample_refs(ss, choose_rows(ss, n))
    coll = chosen_collection(samples)
    common = {"collection": coll, "batch_size": args.batch_size, "world_size": 1, "rank": 0, "seed": 0,
              "num_workers": args.workers, "perturbation_rate": args.perturbation_rate, "persistent_workers": True}
    cpu = open_dataset(ss, backend="cpu", pin_memory=True, **common)
    gpu = open_dataset(ss, backend="dali", device="cuda", **common)
    print(f"gpu_check on {torch.cuda.get_device_name(device)}: {n} samples of {ss.path.name}, batch "
          f"{args.batch_size}, {args.workers} workers, perturbation rate {args.perturbation_rate}")

    stats: dict = {"max_abs_diff": {}, "rgb_pixels": 0, "rgb_over_atol": 0, "rgb_sum_abs": 0.0}
    problems: list[str] = []
    for a, b in zip(cpu, gpu, strict=True):
        if b["rgb"].device.type != "cuda":
            problems.append(f"dali rgb is on {b['rgb'].device}, expected cuda (the mixed decoder did not run)")
        problems += compare_batches(a, b, stats)
    mean_rgb = stats["rgb_sum_abs"] / max(stats["rgb_pixels"], 1)
    share = stats["rgb_over_atol"] / max(stats["rgb_pixels"], 1)
    print(f"compared {n} samples: max abs diff per key {stats['max_abs_diff']}; rgb mean abs diff {mean_rgb:.4f}, "
          f"{share:.2e} of rgb values beyond ±{RGB_ATOL}")

    plan = cpu.plan(0)
    views = {int(r): ("normal", "perturbated")[int(v)] for r, v in zip(plan.rows, plan.views, strict=True)}
    rgb = ss.layout["rgb"]
    jpegs = [ss.read_member_bytes(s.row, member_name(rgb, views[s.row])) for s in samples[:4 * args.batch_size]]
    for label, v in decode_variants(jpegs, args.batch_size).items():
        print(f"nvJPEG with {label}: max abs diff {v['max_abs_diff']} vs simplejpeg, "
              f"{v['share_over_atol']:.2e} of values beyond ±{RGB_ATOL}")

    t_cpu = _time_loader(cpu, args.passes, device)
    t_gpu = _time_loader(gpu, args.passes, device)
    print(f"leadio cpu  (+ pinned copy to GPU): {n / float(np.median(t_cpu)):8.1f} samples/s "
          f"(passes {', '.join(f'{t:.2f}s' for t in t_cpu)})")
    print(f"leadio dali (mixed, tensors on GPU): {n / float(np.median(t_gpu)):8.1f} samples/s "
          f"(passes {', '.join(f'{t:.2f}s' for t in t_gpu)})")
    if problems:
        print(f"MISMATCH in {len(problems)} comparisons; first: " + "; ".join(problems[:5]), file=sys.stderr)
        return 1
    print("OK: the dali (mixed) and cpu backends deliver the same tensors (rgb within ±1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
