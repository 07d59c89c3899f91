"""Data stall of the trainer per decode backend: ``python -m benchmarks.train_stall --root R``.

Runs ``leadtrain/pretrain.py`` for a fixed number of steps once per backend and reports the share of step
time spent waiting for the next batch (the trainer's own measurement, ``run_summary_rank0.json``), steps/s
and samples/s. Defaults suit a CPU machine (tiny model, batch 8); on a GPU machine run the reference-size
check with ``--model-size reference --batch-size 64 --workers 8`` (the dali backend then decodes JPEGs with
nvJPEG through ``device="mixed"``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_backend(root: str, backend: str, *, steps: int, batch_size: int, workers: int, model_size: str) -> dict:
    """One short pre-training run; returns its rank-0 run summary plus the settings."""
    with tempfile.TemporaryDirectory(prefix="leadio-stall-") as tmp:
        logdir = Path(tmp) / "run"
        cmd = [sys.executable, str(REPO / "leadtrain" / "pretrain.py"), f"root={root}", f"logdir={logdir}",
               f"viz_dir={Path(tmp) / 'viz'}", f"backend={backend}", f"model_size={model_size}",
               f"batch_size={batch_size}", f"num_workers={workers}", "epochs=1", f"max_steps_per_epoch={steps}",
               "visualize_training=false", "log_scalars_frequency=1000000", "resume_every_steps=0"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{backend}: training failed:\n{proc.stderr[-3000:]}")
        summary = json.loads((logdir / "run_summary_rank0.json").read_text())
    seconds = sum(summary["seconds_per_epoch"])
    return {"backend": backend, "model_size": model_size, "batch_size": batch_size, "workers": workers,
            "steps": summary["global_steps"], "seconds": seconds, "steps_per_s": summary["global_steps"] / seconds,
            "samples_per_s": summary["global_steps"] * batch_size / seconds,
            "data_stall_pct": summary["data_stall_pct"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="dataset root with a built full_pretrain shard set")
    parser.add_argument("--backends", default="cpu,dali")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model-size", default="tiny", choices=["tiny", "small", "reference"])
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = [run_backend(args.root, b, steps=args.steps, batch_size=args.batch_size, workers=args.workers,
                        model_size=args.model_size) for b in args.backends.split(",")]
    print("| backend | model | batch | workers | steps | steps/s | samples/s | data stall % |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backend']} | {r['model_size']} | {r['batch_size']} | {r['workers']} | {r['steps']} | "
              f"{r['steps_per_s']:.2f} | {r['samples_per_s']:.1f} | {r['data_stall_pct']:.1f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
