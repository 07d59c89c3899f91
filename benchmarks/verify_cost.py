"""Cost of read-time verification: loader samples/s with and without per-member hash checks, in one run.

    python -m benchmarks.verify_cost [--root R] [--rounds 5] [--batch-size 8]

Builds (or reuses) the shard set of a synthetic root, then alternates epochs with ``verify=True`` and
``verify=False`` (CPU backend, all keys, no worker processes, so the hash cost is not hidden behind
parallelism) and prints the best samples/s of each and their ratio; then the same for the read + reference
decode of every sample (min over interleaved rounds: steadier than whole epochs on a busy machine), and the
raw xxh3-64 time per sample. Ratios from one run are comparable; absolute figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import xxhash


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="outputs/verify_cost/data/carla_leaderboard2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    from leadio.dataset import SampleDataset, open_dataset
    from leadio.shard.build import build_shard_set
    from leadio.synth import generate_root

    root = Path(args.root)
    if not (root / "data").is_dir():
        generate_root(root, num_routes=4, frames_per_route=20, seed=3, workers=1, progress=False)
    set_dir = build_shard_set(root, workers=1, samples_per_shard=8, progress=False).set_dir
    best = {True: 0.0, False: 0.0}
    blobs: list[bytes] = []
    for _ in range(args.rounds):
        for verify in (False, True):
            loader = open_dataset(set_dir, batch_size=args.batch_size, backend="cpu", verify=verify, seed=1)
            t0 = time.perf_counter()
            n = sum(len(b["row"]) for b in loader)
            best[verify] = max(best[verify], n / (time.perf_counter() - t0))
    ss = loader.shard_set
    samples = SampleDataset(ss)
    per_sample = {True: [], False: []}  # read + decode of every sample (one view), interleaved rounds
    for _ in range(args.rounds):
        for verify in (False, True):
            ss.verify = verify
            t0 = time.perf_counter()
            for row in range(len(ss)):
                samples[row]
            per_sample[verify].append((time.perf_counter() - t0) / len(ss))
    for row in range(len(ss)):
        blobs += [ss.read_member_bytes(row, m) for m in ss.members if m.endswith("_n." + m.rsplit(".", 1)[-1])]
    t0 = time.perf_counter()
    for b in blobs:
        xxhash.xxh3_64_intdigest(b)
    hash_s = time.perf_counter() - t0
    out = {"samples_per_s_verify": round(best[True], 1), "samples_per_s_no_verify": round(best[False], 1),
           "ratio_verify_over_no_verify": round(best[True] / best[False], 3),
           "read_decode_ms_verify": round(min(per_sample[True]) * 1e3, 3),
           "read_decode_ms_no_verify": round(min(per_sample[False]) * 1e3, 3),
           "read_decode_ratio_verify_over_no_verify": round(min(per_sample[True]) / min(per_sample[False]), 4),
           "hash_ms_per_sample": round(hash_s / len(ss) * 1e3, 4),
           "xxh3_64_GB_per_s": round(sum(map(len, blobs)) / hash_s / 1e9, 2), "samples": len(ss),
           "batch_size": args.batch_size, "rounds": args.rounds}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
