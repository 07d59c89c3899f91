"""LEAD's `build_buckets_posttrain.py`: writes <root>/buckets/full_posttrain_buckets_8_8_8_5.gz."""

import sys

from leadio.buckets.__main__ import main

if __name__ == "__main__":
    sys.exit(main(default_collection="full_posttrain"))
