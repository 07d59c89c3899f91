"""leadio: fast, trustworthy loading of LEAD CARLA driving data.

The public API is small; everything else lives in the step modules (format, catalog, buckets, shard, plan,
read, decode, dataset)::

    import leadio
    loader = leadio.open_dataset("<root>/shards/full_pretrain-<hash>", batch_size=16)

Names are imported on first use, so ``python -m leadio.synth`` or a catalog scan does not pay for torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)

__all__ = [
    "__version__",
    "Bucket",
    "BucketCollection",
    "LeadLoader",
    "SampleDataset",
    "ShardSet",
    "build_shard_set",
    "load_or_build",
    "open_dataset",
    "open_shard_set",
]

_HOME = {
    "Bucket": "leadio.buckets", "BucketCollection": "leadio.buckets", "load_or_build": "leadio.buckets",
    "LeadLoader": "leadio.dataset", "SampleDataset": "leadio.dataset", "open_dataset": "leadio.dataset",
    "ShardSet": "leadio.shard", "build_shard_set": "leadio.shard", "open_shard_set": "leadio.shard",
}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'leadio' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
