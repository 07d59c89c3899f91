"""`make demo`: the main job on the embedded default, end to end, with a summary a newcomer can read.

Steps (each is also a command of its own, printed in the summary):
  1. synthetic LEAD-format routes  (python -m leadio.synth)
  2. the catalog                    (python -m leadio.catalog)
  3. pretrain and posttrain buckets (python scripts/build_buckets_pretrain.py / _posttrain.py)
  4. the shard set                  (python -m leadio.shard)
  5. perception pre-training        (bash scripts/pretrain.sh)
  6. planning post-training         (bash scripts/posttrain.sh)
  7. loader benchmark               (python -m benchmarks.loader_throughput --quick)
  8. one sample as a picture, and the dataset report (python -m leadio.inspect / python -m leadio.report)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from leadio.buckets.__main__ import format_table
from leadio.buckets.builders import load_or_build
from leadio.catalog import build_catalog
from leadio.shard.build import build_shard_set
from leadio.synth import generate_root

REPO = Path(__file__).resolve().parents[1]


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _run(cmd: list[str], env: dict | None = None) -> str:
    """Run a step's real command; stream nothing, fail loudly with its tail."""
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"demo step failed: {' '.join(cmd)}")
    return proc.stdout + proc.stderr


def training_line(summary: dict, logdir: str) -> str:
    """The demo's result line for one training phase, from its ``run_summary_rank0.json``: the steps, each
    epoch's wall time (the first includes start-up, which the line says) and the data stall."""
    epochs = ", ".join(f"{s:.0f} s" for s in summary["seconds_per_epoch"])
    return (f"{summary['global_steps']} steps, epochs took {epochs} (the first includes start-up: decode "
            f"threads, first reads), data stall {summary['data_stall_pct']:.1f}% -> {logdir}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="demo/data/carla_leaderboard2")
    parser.add_argument("--routes", type=int, default=12)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--train-steps", type=int, default=20, help="steps per epoch of each training phase")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-benchmark", action="store_true")
    args = parser.parse_args(argv)
    root = Path(args.root)
    steps: list[tuple[str, str, float, str]] = []
    py = sys.executable

    def step(what: str, cmd: str, t0: float, result: str) -> None:
        steps.append((what, cmd, time.perf_counter() - t0, result))
        print(f"[demo] {what}: {result} ({steps[-1][2]:.1f}s)", flush=True)

    t = time.perf_counter()
    synth = generate_root(root, args.routes, args.frames, args.seed, workers=args.workers)
    raw_bytes = _dir_bytes(root / "data")
    frames = args.routes * args.frames
    rate = f", {synth.frames / max(synth.seconds, 1e-9):.0f} frames/s" if synth.routes_written else " (already there)"
    step("synthetic routes", f"python -m leadio.synth --root {root} --routes {args.routes} --frames {args.frames} "
         f"--seed {args.seed}", t,
         f"{args.routes} routes, {frames} frames, {raw_bytes / frames / 1e3:.0f} KB/frame{rate}")

    t = time.perf_counter()
    report = build_catalog(root, workers=args.workers)
    step("catalog", f"python -m leadio.catalog --root {root}", t,
         f"{report.rows} frames of {report.routes_trainable}/{report.routes_found} trainable routes"
         + ("" if report.rewritten else " (up to date)"))

    tables = []
    for name, script in (("full_pretrain", "build_buckets_pretrain.py"),
                         ("full_posttrain", "build_buckets_posttrain.py")):
        t = time.perf_counter()
        collection, path = load_or_build(root, name, workers=args.workers)
        step(f"{name} buckets", f"python scripts/{script} --root {root}", t, f"{len(collection)} samples -> {path}")
        tables.append(f"{name} ({path.name}):\n{format_table(collection)}")

    t = time.perf_counter()
    shard = build_shard_set(root, "full_pretrain", workers=args.workers, shard_size=32_000_000)
    set_bytes = sum(s["bytes"] for s in json.loads((shard.set_dir / "manifest.json").read_text())["shards"])
    n = len(load_or_build(root, "full_pretrain")[0])
    rate = (f", {shard.samples_written / shard.seconds:.0f} samples/s" if shard.samples_written else " (up to date)")
    step("shard set", f"python -m leadio.shard --root {root} --collection full_pretrain", t,
         f"{shard.shards_total} shards, {set_bytes / n / 1e3:.0f} KB/sample -> {shard.set_dir}{rate}")

    if not args.skip_train:
        common = ["epochs=2", f"max_steps_per_epoch={args.train_steps}", "batch_size=8",
                  f"num_workers={min(2, args.workers)}", "log_scalars_frequency=5", "log_images_frequency=20"]
        env = {"LEAD_ROOT": str(root)}
        for phase, script in (("pretrain", "scripts/pretrain.sh"), ("posttrain", "scripts/posttrain.sh")):
            t = time.perf_counter()
            _run(["bash", script, *common], env)
            logdir = REPO / "outputs" / "local_training" / phase
            summary = json.loads((logdir / "run_summary_rank0.json").read_text())
            step(f"{phase} (tiny model, CPU)", f"LEAD_ROOT={root} bash {script} {' '.join(common)}", t,
                 training_line(summary, str(logdir.relative_to(REPO))))

    if not args.skip_benchmark:
        t = time.perf_counter()
        out = _run([py, "-m", "benchmarks.loader_throughput", "--root", str(root), "--quick"])
        table = [line for line in out.splitlines() if line.startswith("|")]
        step("loader benchmark", f"python -m benchmarks.loader_throughput --root {root}", t,
             "see table below (benchmarks/results/)")
        tables.append("loader throughput (quick run; full numbers in README.md):\n" + "\n".join(table))

    # look at the data: one sample as a picture, and the root's report (routes, buckets, planned samples)
    from leadio.files import atomic_write_bytes
    from leadio.inspect import from_shard_set, save_png
    from leadio.report import build_report, format_report, plot_report
    from leadio.shard.shardset import open_shard_set

    t = time.perf_counter()
    ss = open_shard_set(shard.set_dir)
    cat = ss.catalog  # a sample with planning targets, a third into its route (the ego is under way)
    index = next(i for i in range(len(cat))
                 if cat["has_waypoints"][i] and cat["frame"][i] == cat["route_num_frames"][i] // 3)
    png = save_png(from_shard_set(ss, index=index), REPO / "outputs" / "inspect" / "demo_sample.png", ss.config)
    step("inspect one sample", f"python -m leadio.inspect --root {root} --index {index} --out {png.relative_to(REPO)}",
         t, f"-> {png.relative_to(REPO)} (a gallery of 12: add --samples 12 --html outputs/gallery)")
    t = time.perf_counter()
    doc = build_report(root, epochs=1)
    out = REPO / "outputs" / "report"
    atomic_write_bytes(out / "demo_report.json", (json.dumps(doc, indent=1) + "\n").encode())
    plot_report(doc, out / "demo_report.png")
    step("dataset report", f"python -m leadio.report --root {root} --epochs 1 --png outputs/report/demo_report.png "
         f"--json outputs/report/demo_report.json", t,
         f"{doc['catalog']['routes_kept']}/{doc['catalog']['routes_found']} routes kept, see below -> "
         f"outputs/report/demo_report.png, .json")
    tables.append(format_report(doc))

    print("\n" + "=" * 100)
    print(f"leadio demo - dataset root: {root.resolve()}")
    print("=" * 100)
    width = max(len(s[0]) for s in steps)
    for what, _, seconds, result in steps:
        print(f"  {what.ljust(width)}  {seconds:6.1f}s  {result}")
    print()
    for table in tables:
        print(table + "\n")
    print("Rerun a step on its own (from the repository root, with .venv/bin first on PATH):")
    for _, cmd, _, _ in steps:
        print(f"  {cmd}")
    print("\nNext: TensorBoard: .venv/bin/tensorboard --logdir outputs/local_training; training pictures: "
          "outputs/training_viz/; a real LEAD root: the same commands with --root data/carla_leaderboard2.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
