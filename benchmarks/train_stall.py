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

``--output lead`` measures instead what a LEAD user sees who feeds ``open_dataset(..., output="lead")`` to the
reference's training code: a loop that takes each LEAD batch and runs a step on it, with this tree's loader and
with the tree of ``--baseline-ref`` (default: the last commit that converted to LEAD's format in the
consumer's thread, before issue 24). The step is either TFv6 (``--lead-model tfv6``: ResNet-18 encoders, full
resolution, forward + losses + backward + AdamW on the CPU) or ``--step-ms`` of waiting with the GIL released,
which is what a trainer's host thread does while its GPU runs the step (``0``: the loader's own rate). Reported
per run: samples/s, the share of the loop's time spent waiting for the next batch (the data stall; it includes
the conversion when the consumer's thread does it) and the process's peak RSS.
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
#: the last commit whose ``output="lead"`` converted in the consumer's thread, before issue 24
OLD_LEAD_REF = "33207b2"


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


def consume_lead(root: str, *, steps: int, batch_size: int, workers: int, step_ms: float | None,
                 warmup: int = 5) -> dict:
    """In this process, with whichever ``leadio`` is on the path: ``steps`` timed steps of a loop over
    ``open_dataset(root, output="lead")`` (after ``warmup`` untimed ones), each step a wait of ``step_ms`` with
    the GIL released, or a TFv6 training step on the CPU when ``step_ms`` is None."""
    import resource
    import time

    import torch

    import leadio
    from leadio.dataset import open_dataset

    loader = open_dataset(root, collection="full_pretrain", batch_size=batch_size, num_workers=workers,
                          backend="cpu", output="lead", perturbation_rate=0.5, persistent_workers=True)
    step = _tfv6_step() if step_ms is None else (lambda batch: time.sleep(step_ms / 1000))

    def batches():
        epoch = 0
        while True:
            loader.set_epoch(epoch)
            yield from loader
            epoch += 1

    stream, waited, stepped = batches(), 0.0, 0.0
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(stream)
        t1 = time.perf_counter()
        step(batch)
        del batch
        t2 = time.perf_counter()
        if i >= warmup:
            waited, stepped = waited + t1 - t0, stepped + t2 - t1
    stream.close()
    loader.close()
    total = waited + stepped
    return {"samples_per_s": steps * batch_size / total, "steps_per_s": steps / total,
            "data_stall_pct": 100 * waited / total, "wait_ms_per_step": 1e3 * waited / steps,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "torch_threads": torch.get_num_threads(), "leadio": leadio.__file__}


def _tfv6_step():
    """A TFv6 training step on a LEAD batch (ResNet-18 encoders, no pretrained weights, AdamW)."""
    import torch

    from leadtrain.models.tfv6.config import TFv6Config
    from leadtrain.models.tfv6.model import TFv6

    model = TFv6(TFv6Config(image_architecture="resnet18", lidar_architecture="resnet18"), encoder_backend="builtin",
                 image_pretrained_weights="none")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch: dict) -> None:
        losses = model.compute_loss(model(batch), batch)
        sum(losses.values()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def run_lead(root: str, *, tree: Path, engine: str, **kw) -> dict:
    """`consume_lead` in a fresh interpreter that imports ``tree``'s leadio (and leadtrain)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    root = str(Path(root).resolve())  # the child runs in the tree
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--root", root, "--consume-lead",
                           json.dumps({"root": root, **kw})], capture_output=True, text=True, env=env, cwd=tree)
    if proc.returncode != 0:
        raise SystemExit(f"output='lead' ({engine}) failed:\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    if not Path(row["leadio"]).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{engine}: imported {row['leadio']}, not the tree {tree}")
    step = "TFv6 (CPU)" if kw["step_ms"] is None else f"{kw['step_ms']:g} ms wait"
    return {"engine": engine, "step": step, "batch_size": kw["batch_size"], "workers": kw["workers"],
            "steps": kw["steps"], **row}


def lead_table(rows: list[dict]) -> str:
    lines = ["| engine | step | batch | workers | steps | samples/s | data stall % | wait ms/step | peak RSS MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['engine']} | {r['step']} | {r['batch_size']} | {r['workers']} | {r['steps']} | "
              f"{r['samples_per_s']:.1f} | {r['data_stall_pct']:.1f} | {r['wait_ms_per_step']:.1f} | "
              f"{r['peak_rss_mib']:.0f} |" for r in rows]
    return "\n".join(lines)


def main_lead(args) -> int:
    """``--output lead``: this tree against ``--baseline-ref``, alternating, for each step time."""
    steps_ms = [None if s == "tfv6" else float(s) for s in args.step_ms.split(",")]
    ref = OLD_LEAD_REF if args.baseline_ref == OLD_ENGINE_REF else args.baseline_ref
    rows = []
    with tempfile.TemporaryDirectory(prefix="leadio-baseline-") as tmp:
        old = export_tree(ref, Path(tmp)) if ref else None
        for step_ms in steps_ms:
            kw = {"steps": args.steps, "batch_size": args.batch_size, "workers": args.workers, "step_ms": step_ms,
                  "warmup": args.warmup}
            for _ in range(args.repeat):  # old and new alternate, so load on the machine hits both alike
                rows.append(run_lead(args.root, tree=REPO, engine="decode threads convert (this tree)", **kw))
                if old is not None:
                    rows.append(run_lead(args.root, tree=old, engine=f"consumer converts ({ref})", **kw))
    print(lead_table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


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
    parser.add_argument("--output", default="compact", choices=["compact", "lead"],
                        help="compact: the trainer (leadtrain/pretrain.py); lead: a loop over output='lead'")
    parser.add_argument("--step-ms", default="0,10,20,40",
                        help="--output lead: the step, per run: ms of GIL-free waiting, or 'tfv6'")
    parser.add_argument("--repeat", type=int, default=1, help="--output lead: runs per tree and step")
    parser.add_argument("--warmup", type=int, default=5, help="--output lead: untimed steps first")
    parser.add_argument("--consume-lead", default=None, help=argparse.SUPPRESS)  # the child of run_lead
    args = parser.parse_args(argv)
    if args.consume_lead is not None:
        print(json.dumps(consume_lead(**json.loads(args.consume_lead))))
        return 0
    if args.output == "lead":
        return main_lead(args)
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
