"""LEAD's `build_buckets_pretrain.py`: writes <root>/buckets/full_pretrain_buckets.gz (see leadio.buckets)."""

import sys

from leadio.buckets.__main__ import main

if __name__ == "__main__":
    sys.exit(main(default_collection="full_pretrain"))
