"""Benchmarks of leadio: loader throughput against the reference ways of loading LEAD data (raw files, LEAD's
persistent cache, plain webdataset over our shards) and against the decode ceiling; a GPU check of the DALI path.

Run them as modules from the repository root, e.g. ``python -m benchmarks.loader_throughput --root R``.
"""
