"""LEAD's `python scripts/build_buckets_pretrain.py`: writes <root>/buckets/full_pretrain_buckets.gz.

Run as LEAD's guide does, from the folder holding data/carla_leaderboard2 (the default --root); see --help.
"""

import sys

from leadio.buckets.__main__ import main

if __name__ == "__main__":
    sys.exit(main(default_collection="full_pretrain", prog="python scripts/build_buckets_pretrain.py"))
