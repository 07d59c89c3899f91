"""JPEG decoders on the CPU: simplejpeg (the ``cpu`` backend) against DALI's ``decoders.image`` (the ``dali``
backend without a GPU). ``python -m benchmarks.jpeg_decoders --root R [--threads 1,2]``.

Decodes the first ``--images`` JPEG members of the shard sets under ``R/shards`` into a reused batch buffer
(batches of ``--batch``), with 1..N threads each running its own decoder (for DALI: a one-thread pipeline per
thread, so each decoder's rate is measured on its own cores). Prints images/s per decoder, with and without
DALI's copy into the batch buffer, the DALI/simplejpeg ratio, and whether both decode every image to the same
pixels. This bounds the ``dali`` row of `benchmarks.loader_throughput` on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import simplejpeg
import torch


def jpeg_members(root: Path, limit: int) -> list[bytes]:
    blobs: list[bytes] = []
    for path in sorted((root / "shards").glob("*/*/*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".jpg"):
                    blobs.append(tar.extractfile(member).read())
                    if len(blobs) == limit:
                        return blobs
    if not blobs:
        raise SystemExit(f"{root}/shards: no shard with JPEG members (build one with python -m leadio.shard)")
    return blobs


def dali_pipeline(batch: int):
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=batch, num_threads=1, device_id=None, prefetch_queue_depth=1, exec_dynamic=True)
    def pipe():
        jpegs = fn.external_source(name="jpeg", dtype=types.UINT8, ndim=1, no_copy=False)
        return fn.decoders.image(jpegs, device="cpu", output_type=types.RGB, jpeg_fancy_upsampling=True)

    p = pipe()
    p.build()
    return p


def run(decoder: str, batches: list[list[bytes]], shape: tuple, threads: int, copy: bool) -> float:
    """Images/s of ``threads`` threads, each decoding every batch once into its own reused buffer."""
    from nvidia.dali.plugin.pytorch import feed_ndarray

    ready = threading.Barrier(threads + 1)

    def work():
        out = torch.empty((len(batches[0]), *shape), dtype=torch.uint8)
        pipe = dali_pipeline(len(batches[0])) if decoder == "dali" else None
        ready.wait()
        for blobs in batches:
            if pipe is None:
                for i, blob in enumerate(blobs):
                    simplejpeg.decode_jpeg(blob, colorspace="RGB", buffer=out[i].numpy())
            else:
                pipe.feed_input("jpeg", [np.frombuffer(b, np.uint8) for b in blobs])
                (images,) = pipe.run()
                if copy:
                    feed_ndarray(images.as_tensor(), out)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    ready.wait()  # pipelines built: time the decoding only
    start = time.perf_counter()
    for t in pool:
        t.join()
    return threads * sum(map(len, batches)) / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="dataset root with built shard sets")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    args = parser.parse_args(argv)
    blobs = jpeg_members(args.root, args.images)
    n = len(blobs) // args.batch * args.batch
    batches = [blobs[i : i + args.batch] for i in range(0, n, args.batch)]
    h, w, _, _ = simplejpeg.decode_jpeg_header(blobs[0])
    shape = (h, w, 3)
    pipe = dali_pipeline(len(batches[0]))
    pipe.feed_input("jpeg", [np.frombuffer(b, np.uint8) for b in batches[0]])
    same = np.array_equal(pipe.run()[0].as_array(), np.stack([simplejpeg.decode_jpeg(b, "RGB") for b in batches[0]]))
    for threads in (int(t) for t in args.threads.split(",")):
        run("simplejpeg", batches[:1], shape, threads, True)  # warm-up
        sj = run("simplejpeg", batches, shape, threads, True)
        dali_copy = run("dali", batches, shape, threads, True)
        dali = run("dali", batches, shape, threads, False)
        print(json.dumps({"threads": threads, "images": n, "simplejpeg_img_s": round(sj), "dali_img_s": round(dali),
                          "dali_copied_img_s": round(dali_copy), "dali_over_simplejpeg": round(dali / sj, 3),
                          "dali_copied_over_simplejpeg": round(dali_copy / sj, 3), "same_pixels": bool(same)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
