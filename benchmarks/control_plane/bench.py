"""Run the control-plane benchmark: fabricate a root per size, run every step in a fresh process, fit the
growth, project to 1 M frames and write the JSON and markdown results."""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from benchmarks.control_plane.fabricate import fabricate_root, route_plan
from benchmarks.control_plane.fit import crossing, exponent, last_exponent, project
from benchmarks.control_plane.steps import STEPS

__all__ = ["BUDGETS", "LABELS", "ORDER", "Options", "markdown", "measure_size", "run", "summarise"]

#: The steps in the order they run on each root (each a fresh process).
ORDER = ("catalog", "buckets", "ref_full", "ref_property", "shard", "loader", "resume", "posttrain_buckets",
         "report")
#: Substep -> its row label.
LABELS = {
    "catalog": "catalog scan (`leadio catalog`)",
    "buckets": "bucket build (`leadio buckets`, full_pretrain)",
    "shard": "shard build (`leadio shard`)",
    "open": "shard-set open (`open_dataset`, plans epoch 0)",
    "plan": "epoch plan (a fresh epoch, `loader.plan(1)`)",
    "state_dict": "`loader.state_dict()`",
    "load_state_dict": "`loader.load_state_dict()` (a resumed rank)",
    "posttrain_buckets": "bucket build (full_posttrain, for the report)",
    "report": "`leadio report`",
    "ref_full": "reference: full bucket build (reproduced)",
    "ref_property": "reference: property bucket build, metas+boxes (reproduced)",
    "open+plan": "shard-set open + epoch plan (per rank)",
}
#: What each measured step may cost at 1 M frames (seconds, MiB), and why; "ref" budgets are per frame (below).
GB2 = 2e9 / 2**20
BUDGETS = {
    "open+plan": (10.0, GB2, "the issue's target, per rank"),
    "state_dict": (10.0, GB2, "every rank at every checkpoint (same as open)"),
    "load_state_dict": (10.0, GB2, "every rank at every resume (same as open)"),
    "catalog": ("ref_property", 4096.0, "the issue's target: no slower per frame than the reference's bucket build"
                                        " that reads frames; 4 GiB on a login node"),
    "buckets": ("ref_full", 4096.0, "the reference's own full bucket build per frame; 4 GiB"),
    "report": (300.0, 4096.0, "an interactive command: 5 min, 4 GiB"),
}
TARGET_FRAMES = 1_000_000


@dataclass
class Options:
    frames: list[int]
    out: Path
    scratch: Path
    frames_per_route: int = 100
    workers: int = 1
    shard_workers: int = 2
    samples_per_shard: int = 1500
    world_size: int = 8
    batch_size: int = 8
    fabricate_workers: int = 2
    lock: str | None = None
    keep: bool = False
    progress: bool = True
    command: str = ""
    steps: Sequence[str] = field(default_factory=lambda: ORDER)

    def child_options(self, scratch: Path) -> dict:
        return {"workers": self.workers, "shard_workers": self.shard_workers,
                "samples_per_shard": self.samples_per_shard, "world_size": self.world_size,
                "batch_size": self.batch_size, "scratch": str(scratch)}


@contextmanager
def _locked(path: str | None):
    if path is None:
        yield 0.0
        return
    with open(path, "a") as f:
        t0 = time.perf_counter()
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield time.perf_counter() - t0
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _repo() -> Path:
    return Path(__file__).resolve().parents[2]


def run_child(step: str, root: Path, opts: dict, log: Path, lock: str | None) -> list[dict]:
    """Run ``step`` in a fresh interpreter (under ``lock`` when given); its records, each with the process's
    wall time, ``ru_maxrss`` and the 1-minute load average when it started."""
    out = log.with_suffix(".json")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_repo()), os.environ.get("PYTHONPATH", "")])}
    with _locked(lock) as waited, open(log, "w") as logf:
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.control_plane.steps", step, str(root), str(out),
                                 json.dumps(opts)], stdout=logf, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text()[-2000:].strip().splitlines()
        raise RuntimeError(f"step {step} on {root} failed (exit {proc.returncode}): {tail[-1] if tail else ''} "
                           f"(log: {log})")
    records = json.loads(out.read_text())
    for r in records:
        r.update(process_seconds=wall, process_peak_rss_mib=usage.ru_maxrss / 1024, load1=load,
                 lock_wait_seconds=waited)
    return records


def measure_size(opts: Options, frames: int, bar: tqdm | None = None) -> dict:
    """Fabricate a root of ``frames`` frames, run the steps on it, remove it (unless ``keep``)."""
    base = opts.scratch / f"frames-{frames}"
    root = base / "carla_leaderboard2"  # the name selects LEAD's 3-camera config, as for a real root
    if base.exists():
        shutil.rmtree(base)
    fab = fabricate_root(root, frames, frames_per_route=opts.frames_per_route, workers=opts.fabricate_workers,
                         progress=opts.progress)
    logs = base / "logs"
    logs.mkdir()
    steps: dict[str, dict] = {}
    loads = [os.getloadavg()[0]]
    try:
        for step in opts.steps:
            if bar is not None:
                bar.set_postfix_str(f"{frames} frames: {step}")
            for record in run_child(step, root, opts.child_options(base / "reference"), logs / f"{step}.log",
                                    opts.lock):
                steps[record.pop("step")] = record
            loads.append(os.getloadavg()[0])
            if bar is not None:
                bar.update()
    finally:
        if not opts.keep:
            shutil.rmtree(base, ignore_errors=True)
    return {"frames": frames, "routes": fab.routes, "frames_per_route": opts.frames_per_route,
            "fabricate_seconds": fab.seconds, "fabricated_bytes": fab.bytes, "load1": loads, "steps": steps}


def _per_frame(size: dict, step: str) -> float | None:
    s = size["steps"].get(step)
    return None if s is None else s["seconds"] / size["frames"]


def summarise(sizes: list[dict], target: int = TARGET_FRAMES) -> dict:
    """Exponents, 1 M projections, the targets and the first step to hurt, from the measured sizes."""
    ns = [s["frames"] for s in sizes]
    names = [k for k in sizes[0]["steps"]] if sizes else []
    names += ["open+plan"] if {"open", "plan"} <= set(names) else []

    def series(name: str, key: str) -> list[float]:
        if name == "open+plan":
            if key == "seconds":
                return [s["steps"]["open"]["seconds"] + s["steps"]["plan"]["seconds"] for s in sizes]
            return [max(s["steps"]["open"][key], s["steps"]["plan"][key]) for s in sizes]
        return [s["steps"][name][key] for s in sizes]

    fit = {}
    for name in names:
        t, m = series(name, "seconds"), series(name, "peak_rss_mib")
        fit[name] = {"time_exponent": exponent(ns, t), "time_exponent_last": last_exponent(ns, t),
                     "rss_exponent": exponent(ns, m), "rss_exponent_last": last_exponent(ns, m),
                     "seconds_1m": project(ns, t, target), "peak_rss_mib_1m": project(ns, m, target),
                     "seconds_per_frame": t[-1] / ns[-1]}
    budgets = {}
    for name, (seconds, mib, why) in BUDGETS.items():
        if name not in fit or fit[name]["seconds_1m"] is None:
            continue
        if isinstance(seconds, str):  # a per-frame budget: the reference step's cost per frame, measured
            if seconds not in fit:
                continue
            ref = fit[seconds]["seconds_per_frame"]
            ratio_t = fit[name]["seconds_per_frame"] / ref
            seconds_budget, cross = ref * target, None
        else:
            seconds_budget = seconds
            ratio_t = fit[name]["seconds_1m"] / seconds
            cross = crossing(ns, series(name, "seconds"), seconds)
        ratio_m = fit[name]["peak_rss_mib_1m"] / mib
        cross_m = crossing(ns, series(name, "peak_rss_mib"), mib)
        budgets[name] = {"seconds_budget_1m": seconds_budget, "rss_budget_mib": mib, "why": why,
                         "time_fraction": ratio_t, "rss_fraction": ratio_m,
                         "frames_at_time_budget": cross, "frames_at_rss_budget": cross_m,
                         "met": ratio_t <= 1 and ratio_m <= 1}
    worst = max(budgets, key=lambda k: max(budgets[k]["time_fraction"], budgets[k]["rss_fraction"])) \
        if budgets else None
    per_frame = {s["frames"]: {k: _per_frame(s, k) for k in ("catalog", "ref_property", "ref_full", "buckets")}
                 for s in sizes}
    return {"fit": fit, "budgets": budgets, "first_to_hurt": worst, "per_frame_seconds": per_frame,
            "target_frames": target}


def _f(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x * 1e3:.3f}"


def markdown(doc: dict) -> str:
    """The results as markdown: per size and step the seconds and peak RSS, then exponents, projections,
    targets and the per-frame comparison with the reference."""
    sizes, summ = doc["sizes"], doc["summary"]
    names = list(sizes[0]["steps"]) if sizes else []
    lines = [f"# Control plane at scale ({doc['date']})", "",
             f"Machine: {doc['machine']}. Command: `{doc['command']}`.",
             "Load (1-min average) per size: " + "; ".join(
                 f"{s['frames']:,} frames {min(s['load1']):.2f}–{max(s['load1']):.2f}" for s in sizes) + ".",
             "Roots: " + ", ".join(f"{s['frames']:,} frames = {s['routes']:,} routes" for s in sizes)
             + " (fabricated in " + ", ".join(f"{s['fabricate_seconds']:.0f} s" for s in sizes) + ", not timed).", "",
             "Seconds of the step's call in a fresh process (imports excluded); peak RSS (MiB) of that process while "
             "the step ran (imports included).", "",
             "| step | " + " | ".join(f"{s['frames']:,} frames: s | MiB" for s in sizes) + " |",
             "|---|" + "---:|---:|" * len(sizes)]
    for name in names:
        cells = []
        for s in sizes:
            r = s["steps"][name]
            cells += [_f(r["seconds"], 3), _f(r["peak_rss_mib"], 0)]
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    lines += ["", f"Growth (log-log slope over all sizes; over the two largest in brackets) and the projection to "
                  f"{summ['target_frames']:,} frames (the larger of the power law from the largest size and the "
                  f"straight line through the two largest):", "",
              "| step | time exponent | RSS exponent | s at 1 M | MiB at 1 M |", "|---|---:|---:|---:|---:|"]
    for name, f in summ["fit"].items():
        lines.append(f"| {LABELS.get(name, name)} | {_f(f['time_exponent'])} ({_f(f['time_exponent_last'])}) | "
                     f"{_f(f['rss_exponent'])} ({_f(f['rss_exponent_last'])}) | {_f(f['seconds_1m'], 1)} | "
                     f"{_f(f['peak_rss_mib_1m'], 0)} |")
    lines += ["", "Budgets at 1 M frames (fraction used; > 1 hurts):", "",
              "| step | time budget | fraction | RSS budget MiB | fraction | frames where it is reached | met |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for name, b in summ["budgets"].items():
        reach = [x for x in (b["frames_at_time_budget"], b["frames_at_rss_budget"]) if x is not None]
        lines.append(f"| {LABELS.get(name, name)} ({b['why']}) | {_f(b['seconds_budget_1m'], 1)} s | "
                     f"{_f(b['time_fraction'])} | {_f(b['rss_budget_mib'], 0)} | {_f(b['rss_fraction'])} | "
                     f"{_f(min(reach), 0) if reach else '–'} | {'yes' if b['met'] else '**no**'} |")
    added = [max(s["steps"][k]["peak_rss_mib"] - s["steps"][k]["base_rss_mib"]
                 for k in ("state_dict", "load_state_dict") if k in s["steps"]) for s in sizes
             if "state_dict" in s["steps"]]
    lines += ["", "`state_dict` and `load_state_dict` run in a process that holds an open loader: their peak RSS is "
                  "the rank's loader (see the open row); the calls themselves add "
                  + ", ".join(f"{a:.0f}" for a in added) + " MiB at the sizes above. The reference rows reproduce "
                  "the reference's bucket builds step for step (`benchmarks/control_plane/reference.py` says what)."]
    if summ["first_to_hurt"]:
        lines += ["", f"First to hurt: **{LABELS.get(summ['first_to_hurt'], summ['first_to_hurt'])}** (the largest "
                      f"fraction of its budget at 1 M frames)."]
    lines += ["", "Per frame (ms), catalog scan against the reference's bucket builds on the same roots:", "",
              "| frames | leadio catalog scan | reference property build (metas+boxes) | reference full build "
              "(no frame read) | leadio bucket build |", "|---:|---:|---:|---:|---:|"]
    for n, p in summ["per_frame_seconds"].items():
        lines.append(f"| {int(n):,} | {_ms(p['catalog'])} | {_ms(p['ref_property'])} | {_ms(p['ref_full'])} | "
                     f"{_ms(p['buckets'])} |")
    return "\n".join(lines) + "\n"


def run(opts: Options) -> dict:
    """Measure every size, then write ``out/control_plane.json`` and ``out/control_plane.md``; returns the doc."""
    unknown = sorted(set(opts.steps) - set(STEPS))
    if unknown:
        raise ValueError(f"unknown steps {unknown}; known: {list(STEPS)}")
    for n in opts.frames:
        route_plan(n, opts.frames_per_route)  # checks the sizes before anything is written
    opts.scratch.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(opts.scratch).free
    need = max(opts.frames) * 90_000  # ~30 KB of raw files and ~55 KB of shards per frame
    if free < need:
        raise OSError(f"{opts.scratch} has {free / 1e9:.1f} GB free; {max(opts.frames):,} frames need about "
                      f"{need / 1e9:.1f} GB: pass --scratch on a larger disk")
    sizes = []
    with tqdm(total=len(opts.frames) * len(opts.steps), unit="step", desc="control plane",
              disable=not opts.progress) as bar:
        for n in sorted(opts.frames):
            sizes.append(measure_size(opts, n, bar))
    doc = {"date": datetime.date.today().isoformat(), "machine": machine(), "command": opts.command,
           "python": platform.python_version(), "options": {k: v for k, v in opts.child_options(opts.scratch).items()
                                                             if k != "scratch"} | {"lock": opts.lock},
           "sizes": sizes}
    doc["summary"] = summarise(sizes)
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "control_plane.json").write_text(json.dumps(doc, indent=1) + "\n")
    (opts.out / "control_plane.md").write_text(markdown(doc))
    return doc


def machine() -> str:
    """e.g. "2 cores Intel Xeon, 24 GiB, no GPU" (from /proc)."""
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                full = line.split(":", 1)[1]
                model = " ".join(w for w in full.replace("(R)", "").split() if w not in ("CPU", "Processor")
                                 and "@" not in w and not w.endswith("GHz"))
                model = " ".join(model.split()[:2])
                break
        mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        gib = round(mem / 2**20)
    except (OSError, StopIteration):
        gib = 0
    gpu = "a GPU" if shutil.which("nvidia-smi") else "no GPU"
    return f"{os.cpu_count()} cores {model}, {gib} GiB, {gpu}"
