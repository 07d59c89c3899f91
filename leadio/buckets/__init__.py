"""Bucket collections: which frames an epoch draws from, and at what rate (see `collection`, `builders`)."""

from leadio.buckets.builders import (
    BUILDERS,
    SHIPPED,
    bucket_file_name,
    build_collection,
    full_collection,
    load_or_build,
    property_collection,
    trainable_routes_on_disk,
)
from leadio.buckets.collection import Bucket, BucketCollection, BucketFileError, RouteChanges, rate_at

__all__ = [
    "BUILDERS",
    "SHIPPED",
    "Bucket",
    "BucketCollection",
    "BucketFileError",
    "RouteChanges",
    "bucket_file_name",
    "build_collection",
    "full_collection",
    "load_or_build",
    "property_collection",
    "rate_at",
    "trainable_routes_on_disk",
]
