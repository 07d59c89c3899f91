"""leadio: fast, trustworthy loading of LEAD CARLA driving data.

The public API is small; everything else lives in the step modules (format, catalog, buckets, shard, plan,
read, decode, dataset)::

    import leadio
    loader = leadio.open_dataset("<root>/shards/full_pretrain-<hash>", batch_size=16)

Names are imported on first use, so ``python -m leadio.synth`` or a catalog scan does not pay for torch.
"""

from leadio.lazy import lazy_exports

__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)

_HOME = {
    "Bucket": "leadio.buckets.collection", "BucketCollection": "leadio.buckets.collection",
    "load_or_build": "leadio.buckets.builders",
    "LeadLoader": "leadio.dataset", "SampleDataset": "leadio.dataset", "open_dataset": "leadio.dataset",
    "LoaderConfig": "leadio.loader_config",
    "ShardSet": "leadio.shard.shardset", "open_shard_set": "leadio.shard.shardset",
    "build_shard_set": "leadio.shard.build",
    "LeadBatches": "leadio.lead.batch", "to_lead_batch": "leadio.lead.batch",
}
__all__ = ["__version__", *sorted(_HOME)]
__getattr__, _dir = lazy_exports(__name__, _HOME)


def __dir__() -> list[str]:
    return sorted(__all__)
