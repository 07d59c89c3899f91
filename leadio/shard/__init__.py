"""Shard sets: bucket-grouped WebDataset tar shards + DALI indexes + a Zarr catalog + a manifest.

`build` writes one (``python -m leadio.shard``; `jobs` and `tarwriter` do one shard), `shardset` opens it
for reading after the staleness checks, `verify` checks it byte for byte.
"""

from leadio.lazy import lazy_exports

_HOME = {
    "build_shard_set": "leadio.shard.build", "merge_shard_set": "leadio.shard.build",
    "shard_set_dir": "leadio.shard.build", "BuildReport": "leadio.shard.build",
    "ShardSet": "leadio.shard.shardset", "ShardSetError": "leadio.shard.shardset",
    "StaleShardSetError": "leadio.shard.shardset", "open_shard_set": "leadio.shard.shardset",
    "verify_shard_set": "leadio.shard.verify", "VerifyReport": "leadio.shard.verify",
}
__all__ = sorted(_HOME)
__getattr__, __dir__ = lazy_exports(__name__, _HOME)
