"""LEAD's persistent cache, rebuilt as leadio shards: `python scripts/build_cache.py --root R [...]`.

Same arguments as `python -m leadio.shard` (see its --help).
"""

import sys

from leadio.shard.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
