"""The timed steps, each run in a fresh process: ``python -m benchmarks.control_plane.steps STEP ROOT OUT OPTIONS``.

The child imports what its step needs, then for each (sub)step resets its peak RSS (``/proc/self/clear_refs``:
the kernel's VmHWM restarts from the current RSS), times the public call and reads VmHWM, and writes one JSON
object to OUT. So a step's peak is what the process held while the step ran (its imports included), never an
earlier step's. The parent (`benchmarks.control_plane.bench`) also reads the child's ``ru_maxrss`` (os.wait4).

Steps (leadio's through its public CLIs and APIs):

- ``catalog``: ``leadio catalog --root R --workers W --quiet`` on a root without a catalog;
- ``buckets``: ``leadio buckets --root R --collection full_pretrain --workers W`` (no bucket file yet: the
  catalog is checked for staleness, then the collection built and saved);
- ``shard``: ``leadio shard --root R --workers W --samples-per-shard S --quiet`` (a fresh set);
- ``loader``: ``open_dataset(R, batch_size=B, world_size=WS, rank=0, backend="cpu", num_workers=0)`` (shard-set
  open, which plans epoch 0 to check the batch size), then ``loader.plan(1)`` (a fresh epoch's plan) and
  ``loader.state_dict()`` (saved as JSON, as a checkpoint holds it);
- ``resume``: a resumed rank: a fresh process opens the loader again (untimed) and times
  ``load_state_dict(state)``;
- ``posttrain_buckets``: ``leadio buckets --collection full_posttrain`` (so that the report finds both of its
  default collections current, as after a normal workflow);
- ``report``: ``leadio report --root R`` (both default collections);
- ``ref_full`` and ``ref_property``: the reference's bucket builds, reproduced (see `benchmarks.control_plane
  .reference`).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["STEPS", "peak_rss_mib", "reset_peak", "rss_mib", "run_step"]

MIB = 1024 * 1024


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024 / MIB
    return float("nan")


def rss_mib() -> float:
    """This process's resident set now (MiB)."""
    return _status("VmRSS")


def peak_rss_mib() -> float:
    """This process's peak resident set since its start or the last `reset_peak` (MiB)."""
    return _status("VmHWM")


def reset_peak() -> bool:
    """Restart the peak-RSS counter from the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _measure(name: str, call: Callable[[], Any], out: list[dict]) -> Any:
    gc.collect()
    base, reset = rss_mib(), reset_peak()
    t0 = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - t0
    out.append({"step": name, "seconds": seconds, "peak_rss_mib": peak_rss_mib(), "base_rss_mib": base,
                "peak_isolated": reset})
    return result


def _cli(main: Callable[[list[str]], int], argv: list[str]) -> Callable[[], None]:
    def call() -> None:
        rc = main(argv)
        if rc:
            raise SystemExit(f"{argv}: exit code {rc}")
    return call


def _catalog(root: Path, opts: dict, out: list[dict]) -> None:
    from leadio.catalog import main

    _measure("catalog", _cli(main, ["--root", str(root), "--workers", str(opts["workers"]), "--quiet"]), out)


def _buckets(root: Path, opts: dict, out: list[dict], collection: str = "full_pretrain",
             name: str = "buckets") -> None:
    from leadio.buckets.__main__ import main

    _measure(name, _cli(main, ["--root", str(root), "--collection", collection, "--workers", str(opts["workers"])]),
             out)


def _posttrain(root: Path, opts: dict, out: list[dict]) -> None:
    _buckets(root, opts, out, "full_posttrain", "posttrain_buckets")


def _shard(root: Path, opts: dict, out: list[dict]) -> None:
    from leadio.shard.__main__ import main

    _measure("shard", _cli(main, ["--root", str(root), "--workers", str(opts["shard_workers"]), "--quiet",
                                  "--samples-per-shard", str(opts["samples_per_shard"])]), out)


def _loader_kwargs(opts: dict) -> dict:
    return {"batch_size": opts["batch_size"], "world_size": opts["world_size"], "rank": 0, "backend": "cpu",
            "num_workers": 0}


def _state_path(opts: dict) -> Path:
    return Path(opts["scratch"]) / "loader_state.json"


def _loader(root: Path, opts: dict, out: list[dict]) -> None:
    from leadio.dataset import open_dataset

    loader = _measure("open", lambda: open_dataset(root, **_loader_kwargs(opts)), out)
    plan = _measure("plan", functools.partial(loader.plan, 1), out)
    out[-1]["rank_samples"] = len(plan)
    state = _measure("state_dict", loader.state_dict, out)
    out[-1]["samples"] = int(state["samples"])
    _state_path(opts).parent.mkdir(parents=True, exist_ok=True)
    _state_path(opts).write_text(json.dumps(state))  # what a checkpoint stores: plain JSON
    loader.close()


def _resume(root: Path, opts: dict, out: list[dict]) -> None:
    """A resumed rank: a fresh process opens the loader (untimed here: that is ``open``), then loads the state
    the ``loader`` step saved."""
    from leadio.dataset import open_dataset

    state = json.loads(_state_path(opts).read_text())
    loader = open_dataset(root, **_loader_kwargs(opts))
    _measure("load_state_dict", functools.partial(loader.load_state_dict, state), out)
    loader.close()


def _report(root: Path, opts: dict, out: list[dict]) -> None:
    from leadio.cli import main

    with contextlib.redirect_stdout(sys.stderr):  # the report's table goes to the step's log
        _measure("report", _cli(main, ["report", "--root", str(root)]), out)


def _ref_full(root: Path, opts: dict, out: list[dict]) -> None:
    from benchmarks.control_plane.reference import full_bucket_build

    frames = _measure("ref_full", lambda: full_bucket_build(root, Path(opts["scratch"])), out)
    out[-1]["frames"] = frames


def _ref_property(root: Path, opts: dict, out: list[dict]) -> None:
    from benchmarks.control_plane.reference import property_bucket_build

    frames = _measure("ref_property", lambda: property_bucket_build(root, Path(opts["scratch"])), out)
    out[-1]["frames"] = frames


#: step -> the (sub)steps it reports, in order, and the function that runs them in the child
STEPS: dict[str, tuple[tuple[str, ...], Callable[[Path, dict, list[dict]], None]]] = {
    "catalog": (("catalog",), _catalog),
    "buckets": (("buckets",), _buckets),
    "ref_full": (("ref_full",), _ref_full),
    "ref_property": (("ref_property",), _ref_property),
    "shard": (("shard",), _shard),
    "loader": (("open", "plan", "state_dict"), _loader),
    "resume": (("load_state_dict",), _resume),
    "posttrain_buckets": (("posttrain_buckets",), _posttrain),
    "report": (("report",), _report),
}


def run_step(step: str, root: Path, opts: dict) -> list[dict]:
    """Run ``step`` in this process; one record per substep."""
    out: list[dict] = []
    STEPS[step][1](root, opts, out)
    return out


def main(argv: list[str] | None = None) -> int:
    step, root, out_path, opts = (argv if argv is not None else sys.argv[1:])
    records = run_step(step, Path(root), json.loads(opts))
    Path(out_path).write_text(json.dumps(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
