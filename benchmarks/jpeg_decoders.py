"""JPEG decoders on the CPU: simplejpeg (the ``cpu`` backend) against DALI's ``decoders.image`` (the ``dali``
backend without a GPU). ``python -m benchmarks.jpeg_decoders --root R [--threads 1,2]``.

Decodes the first ``--images`` JPEG members of the shard sets under ``R/shards`` into a reused batch buffer
(batches of ``--batch``), with 1..N threads each running its own decoder (for DALI: a one-thread pipeline per
thread: the loader's `leadio.decode.dali.DaliDecoder`, its copy into the batch buffer included, as the
loader runs it). Prints images/s per decoder, the DALI/simplejpeg ratio, and whether both decode every image
to the same pixels. This bounds the ``dali`` row of `benchmarks.loader_throughput` on a machine without a GPU.
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

from leadio.decode.dali import DaliDecoder


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


def run(decoder: str, batches: list[list[bytes]], shape: tuple, threads: int) -> float:
    """Images/s of ``threads`` threads, each decoding every batch once into its own reused buffer."""
    ready = threading.Barrier(threads + 1)

    def work():
        out = torch.empty((len(batches[0]), *shape), dtype=torch.uint8)
        dali = DaliDecoder(len(batches[0]), "cpu", num_threads=1) if decoder == "dali" else None
        if dali is not None:
            dali.decode_jpegs(batches[0], out=out)  # the pipeline is built on first use: not timed
        ready.wait()
        for blobs in batches:
            if dali is None:
                for i, blob in enumerate(blobs):
                    simplejpeg.decode_jpeg(blob, colorspace="RGB", buffer=out[i].numpy())
            else:
                dali.decode_jpegs(blobs, out=out)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    ready.wait()
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
    dali = DaliDecoder(len(batches[0]), "cpu", num_threads=1).decode_jpegs(batches[0])
    same = np.array_equal(dali, np.stack([simplejpeg.decode_jpeg(b, "RGB") for b in batches[0]]))
    for threads in (int(t) for t in args.threads.split(",")):
        run("simplejpeg", batches[:1], shape, threads)  # warm-up
        sj = run("simplejpeg", batches, shape, threads)
        dali_rate = run("dali", batches, shape, threads)
        print(json.dumps({"threads": threads, "images": n, "simplejpeg_img_s": round(sj),
                          "dali_img_s": round(dali_rate), "dali_over_simplejpeg": round(dali_rate / sj, 3),
                          "same_pixels": bool(same)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
