"""``python -m benchmarks.loader_throughput``: see `benchmarks.loader_throughput`."""

from benchmarks.loader_throughput import main

if __name__ == "__main__":
    # Keep multiprocessing from re-running this file as __mp_main__ in every process it starts (the fork server
    # has the package preloaded, see MODULE, and runpy would warn).
    __spec__ = None
    globals().pop("__file__", None)
    raise SystemExit(main())
