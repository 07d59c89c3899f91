"""Shard sets: bucket-grouped WebDataset tar shards + DALI indexes + a Zarr catalog + a manifest.

`build_shard_set` writes one (``python -m leadio.shard``), `open_shard_set` opens it for reading after the
staleness checks, `verify_shard_set` checks it byte for byte.
"""

from leadio.shard.build import BuildReport, build_shard_set, merge_shard_set, plan_shards, sample_key, shard_set_dir
from leadio.shard.shardset import ShardSet, ShardSetError, StaleShardSetError, open_shard_set
from leadio.shard.verify import VerifyReport, verify_shard_set

__all__ = [
    "BuildReport",
    "ShardSet",
    "ShardSetError",
    "StaleShardSetError",
    "VerifyReport",
    "build_shard_set",
    "merge_shard_set",
    "open_shard_set",
    "plan_shards",
    "sample_key",
    "shard_set_dir",
    "verify_shard_set",
]
