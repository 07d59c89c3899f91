"""Bucket collections: which frames an epoch draws from, and at what rate.

`collection` (the `BucketCollection` and its file), `specs` (specs and stored files, read-only: the
reading side's part), `builders` (build and refresh collections from the catalog: the building side's part).
"""

from leadio.lazy import lazy_exports

_HOME = {
    "Bucket": "leadio.buckets.collection", "BucketCollection": "leadio.buckets.collection",
    "BucketFileError": "leadio.buckets.collection", "rate_at": "leadio.buckets.collection",
    "SHIPPED": "leadio.buckets.specs", "load_current": "leadio.buckets.specs",
    "ReadOnlyRootError": "leadio.buckets.specs",
    "BUILDERS": "leadio.buckets.builders", "load_or_build": "leadio.buckets.builders",
    "property_collection": "leadio.buckets.builders",
}
__all__ = sorted(_HOME)
__getattr__, __dir__ = lazy_exports(__name__, _HOME)
