"""LEAD's persistent cache, rebuilt as leadio shards: `python scripts/build_cache.py [--root R] [...]`.

Run as LEAD's guide does, from the folder holding data/carla_leaderboard2 (the default --root). Same arguments
as `python -m leadio.shard` (see --help).
"""

import sys

from leadio.shard.__main__ import main

if __name__ == "__main__":
    sys.exit(main(prog="python scripts/build_cache.py"))
