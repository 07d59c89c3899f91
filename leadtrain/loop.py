"""The Accelerate training loop: LEAD's two-phase schedule on top of leadio.

``run(cfg)`` trains for ``cfg.epochs`` epochs: pre-training (perception losses) or, with
``use_planning_decoder=true``, post-training (perception + planning). Each process reads its own exact share
of every epoch from leadio (equal batch counts on every rank, so DDP never hangs); the loader is not wrapped
by Accelerate. Checkpoints follow LEAD's layout (`leadtrain.checkpoint`); ``continue_failed_training=true``
continues from ``<logdir>/resume`` (model, optimizer, scheduler, scaler, RNG and the data stream's position),
so a killed run ends with the same weights as an uninterrupted one. ``channel_last=true`` puts the weights in
channels_last memory format, ``compile=true`` wraps the prepared model in ``torch.compile`` (checkpoints keep the
plain names either way).

Logged every ``log_scalars_frequency`` steps on rank 0 (TensorBoard, W&B when enabled): every loss, the
learning rate, samples/s, the data stall (share of step time spent waiting for the next batch) and memory.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from leadio.dataset import open_dataset
from leadio.format import dataset_config_for_root
from leadio.shard import shard_set_dir
from leadtrain.checkpoint import (
    latest_epoch_checkpoint,
    load_model_file,
    load_resume_state,
    prune_epoch_files,
    save_epoch_checkpoint,
    save_resume_state,
    set_aside_previous_run,
)
from leadtrain.config import TrainingConfig, detect_mixed_precision
from leadtrain.viz import render_sample, save_png

__all__ = ["RunResult", "build_model", "run"]

log = logging.getLogger(__name__)

PERCEPTION_KEYS = ["rgb", "semantic", "depth", "lidar", "bev_semantic", "radar", "boxes", "targets"]


def build_model(cfg: TrainingConfig) -> torch.nn.Module:
    """``model=tfv6``: the reference TFv6 (ImageNet image encoder unless a checkpoint replaces it); else the
    compact leadtrain model of ``model_size``."""
    if cfg.model == "tfv6":
        from leadtrain.tfv6 import TFv6

        weights = "none" if cfg.load_file or cfg.continue_failed_training else cfg.image_pretrained_weights
        return TFv6(cfg.tfv6, planning=cfg.use_planning_decoder, encoder_backend=cfg.encoder_backend,
                    image_pretrained_weights=weights)
    from leadtrain.model import ModelConfig, TransFuser

    return TransFuser(ModelConfig.preset(cfg.model_size, use_planner=cfg.use_planning_decoder))


def to_channels_last(cfg: TrainingConfig, model: torch.nn.Module) -> torch.nn.Module:
    """``channel_last=true``: the model's weights in channels_last memory format (the reference's
    ``model.to(memory_format=torch.channels_last)``), and TFv6's encoder inputs too; else ``model`` unchanged."""
    if not cfg.channel_last:
        return model
    model = model.to(memory_format=torch.channels_last)
    if cfg.model == "tfv6":
        model.backbone.channels_last = True
    log.info("channel_last=true: weights and encoder inputs in channels_last memory format")
    return model


def compiled(cfg: TrainingConfig, model: torch.nn.Module) -> torch.nn.Module:
    """``compile=true``: ``torch.compile`` (inductor, default mode) of the prepared (possibly DDP) model, last,
    as Accelerate does; the weights stay reachable with ``unwrap_model(..., keep_torch_compile=False)``.

    The reference asks for ``mode="max-autotune", fullgraph=True`` (and then trains the uncompiled module: it
    rebinds a local name); this keeps the default mode (minutes less compile time) and allows graph breaks, so an
    op dynamo cannot trace costs speed, not the run."""
    if not cfg.compile:
        return model
    log.info("compile=true: torch.compile (inductor); the first steps include the compile time")
    return torch.compile(model)


def _loss_weights(cfg: TrainingConfig) -> dict[str, float]:
    """Normalised weight per loss name (TFv6: the reference's; leadtrain model: `leadtrain.losses`')."""
    if cfg.model == "tfv6":
        from leadtrain.tfv6 import loss_weights

        return loss_weights(cfg.tfv6, cfg.use_planning_decoder, cfg.loss_weights)
    return dict(cfg.loss_weights)


def _compute_losses(cfg: TrainingConfig, model, core, batch: dict, weights: dict,
                    metrics: dict | None) -> tuple[torch.Tensor, dict, dict, dict]:
    """(total, unweighted losses, weighted losses, predictions) for a leadio batch; TFv6 gets it in LEAD format."""
    planning = cfg.use_planning_decoder
    if cfg.model == "tfv6":
        from leadio.lead import to_lead_batch
        from leadtrain.tfv6 import color_augment

        data = to_lead_batch(batch, planning=planning)
        if cfg.tfv6.use_color_aug:
            data["rgb"] = color_augment(data["rgb"].float(), cfg.tfv6.use_color_aug_prob)
        pred = model(data)
        losses = core.compute_loss(pred, data, metrics)
        scaled = {k: weights[k] * v.float() for k, v in losses.items()}
        return sum(scaled.values()), losses, scaled, pred
    from leadtrain.losses import DEFAULT_LOSS_WEIGHTS, perception_losses, planning_losses, total_loss

    pred = model(batch, planning=planning)
    losses = perception_losses(pred, batch)
    if planning:
        losses.update(planning_losses(pred, batch))
    merged = {**DEFAULT_LOSS_WEIGHTS, **weights}
    norm = sum(float(merged.get(k, 1.0)) for k in losses)
    scaled = {k: float(merged.get(k, 1.0)) / norm * v.float() for k, v in losses.items()}
    return total_loss(losses, weights), losses, scaled, pred


@dataclass
class RunResult:
    logdir: Path
    epochs_done: int
    steps: int
    seconds_per_epoch: list[float]
    data_stall_pct: float
    final_losses: dict[str, float]


def _load_model_file(model: torch.nn.Module, path: Path, what: str) -> None:
    info = load_model_file(model, path, what)
    log.info("%s=%s: %d keys loaded%s%s", what, path, info["matched"],
             f"; new (random init): {', '.join(info['new_modules'])}" if info["new_modules"] else "",
             f"; not in this model: {', '.join(info['dropped_modules'])}" if info["dropped_modules"] else "")


class _Logger:
    """TensorBoard (+ W&B) on the main process; a no-op elsewhere."""

    def __init__(self, cfg: TrainingConfig, active: bool):
        self.active, self.writer, self.wandb = active, None, None
        if not active:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=cfg.logdir)
        if cfg.log_wandb:
            try:
                import wandb
            except ImportError as e:
                raise RuntimeError("log_wandb=true needs wandb: pip install 'leadio[wandb]'") from e
            self.wandb = wandb.init(project=cfg.wandb_project_name, dir=cfg.logdir, config=cfg.to_dict(),
                                    id=cfg.wandb_id, resume=cfg.wandb_resume,
                                    mode=os.environ.get("WANDB_MODE", "offline"))

    def scalars(self, values: dict[str, float], step: int) -> None:
        if not self.active:
            return
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def image(self, tag: str, image, step: int) -> None:
        if not self.active:
            return
        self.writer.add_image(tag, image, step, dataformats="HWC")
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Image(image)}, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def _write_rank_summary(logdir: Path, rank: int, model: torch.nn.Module, steps: int, epoch_times: list[float],
                        stall_pct: float) -> None:
    """``run_summary_rank{r}.json``: steps taken and a checksum of the weights, per rank (DDP sanity check)."""
    import hashlib
    import json

    from leadio._io import atomic_write_bytes

    h = hashlib.sha256()  # learned parameters only: DDP keeps those equal; BatchNorm statistics are per rank
    for name, tensor in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    summary = {"rank": rank, "global_steps": steps, "seconds_per_epoch": epoch_times, "data_stall_pct": stall_pct,
               "weights_sha256": h.hexdigest()}
    atomic_write_bytes(logdir / f"run_summary_rank{rank}.json", json.dumps(summary, indent=1).encode())


def run(cfg: TrainingConfig) -> RunResult:
    """Train as ``cfg`` says; returns what was done (rank 0's view)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    precision = detect_mixed_precision(cfg.mixed_precision)
    accelerator = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available())
    main = accelerator.is_main_process
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by the {world} processes")
    per_rank = cfg.batch_size // world
    logdir = Path(cfg.logdir)
    if main:
        logdir.mkdir(parents=True, exist_ok=True)
        if not cfg.continue_failed_training and (moved := set_aside_previous_run(logdir)):
            log.warning("fresh run in %s: moved the previous run's %d files (%s) to %s", logdir, len(moved),
                        ", ".join(moved[:4]) + (", ..." if len(moved) > 4 else ""), logdir / "previous_run")
        if not cfg.continue_failed_training:  # a resume writes its config only once the resume is accepted
            cfg.save(logdir)
    set_seed(cfg.seed)

    root = Path(cfg.root)
    set_dir = shard_set_dir(root, cfg.shard_collection, dataset_config_for_root(root))
    if not (set_dir / "manifest.json").exists():
        raise FileNotFoundError(f"no shard set at {set_dir}; build it first: python -m leadio.shard --root {root} "
                                f"--collection {cfg.shard_collection}")
    planning = cfg.use_planning_decoder
    loader = open_dataset(set_dir, collection=cfg.collection, keys=PERCEPTION_KEYS, batch_size=per_rank,
                          backend=cfg.backend, world_size=world, rank=rank, seed=cfg.seed,
                          num_workers=cfg.num_workers, perturbation_rate=cfg.perturbation_rate,
                          pin_memory=torch.cuda.is_available(),
                          device="cuda" if torch.cuda.is_available() else None)

    model = build_model(cfg)
    start_epoch, resume = 0, None
    if cfg.continue_failed_training:
        resume = load_resume_state(logdir)
        if resume is None:
            latest = latest_epoch_checkpoint(logdir)
            if latest is None:
                log.warning("continue_failed_training=true but %s holds no checkpoint: starting from scratch", logdir)
            else:
                start_epoch = latest[0] + 1
                _load_model_file(model, latest[1], "continue_failed_training")
    elif cfg.load_file:
        _load_model_file(model, Path(cfg.load_file), "load_file")  # post-training: the planner is new
    model = to_channels_last(cfg, model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=True,
                                  fused=torch.cuda.is_available() or None)

    def steps_in(epoch: int) -> int:
        full = loader.batches_in_epoch(epoch)
        return min(full, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else full

    steps_per_epoch = steps_in(0)  # T_0 of the cosine schedule, as LEAD: the first epoch's steps
    if steps_per_epoch == 0:
        raise ValueError(f"collection {cfg.collection!r} gives fewer than one batch of {per_rank} samples per "
                         f"process per epoch: lower batch_size or add data")
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=steps_per_epoch, T_mult=2)
    model, optimizer = accelerator.prepare(model, optimizer)
    model = compiled(cfg, model)
    skipped = 0
    step_in_epoch = 0
    if resume is not None:
        if "weights_from_epoch" in resume:  # an epoch-end state: the weights are that epoch's files
            e = resume["weights_from_epoch"]
            resume.update({n: torch.load(logdir / f"{n}_{e:04d}.pth", map_location="cpu", weights_only=True)
                           for n in ("model", "optimizer", "scheduler", "scaler")})
        accelerator.unwrap_model(model, keep_torch_compile=False).load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if accelerator.scaler is not None and resume.get("scaler"):
            accelerator.scaler.load_state_dict(resume["scaler"])
        torch.set_rng_state(resume["rng_cpu"])
        if torch.cuda.is_available() and resume.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(resume["rng_cuda"])
        loader.load_state_dict(resume["loader"])
        start_epoch, step_in_epoch, skipped = resume["epoch"], resume["step_in_epoch"], resume["skipped"]
        log.info("continuing from %s: epoch %d, step %d", logdir / "resume", start_epoch, step_in_epoch)
    if cfg.continue_failed_training and main:  # a refused resume (above) leaves the logdir's config.json intact
        cfg.save(logdir)
    if resume is None and cfg.continue_failed_training and start_epoch > 0:
        e = start_epoch - 1
        optimizer.load_state_dict(torch.load(logdir / f"optimizer_{e:04d}.pth", weights_only=True))
        scheduler.load_state_dict(torch.load(logdir / f"scheduler_{e:04d}.pth", weights_only=True))
        scaler_state = torch.load(logdir / f"scaler_{e:04d}.pth", weights_only=True)
        if accelerator.scaler is not None and scaler_state:
            accelerator.scaler.load_state_dict(scaler_state)
        skipped = int((logdir / f"gradient_steps_skipped_{e:04d}.txt").read_text())

    logger = _Logger(cfg, main)
    viz_dir = Path(cfg.viz_dir)
    phase = "posttrain" if planning else "pretrain"
    weights = _loss_weights(cfg)
    core = accelerator.unwrap_model(model, keep_torch_compile=False)
    n_params = sum(p.numel() for p in core.parameters() if p.requires_grad)
    epoch_times, stall_total, step_total = [], 0.0, 0.0
    global_step = start_epoch * steps_per_epoch + step_in_epoch
    last_losses: dict[str, float] = {}

    def states() -> dict:
        return {"model": accelerator.unwrap_model(model, keep_torch_compile=False).state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else {}}

    last_resume = [time.monotonic()]

    def save_resume(epoch: int, step: int, weights_from_epoch: int | None = None) -> None:
        """Mid-epoch: everything; at an epoch end (``weights_from_epoch``): no weights, a pointer to its files."""
        if main:
            heavy = states() if weights_from_epoch is None else {"weights_from_epoch": weights_from_epoch}
            save_resume_state(logdir, {**heavy, "epoch": epoch, "step_in_epoch": step, "skipped": skipped,
                                       "loader": loader.state_dict(), "rng_cpu": torch.get_rng_state(),
                                       "rng_cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None})
        last_resume[0] = time.monotonic()
        accelerator.wait_for_everyone()

    def resume_due(step: int) -> bool:
        """Every ``resume_every_steps`` steps, or when ``resume_every_minutes`` have passed (rank 0's clock)."""
        if cfg.resume_every_steps and step % cfg.resume_every_steps == 0:
            return True
        if not cfg.resume_every_minutes:
            return False
        due = torch.tensor(float(time.monotonic() - last_resume[0] >= 60 * cfg.resume_every_minutes))
        if world > 1:  # every rank must take the same decision (a barrier follows)
            due = accelerator.reduce(due.to(accelerator.device), reduction="sum").cpu()
        return bool(due > 0)

    for epoch in range(start_epoch, cfg.epochs):
        loader.set_epoch(epoch)
        steps = steps_in(epoch)
        model.train()
        t_epoch = time.perf_counter()
        bar = tqdm(total=steps, initial=step_in_epoch, desc=f"{phase} epoch {epoch}", disable=not main,
                   dynamic_ncols=True, leave=False)
        window_stall = window_time = 0.0
        window_samples = 0
        it = iter(loader)
        viz_done = False
        while step_in_epoch < steps:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            t_data = time.perf_counter()
            batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
            log_now = main and (global_step + 1) % cfg.log_scalars_frequency == 0
            metrics: dict | None = {} if log_now else None
            with accelerator.autocast():
                loss, losses, scaled, pred = _compute_losses(cfg, model, core, batch, weights, metrics)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch} step {step_in_epoch}: "
                                         f"{ {k: float(v) for k, v in losses.items()} }")
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            if accelerator.optimizer_step_was_skipped:
                skipped += 1
            scheduler.step(epoch * steps_per_epoch + step_in_epoch)
            step_in_epoch += 1
            global_step += 1
            t_end = time.perf_counter()
            window_stall += t_data - t0
            window_time += t_end - t0
            window_samples += per_rank * world
            stall_total += t_data - t0
            step_total += t_end - t0
            last_losses = {k: float(v.detach()) for k, v in losses.items()} | {"total": float(loss.detach())}
            bar.update(1)
            bar.set_postfix(loss=f"{last_losses['total']:.3f}", refresh=False)
            if log_now:  # the reference's tags (unscaled_loss/*, scaled_loss/*, metric/*, debug/*) plus ours
                values = {f"unscaled_loss/{k}": float(v.detach()) for k, v in losses.items()}
                values.update({f"scaled_loss/{k}": float(v.detach()) for k, v in scaled.items()})
                values["scaled_loss/total"] = last_losses["total"]
                values.update(metrics or {})
                values.update({"debug/epoch": epoch, "debug/lr_0": scheduler.get_last_lr()[0],
                               "debug/batch_size_per_gpu": per_rank, "debug/num_gpu": torch.cuda.device_count(),
                               "debug/model_size": n_params, "debug/gradient_steps_skipped": skipped,
                               "debug/num_gradient_steps": steps_per_epoch * cfg.epochs,
                               "debug/steps_left": steps_per_epoch * cfg.epochs - global_step,
                               "debug/average_loading_time": window_stall / max(window_samples, 1)})
                if accelerator.scaler is not None:
                    values["debug/grad_scale"] = accelerator.scaler.get_scale()
                values["throughput/samples_per_s"] = window_samples / max(window_time, 1e-9)
                values["throughput/data_stall_pct"] = 100.0 * window_stall / max(window_time, 1e-9)
                if torch.cuda.is_available():
                    values["debug/max_gpu_mem"] = torch.cuda.max_memory_allocated() / 1024**3
                import resource

                values["memory/host_max_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
                logger.scalars(values, global_step)
                window_stall = window_time = 0.0
                window_samples = 0
            if main and cfg.visualize_training and (global_step % cfg.log_images_frequency == 0 or not viz_done):
                image = render_sample(batch, pred, epoch=epoch, step=global_step, losses=last_losses, phase=phase)
                save_png(image, viz_dir / f"{phase}_e{epoch:04d}_s{global_step:07d}.png")
                logger.image(f"{phase}/sample", image, global_step)
                viz_done = True
            if step_in_epoch < steps and resume_due(step_in_epoch):
                save_resume(epoch, step_in_epoch)
        bar.close()
        if main:
            save_epoch_checkpoint(logdir, epoch, states(), skipped)
        epoch_times.append(time.perf_counter() - t_epoch)
        step_in_epoch = 0
        loader.set_epoch(epoch + 1)
        save_resume(epoch + 1, 0, weights_from_epoch=epoch)  # before pruning: it points at this epoch's files
        if main:
            prune_epoch_files(logdir, epoch, list(cfg.epoch_checkpoints_keep))
        if main:
            log.info("%s epoch %d: %.1fs, loss %.4f, data stall %.1f%%", phase, epoch, epoch_times[-1],
                     last_losses.get("total", math.nan), 100 * stall_total / max(step_total, 1e-9))
    logger.close()
    _write_rank_summary(logdir, rank, accelerator.unwrap_model(model, keep_torch_compile=False), global_step,
                        epoch_times, 100 * stall_total / max(step_total, 1e-9))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return RunResult(logdir, cfg.epochs - start_epoch, global_step, epoch_times,
                     100 * stall_total / max(step_total, 1e-9), last_losses)
