"""Data stall of the trainer per decode backend and loading engine: ``python -m benchmarks.train_stall --root R``.

Runs ``leadtrain/pretrain.py`` for a fixed number of steps once per backend and reports the share of step
time spent waiting for the next batch (the trainer's own measurement, ``run_summary_rank0.json``), steps/s
and samples/s. Each backend runs twice: with this tree's engine (decode threads in the training process,
`leadio.engine`) and with the tree of ``--baseline-ref`` (default: the last commit whose loader was a torch
DataLoader with worker processes), exported with ``git archive`` into a temporary folder and run from there
(its own trainer and loader; it builds its own shard set in the root when its preprocessing pipeline
differs). Defaults suit a CPU machine (tiny model, batch 8); on a GPU machine run the reference-size check
with ``--model-size reference --batch-size 64 --workers 8`` (the dali backend then decodes JPEGs with nvJPEG
through ``device="mixed"``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the last commit with the DataLoader (worker processes) engine, before issue 10
OLD_ENGINE_REF = "3832bfb"


def export_tree(ref: str, dst: Path) -> Path:
    """``git archive ref`` of this repository unpacked into ``dst``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"cannot export {ref!r} from {REPO}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(dst)], input=archive.stdout, check=True)
    return dst


def run_backend(root: str, backend: str, *, steps: int, batch_size: int, workers: int, model_size: str,
                tree: Path = REPO, engine: str = "threads (this tree)") -> dict:
    """One short pre-training run of ``tree``'s trainer; returns its rank-0 run summary plus the settings."""
    env = {**os.environ, "PYTHONPATH": str(tree)} if tree != REPO else None
    with tempfile.TemporaryDirectory(prefix="leadio-stall-") as tmp:
        logdir = Path(tmp) / "run"
        cmd = [sys.executable, str(tree / "leadtrain" / "pretrain.py"), f"root={root}", f"logdir={logdir}",
               f"viz_dir={Path(tmp) / 'viz'}", f"backend={backend}", f"model_size={model_size}",
               f"batch_size={batch_size}", f"num_workers={workers}", "epochs=1", f"max_steps_per_epoch={steps}",
               "visualize_training=false", "log_scalars_frequency=1000000", "resume_every_steps=0"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
        if proc.returncode != 0:
            raise SystemExit(f"{backend} ({engine}): training failed:\n{proc.stderr[-3000:]}")
        summary = json.loads((logdir / "run_summary_rank0.json").read_text())
    seconds = sum(summary["seconds_per_epoch"])
    return {"backend": backend, "engine": engine, "model_size": model_size, "batch_size": batch_size,
            "workers": workers, "steps": summary["global_steps"], "seconds": seconds,
            "steps_per_s": summary["global_steps"] / seconds,
            "samples_per_s": summary["global_steps"] * batch_size / seconds,
            "data_stall_pct": summary["data_stall_pct"]}


def _build_shards(root: str, tree: Path) -> None:
    """Build ``tree``'s pretrain shard set in ``root`` (a no-op when it is there and current)."""
    proc = subprocess.run([sys.executable, "-m", "leadio.shard", "--root", root, "--collection", "full_pretrain"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree)
    if proc.returncode != 0:
        raise SystemExit(f"the baseline tree cannot build its shard set:\n{proc.stderr[-3000:]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="dataset root with a built full_pretrain shard set")
    parser.add_argument("--backends", default="cpu,dali")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model-size", default="tiny", choices=["tiny", "small", "reference"])
    parser.add_argument("--baseline-ref", default=OLD_ENGINE_REF,
                        help="git ref whose engine to compare with ('' = this tree only)")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    kw = {"steps": args.steps, "batch_size": args.batch_size, "workers": args.workers, "model_size": args.model_size}
    rows = []
    with tempfile.TemporaryDirectory(prefix="leadio-baseline-") as tmp:
        old = None
        if args.baseline_ref:
            old = export_tree(args.baseline_ref, Path(tmp))
            _build_shards(args.root, old)
        for b in args.backends.split(","):  # old and new alternate, so load on the machine hits both alike
            rows.append(run_backend(args.root, b, **kw))
            if old is not None:
                rows.append(run_backend(args.root, b, tree=old, engine=f"DataLoader ({args.baseline_ref})", **kw))
    print("| backend | engine | model | batch | workers | steps | steps/s | samples/s | data stall % |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backend']} | {r['engine']} | {r['model_size']} | {r['batch_size']} | {r['workers']} | "
              f"{r['steps']} | {r['steps_per_s']:.2f} | {r['samples_per_s']:.1f} | {r['data_stall_pct']:.1f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
