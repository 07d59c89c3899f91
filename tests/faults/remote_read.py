"""``python remote_read.py URL CACHE_DIR CACHE_BYTES``: read every sample's targets of a remote set through a
session cache; prints one JSON line {"rows": [[row, checksum], ...], "batches": n}."""

from __future__ import annotations

import json
import sys


def read_all(url: str, cache_dir: str, cache_bytes: int) -> dict:
    from leadio.dataset import open_dataset

    loader = open_dataset(url, batch_size=2, backend="cpu", keys=["targets", "lidar"], seed=1, cache_dir=cache_dir,
                          cache_bytes=cache_bytes, shuffle="block", block_shards=1)
    rows = []
    for b in loader:
        for i, r in enumerate(b["row"].tolist()):
            rows.append([r] + [round(float(b[k][i].double().nansum()), 3) for k in sorted(b)
                               if k not in ("row", "view")])
    return {"rows": rows, "batches": loader.stats.batches}


if __name__ == "__main__":
    print(json.dumps(read_all(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
