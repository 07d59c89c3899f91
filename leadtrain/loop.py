"""The Accelerate training loop: LEAD's two-phase schedule on top of leadio.

``run(cfg)`` trains for ``cfg.epochs`` epochs: pre-training (perception losses) or, with
``use_planning_decoder=true``, post-training (perception + planning). It reads top to bottom:

- `setup`: the accelerator, the loader, the model of ``cfg.model`` (a row of `leadtrain.models.MODELS`: the loop
  knows no model by name), ``load_file``, the optimizer and the schedule, prepared by Accelerate;
- `restore`: with ``continue_failed_training=true``, the latest complete state (model, optimizer, scheduler,
  scaler, RNG and the data stream's position), so a killed run ends with the same weights as an uninterrupted one;
  a changed ``lr``/``weight_decay`` is applied (said once), a changed number of steps per epoch refused;
- `commit_logdir`: only now, with everything above done, the logdir and the pictures folder are touched (a fresh
  run sets the previous run's files aside, then writes config.json), so a failed start leaves both as they were;
  `startup_summary` says what is about to run;
- `train_epoch`, per epoch: `train_step` per batch, `log_step` every ``log_scalars_frequency`` steps and on the
  epoch's last step, a picture every ``log_images_frequency`` steps, the resume state when due, and the epoch's
  checkpoint and ``epoch/*`` scalars (`end_epoch`).

Each process reads its own exact share of every epoch from leadio (equal batch counts on every rank, so DDP never
hangs); the loader is not wrapped by Accelerate. Checkpoints follow LEAD's layout (`leadtrain.checkpoint`).
``channel_last=true`` puts the weights in channels_last memory format, ``compile=true`` wraps the prepared model
in ``torch.compile`` (checkpoints keep the plain names either way).

Host syncs: the losses stay on the device except on logged steps (scalars or a picture) and at an epoch end. A
non-finite loss is therefore noticed on the next logged step, resume save or epoch end, never later, and the
error names the first step it happened at (tracked on the device, `NonFiniteWatch`); no checkpoint is written
after it.

Logged every ``log_scalars_frequency`` steps and on each epoch's last step, on rank 0 (TensorBoard, W&B when
enabled): every loss of that step, ``metric/*`` (the model's own, else waypoint and route ADE/FDE for any model
that predicts them), the learning rate, samples/s, the data stall (share of step time spent waiting for the next
batch) and memory; per epoch ``epoch/*``: mean loss, seconds, samples/s, data stall, samples skipped.

An unreadable sample raises with ``on_error=raise`` (the error names shard, sample and the command that rebuilds
the set); with ``on_error=skip`` the loader substitutes it, and the skips are counted and logged each epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from leadio.dataset import open_dataset
from leadio.decode import choose_backend
from leadio.files import atomic_write_bytes
from leadio.format import dataset_config_for_root
from leadio.shard import shard_set_dir
from leadio.shard.shardset import ShardSetError
from leadtrain.checkpoint import (
    EPOCH_FILES,
    DamagedCheckpointError,
    fit_state_dict,
    latest_epoch_checkpoint,
    load_checkpoint_file,
    load_model_file,
    load_resume_state,
    prune_epoch_files,
    resume_summary,
    save_epoch_checkpoint,
    save_resume_state,
    set_aside_previous_run,
    verify_checkpoint_file,
)
from leadtrain.config import TrainingConfig, detect_mixed_precision
from leadtrain.models import MODELS, ModelSpec
from leadtrain.models.precision import weighted_sum
from leadtrain.viz import render_sample, save_png

__all__ = ["MetricsLogger", "NonFiniteWatch", "RunResult", "StepOutput", "TrainState", "Window", "build_model",
           "commit_logdir", "compiled", "draw_step", "end_epoch", "log_step", "planning_metrics", "restore",
           "resume_due", "run", "save_resume", "setup", "startup_summary", "to_channels_last", "train_epoch",
           "train_step"]

log = logging.getLogger(__name__)

PERCEPTION_KEYS = ["rgb", "semantic", "depth", "lidar", "bev_semantic", "radar", "boxes", "targets"]


# ---- model options -----------------------------------------------------------------------------------------------
def build_model(cfg: TrainingConfig) -> torch.nn.Module:
    """The model ``cfg.model`` names in `leadtrain.models.MODELS`, with fresh weights for the phase."""
    return MODELS[cfg.model].build(cfg)


def to_channels_last(cfg: TrainingConfig, model: torch.nn.Module) -> torch.nn.Module:
    """``channel_last=true``: the model's weights in channels_last memory format (the reference's
    ``model.to(memory_format=torch.channels_last)``), and the model's own input conversion (TFv6's encoders);
    else ``model`` unchanged."""
    if not cfg.channel_last:
        return model
    model = model.to(memory_format=torch.channels_last)
    MODELS[cfg.model].channels_last(model)
    log.info("channel_last=true: weights and encoder inputs in channels_last memory format")
    return model


def compiled(cfg: TrainingConfig, model: torch.nn.Module) -> torch.nn.Module:
    """``compile=true``: ``torch.compile`` (inductor, default mode) of the prepared (possibly DDP) model, last,
    as Accelerate does; the weights stay reachable with ``unwrap_model(..., keep_torch_compile=False)``.

    The reference asks for ``mode="max-autotune", fullgraph=True`` (and then trains the uncompiled module: it
    rebinds a local name); this keeps the default mode (minutes less compile time) and allows graph breaks, so an
    op dynamo cannot trace costs speed, not the state."""
    if not cfg.compile:
        return model
    log.info("compile=true: torch.compile (inductor); the first steps include the compile time")
    return torch.compile(model)


# ---- what a run holds --------------------------------------------------------------------------------------------
class MetricsLogger:
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

    def log(self, values: dict[str, float], step: int) -> None:
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


class NonFiniteWatch:
    """The first step whose total loss was not finite, and that step's losses, kept on the device: a per-step
    check without a host sync. `check` (a sync) raises on the logged steps and before every save."""

    def __init__(self) -> None:
        self.where: Tensor | None = None  # int64: epoch * 2**32 + step in epoch of the first non-finite total, or -1
        self.values: Tensor | None = None  # that step's [total, *losses]
        self.names: list[str] = []

    def update(self, epoch: int, step_in_epoch: int, total: Tensor, losses: dict[str, Tensor]) -> None:
        values = torch.stack([total.detach().float(), *(v.detach().float() for v in losses.values())])
        if self.where is None or self.values.shape != values.shape:
            self.where, self.values = torch.full((), -1, device=total.device), torch.zeros_like(values)
            self.names = list(losses)
        first = (self.where < 0) & ~torch.isfinite(values[0])
        self.where = torch.where(first, (epoch << 32) + step_in_epoch, self.where)
        self.values = torch.where(first, values, self.values)

    def check(self) -> None:
        """Raises FloatingPointError (naming the step and its losses) if a total loss was not finite."""
        if self.where is None or int(self.where) < 0:
            return
        (epoch, step), values = divmod(int(self.where), 1 << 32), self.values.tolist()
        raise FloatingPointError(f"loss is {values[0]} at epoch {epoch} step {step}: "
                                 f"{dict(zip(self.names, values[1:], strict=True))}")


@dataclass
class Window:
    """Since the last logged step: seconds waiting for batches, seconds in steps, samples (all ranks)."""

    stall: float = 0.0
    seconds: float = 0.0
    samples: int = 0


@dataclass
class RunResult:
    logdir: Path
    epochs_done: int
    steps: int
    seconds_per_epoch: list[float]
    data_stall_pct: float
    final_losses: dict[str, float]
    main: bool = True  # this process is rank 0 (the one that reports)


@dataclass
class StepOutput:
    """One step's predictions and losses, on the device (``total`` = sum of ``scaled``)."""

    pred: dict[str, Any]
    losses: dict[str, Tensor]
    scaled: dict[str, Tensor]
    total: Tensor
    metrics: dict[str, float] | None

    def host_losses(self) -> dict[str, float]:
        """Unweighted losses and the total as floats (a host sync)."""
        return {k: float(v.detach()) for k, v in self.losses.items()} | {"total": float(self.total.detach())}


@dataclass
class TrainState:
    """What `setup` builds and the training functions advance, on one process."""

    cfg: TrainingConfig
    spec: ModelSpec
    accelerator: Any
    loader: Any
    model: torch.nn.Module  # prepared (DDP, torch.compile): the one to call
    core: torch.nn.Module  # the bare model: its weights, its losses
    optimizer: torch.optim.Optimizer
    scheduler: Any
    weights: dict[str, float]  # normalised loss weights (`ModelSpec.loss_weights`)
    steps_per_epoch: int  # the first epoch's steps: T_0 of the cosine schedule, LEAD's step count
    per_rank: int  # samples per process and step
    loss_dtype: torch.dtype | None = None  # what the weighted losses are summed in (`ModelSpec.set_precision`)
    logger: MetricsLogger | None = None
    epoch: int = 0  # the epoch to train next
    step_in_epoch: int = 0
    global_step: int = 0
    skipped: int = 0  # optimizer steps the GradScaler skipped, cumulative
    epoch_times: list[float] = field(default_factory=list)
    stall_s: float = 0.0  # whole run: time waiting for batches, time in steps
    step_s: float = 0.0
    window: Window = field(default_factory=Window)
    last_losses: dict[str, float] = field(default_factory=dict)
    last_resume: float = field(default_factory=time.monotonic)
    nonfinite: NonFiniteWatch = field(default_factory=NonFiniteWatch)
    epoch_loss: Tensor | None = None  # sum of this epoch's total losses, on the device
    epoch_steps: int = 0
    skipped_before: int = 0  # the loader's skipped samples before this epoch (on_error=skip)
    resumed_from: str = ""  # what `restore` continued from, for the start-up summary

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def logdir(self) -> Path:
        return Path(self.cfg.logdir)

    @property
    def phase(self) -> str:
        return "posttrain" if self.cfg.use_planning_decoder else "pretrain"

    @property
    def viz_dir(self) -> Path:
        """This phase's pictures: ``<viz_dir>/<phase>/`` (a fresh run sets the earlier ones aside)."""
        return Path(self.cfg.viz_dir) / self.phase

    @property
    def stall_pct(self) -> float:
        return 100 * self.stall_s / max(self.step_s, 1e-9)

    def steps_in(self, epoch: int) -> int:
        full = self.loader.batches_in_epoch(epoch)
        return min(full, self.cfg.max_steps_per_epoch) if self.cfg.max_steps_per_epoch else full

    def states(self) -> dict[str, dict]:
        """model / optimizer / scheduler / scaler state dicts (the epoch files' content)."""
        scaler = self.accelerator.scaler
        return {"model": self.core.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else {}}


# ---- set-up ----------------------------------------------------------------------------------------------------
def _open_loader(cfg: TrainingConfig, per_rank: int, world: int, rank: int):
    root = Path(cfg.root)
    set_dir = shard_set_dir(root, cfg.shard_collection, dataset_config_for_root(root))
    if not (set_dir / "manifest.json").exists():
        raise FileNotFoundError(f"no shard set at {set_dir}; build it first: python -m leadio.shard --root {root} "
                                f"--collection {cfg.shard_collection}")
    cuda = torch.cuda.is_available()
    backend = choose_backend(cfg.backend)
    # device: where the loader makes batches. Only dali makes them on the GPU (nvJPEG); the cpu backend's
    # batches are pinned and copied to the GPU by the step (non_blocking).
    return open_dataset(set_dir, collection=cfg.collection, keys=PERCEPTION_KEYS, batch_size=per_rank,
                        backend=backend, world_size=world, rank=rank, seed=cfg.seed, num_workers=cfg.num_workers,
                        perturbation_rate=cfg.perturbation_rate, on_error=cfg.on_error, pin_memory=cuda,
                        device="cuda" if cuda and backend == "dali" else None)


def _log_loaded(info: dict, path: Path, what: str) -> None:
    log.info("%s=%s: %d keys loaded%s%s", what, path, info["matched"],
             f"; new (random init): {', '.join(info['new_modules'])}" if info["new_modules"] else "",
             f"; not in this model: {', '.join(info['dropped_modules'])}" if info["dropped_modules"] else "")


def setup(cfg: TrainingConfig) -> TrainState:
    """Accelerator, loader, model (``load_file`` loaded), AdamW and the cosine schedule, prepared. Writes
    nothing: any mistake found here (a missing shard set or ``load_file``, an unknown collection, a batch larger
    than the data, missing ImageNet weights) leaves the logdir as it was (`commit_logdir` comes later)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(mixed_precision=detect_mixed_precision(cfg.mixed_precision),
                              cpu=not torch.cuda.is_available())
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by the {world} processes")
    per_rank = cfg.batch_size // world
    set_seed(cfg.seed)
    loader = _open_loader(cfg, per_rank, world, rank)
    spec = MODELS[cfg.model]
    weights = spec.loss_weights(cfg)  # a bad loss_weights key fails here, before any step
    model = spec.build(cfg)  # TFv6 fetches ImageNet weights main process first itself (a barrier every rank passes)
    if cfg.load_file and not cfg.continue_failed_training:  # post-training: the planner is new
        _log_loaded(load_model_file(model, Path(cfg.load_file), "load_file"), Path(cfg.load_file), "load_file")
    loss_dtype = spec.set_precision(model, cfg.precision, str(accelerator.mixed_precision))
    model = to_channels_last(cfg, model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=True,
                                  fused=torch.cuda.is_available() or None)
    state = TrainState(cfg=cfg, spec=spec, accelerator=accelerator, loader=loader, model=model, core=model,
                       optimizer=optimizer, scheduler=None, weights=weights, steps_per_epoch=0, per_rank=per_rank,
                       loss_dtype=loss_dtype)
    state.steps_per_epoch = state.steps_in(0)
    if state.steps_per_epoch == 0:
        raise ValueError(f"collection {cfg.collection!r} gives fewer than one batch of {per_rank} samples per "
                         f"process per epoch: lower batch_size or add data")
    state.scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=state.steps_per_epoch,
                                                                         T_mult=2)
    state.model, state.optimizer = accelerator.prepare(model, optimizer)
    state.model = compiled(cfg, state.model)
    state.core = accelerator.unwrap_model(state.model, keep_torch_compile=False)
    state.skipped_before = loader.stats.skipped
    return state


# ---- restore -----------------------------------------------------------------------------------------------------
def _complete_epoch(logdir: Path, epoch: int | None) -> bool:
    return epoch is not None and all((logdir / f"{n}_{epoch:04d}.pth").exists() for n in EPOCH_FILES)


def _epoch_files_state(logdir: Path, epoch: int | None = None) -> dict | None:
    """Epoch ``epoch``'s files (default: the newest complete ones) as a resume state (a run killed before any
    ``resume/``, a damaged ``resume/``, or the reference's checkpoints): training continues at the next epoch's
    start."""
    if not _complete_epoch(logdir, epoch):
        latest = latest_epoch_checkpoint(logdir)
        if latest is None:
            return None
        epoch = latest[0]
    skipped_file = logdir / f"gradient_steps_skipped_{epoch:04d}.txt"
    verify_checkpoint_file(skipped_file)
    return {"weights_from_epoch": epoch, "epoch": epoch + 1, "step_in_epoch": 0,
            "skipped": int(skipped_file.read_text())}


def _saved_state(state: TrainState) -> dict | None:
    """``<logdir>/resume`` or, without it or when it is damaged (saying so), the epoch files."""
    logdir = state.logdir
    try:
        saved = load_resume_state(logdir)
    except DamagedCheckpointError as e:
        where = resume_summary(logdir)
        saved = _epoch_files_state(logdir, where.get("weights_from_epoch"))
        if state.main:
            lost = (f"; the first {where['step_in_epoch']} steps of epoch {where['epoch']} are trained again"
                    if where.get("step_in_epoch") else "")
            instead = (f"the epoch files it points at, {EPOCH_FILES[0]}_{saved['weights_from_epoch']:04d}.pth and "
                       f"its siblings (training continues at the start of epoch {saved['epoch']}{lost})"
                       if saved else "none are there: starting from scratch")
            log.warning("continue_failed_training: %s; continuing from %s", e, instead)
        return saved
    return saved if saved is not None else _epoch_files_state(logdir)


def _apply_changed_hyperparameters(state: TrainState) -> None:
    """The saved optimizer and schedule carry ``lr``, ``weight_decay`` and the schedule's period (steps per
    epoch). A changed ``lr`` or ``weight_decay`` is applied from the next step on (the schedule keeps its
    position), said once; a changed period is refused: it comes from ``batch_size``, ``max_steps_per_epoch`` and
    the number of processes, and the saved schedule and data position only fit the old one."""
    cfg, scheduler, optimizer = state.cfg, state.scheduler, state.optimizer
    if scheduler.T_0 != state.steps_per_epoch:
        raise ValueError(f"continue_failed_training: this run has {state.steps_per_epoch} steps per epoch, the "
                         f"saved one {scheduler.T_0} (its cosine schedule's period); continue with the batch_size, "
                         f"max_steps_per_epoch and number of processes it ran with (see {state.logdir}/config.json), "
                         f"or start a fresh run")
    changed = []
    saved_lr = scheduler.base_lrs[0]
    if not math.isclose(saved_lr, cfg.lr, rel_tol=1e-9):
        scheduler.base_lrs = [cfg.lr] * len(scheduler.base_lrs)
        position = (1 + math.cos(math.pi * scheduler.T_cur / scheduler.T_i)) / 2
        for group in optimizer.param_groups:
            group["initial_lr"] = cfg.lr
            group["lr"] = scheduler.eta_min + (cfg.lr - scheduler.eta_min) * position
        changed.append(f"lr {saved_lr:g} -> {cfg.lr:g}")
    saved_wd = optimizer.param_groups[0]["weight_decay"]
    if not math.isclose(saved_wd, cfg.weight_decay, rel_tol=1e-9):
        for group in optimizer.param_groups:
            group["weight_decay"] = cfg.weight_decay
        changed.append(f"weight_decay {saved_wd:g} -> {cfg.weight_decay:g}")
    if changed and state.main:
        log.warning("continue_failed_training: applied the changed %s from the next step on (the saved optimizer "
                    "had the old value; the cosine schedule keeps its position)", ", ".join(changed))


def restore(state: TrainState) -> None:
    """``continue_failed_training=true``: load ``<logdir>/resume`` (mid-epoch: everything; at an epoch end: RNG,
    loader and counters, the weights from that epoch's files) or, without it, the newest complete epoch files.
    Every file is checked against its checksum; nothing is written (a refused resume leaves the logdir as it
    was)."""
    cfg, logdir = state.cfg, state.logdir
    if not cfg.continue_failed_training:
        return
    saved = _saved_state(state)
    if saved is None:
        if state.main:
            log.warning("continue_failed_training=true but %s holds no checkpoint: starting from scratch", logdir)
        state.resumed_from = f"nothing ({logdir} holds no checkpoint): from scratch"
        return
    if "weights_from_epoch" in saved:  # the weights are that epoch's files
        e = saved["weights_from_epoch"]
        path = logdir / f"model_{e:04d}.pth"
        info = load_model_file(state.core, path, "continue_failed_training", strict=True)
        if state.main:
            _log_loaded(info, path, "continue_failed_training")
        saved.update({n: load_checkpoint_file(logdir / f"{n}_{e:04d}.pth") for n in EPOCH_FILES[1:]})
        source = str(path)
    else:
        fit_state_dict(state.core, saved["model"], f"continue_failed_training={logdir / 'resume'}", strict=True)
        source = str(logdir / "resume")
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    if state.accelerator.scaler is not None and saved.get("scaler"):
        state.accelerator.scaler.load_state_dict(saved["scaler"])
    _apply_changed_hyperparameters(state)
    if "rng_cpu" in saved:  # a resume state (not bare epoch files): RNG and the data stream too
        state.loader.load_state_dict(saved["loader"])  # a ValueError if the data changed: before any RNG is set
        torch.set_rng_state(saved["rng_cpu"])
        if torch.cuda.is_available() and saved.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(saved["rng_cuda"])
    state.epoch, state.step_in_epoch, state.skipped = saved["epoch"], saved["step_in_epoch"], saved["skipped"]
    state.resumed_from = f"{source}: epoch {state.epoch}, step {state.step_in_epoch}"
    if state.main:
        log.info("continuing from %s", state.resumed_from)


# ---- the logdir, and what is about to run ----------------------------------------------------------------------
def commit_logdir(state: TrainState) -> list[str]:
    """After a successful `setup` and `restore`: a fresh run sets the previous run's files (checkpoints, events,
    resume state, checksums and its config.json) aside into ``<logdir>/previous_run/`` and its pictures into
    ``<viz_dir>/<phase>/previous_run/``; then config.json is written. Returns what was set aside (main process)."""
    notes: list[str] = []
    if state.main:
        state.logdir.mkdir(parents=True, exist_ok=True)
        if not state.cfg.continue_failed_training:
            for folder, (moved, aside) in ((state.logdir, set_aside_previous_run(state.logdir)),
                                           (state.viz_dir, set_aside_previous_run(state.viz_dir, ("*.png",), ()))):
                if moved:
                    names = ", ".join(moved[:3]) + (", ..." if len(moved) > 3 else "")
                    notes.append(f"fresh run: the previous run's {len(moved)} file{'s' if len(moved) != 1 else ''} "
                                 f"in {folder} ({names}) moved to {aside}")
        state.cfg.save(state.logdir)
    state.accelerator.wait_for_everyone()
    return notes


PRECISION = {"no": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast with a grad scaler"}


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 10_000 else str(n)


def startup_summary(state: TrainState, notes: list[str] = ()) -> list[str]:
    """What is about to run, one fact per line: model and parameters, encoders, precision and processes, data
    root, shard set and collection, samples and steps per epoch, epochs, loader backend and decode threads,
    logdir, pictures, and where training starts."""
    cfg, loader, acc = state.cfg, state.loader, state.accelerator
    params = sum(p.numel() for p in state.core.parameters())
    trainable = sum(p.numel() for p in state.core.parameters() if p.requires_grad)
    encoders = getattr(state.core, "encoder_implementation", None) or (  # the model's own word, else looked up
        "timm" if any(type(m).__module__.startswith("timm.") for m in state.core.modules()) else "built-in")
    world = acc.num_processes
    batches = loader.batches_in_epoch(state.epoch)
    steps = state.steps_in(state.epoch)
    capped = f" (max_steps_per_epoch={cfg.max_steps_per_epoch} of {batches})" if steps < batches else ""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    start = state.resumed_from or (f"load_file={cfg.load_file}" if cfg.load_file else "fresh weights")
    lines = [
        f"{state.phase}: model {cfg.model}" + (f" (model_size={cfg.model_size}; model=tfv6 trains the reference's "
                                              f"TransFuser v6)" if cfg.model != "tfv6" else ""),
        f"parameters: {_millions(params)} ({_millions(trainable)} trainable); encoders: {encoders}",
        f"precision: {PRECISION.get(str(acc.mixed_precision), acc.mixed_precision)} (mixed_precision="
        f"{cfg.mixed_precision}{'' if acc.mixed_precision == 'no' else f', precision={cfg.precision}'}) on "
        f"{device}, {world} process{'es' if world > 1 else ''}; batch "
        f"{cfg.batch_size} ({state.per_rank} per process)",
        f"data: root {cfg.root}, shard set {loader.shard_set.path}, collection {loader.collection.name}",
        f"per epoch: {batches * cfg.batch_size} samples, {steps} step{'s' if steps != 1 else ''}{capped}",
        f"epochs: {state.epoch} to {cfg.epochs - 1} ({cfg.epochs - state.epoch} of {cfg.epochs}), starting from "
        f"{start}",
        f"loader: backend {loader.backend}, {loader.num_workers} decode threads per process, on_error={cfg.on_error}",
        f"logdir: {state.logdir}; pictures: "
        f"{state.viz_dir if cfg.visualize_training else 'off (visualize_training=false)'}",
        *notes,
    ]
    return lines


# ---- resume states -----------------------------------------------------------------------------------------------
def save_resume(state: TrainState, epoch: int, step: int, weights_from_epoch: int | None = None) -> None:
    """``<logdir>/resume``: mid-epoch everything; at an epoch end (``weights_from_epoch``) no weights, a pointer
    to that epoch's files. Every rank waits for it."""
    state.nonfinite.check()
    if state.main:
        heavy = state.states() if weights_from_epoch is None else {"weights_from_epoch": weights_from_epoch}
        save_resume_state(state.logdir, {**heavy, "epoch": epoch, "step_in_epoch": step, "skipped": state.skipped,
                                       "loader": state.loader.state_dict(), "rng_cpu": torch.get_rng_state(),
                                       "rng_cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None})
    state.last_resume = time.monotonic()
    state.accelerator.wait_for_everyone()


def resume_due(state: TrainState) -> bool:
    """Every ``resume_every_steps`` steps, or when ``resume_every_minutes`` have passed (rank 0's clock)."""
    cfg = state.cfg
    if cfg.resume_every_steps and state.step_in_epoch % cfg.resume_every_steps == 0:
        return True
    if not cfg.resume_every_minutes:
        return False
    due = torch.tensor(float(time.monotonic() - state.last_resume >= 60 * cfg.resume_every_minutes))
    if state.accelerator.num_processes > 1:  # every rank must take the same decision (a barrier follows)
        due = state.accelerator.reduce(due.to(state.accelerator.device), reduction="sum").cpu()
    return bool(due > 0)


# ---- training ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def planning_metrics(pred: dict[str, Any], batch: dict[str, Tensor], metrics: dict) -> None:
    """``metric/{waypoints,route}_{ade,fde}`` (m, L2; over the samples with targets) from the visualiser's names
    of the predictions (`ModelSpec.viz`) and the leadio batch, for a model that predicts them and did not report
    them itself (the compact model; TFv6 reports its own, as the reference does)."""
    valid = batch["has_targets"].reshape(-1) > 0.5 if "has_targets" in batch else None
    for name in ("waypoints", "route"):
        if f"metric/{name}_ade" in metrics or pred.get(name) is None or name not in batch:
            continue
        p = pred[name].detach().float()
        t = batch[name].float()[:, : p.shape[1]]
        ok = torch.isfinite(t).flatten(1).all(1) & (valid if valid is not None else True)
        if not bool(ok.any()):
            continue
        err = (p[ok] - t[ok]).norm(dim=-1)
        metrics[f"metric/{name}_ade"] = float(err.mean())
        metrics[f"metric/{name}_fde"] = float(err[:, -1].mean())


def train_step(state: TrainState, batch: dict[str, Tensor], metrics: dict | None) -> StepOutput:
    """Forward, weighted losses, backward, optimizer and scheduler step; no host sync (``metrics``: a dict to
    fill on logged steps)."""
    spec, cfg = state.spec, state.cfg
    with state.accelerator.autocast():
        data = spec.prepare(cfg, batch)
        pred = spec.forward(cfg, state.model, data)
        losses = spec.losses(state.core, pred, data, metrics)
        scaled, total = weighted_sum(losses, state.weights, state.loss_dtype)
    if metrics is not None:
        planning_metrics(spec.viz(pred), batch, metrics)
    state.nonfinite.update(state.epoch, state.step_in_epoch, total, losses)
    state.epoch_loss = total.detach().float() + (0.0 if state.epoch_loss is None else state.epoch_loss)
    state.epoch_steps += 1
    state.optimizer.zero_grad(set_to_none=True)
    state.accelerator.backward(total)
    state.optimizer.step()
    if state.accelerator.optimizer_step_was_skipped:
        state.skipped += 1
    state.scheduler.step(state.epoch * state.steps_per_epoch + state.step_in_epoch)
    state.step_in_epoch += 1
    state.global_step += 1
    return StepOutput(pred, losses, scaled, total, metrics)


def log_step(state: TrainState, step: StepOutput, bar: tqdm) -> None:
    """Every ``log_scalars_frequency`` steps and on each epoch's last step: the non-finite check on every rank; on
    rank 0 the reference's tags (unscaled_loss/*, scaled_loss/*, metric/*, debug/*) plus throughput and memory,
    for this step."""
    state.nonfinite.check()
    window, state.window = state.window, Window()
    if not state.main:
        return
    cfg, scaler = state.cfg, state.accelerator.scaler
    losses = step.host_losses()
    total_steps = state.steps_per_epoch * cfg.epochs
    values = {f"unscaled_loss/{k}": v for k, v in losses.items() if k != "total"}
    values |= {f"scaled_loss/{k}": float(v.detach()) for k, v in step.scaled.items()}
    values["scaled_loss/total"] = losses["total"]
    values |= step.metrics or {}
    values |= {"debug/epoch": state.epoch, "debug/lr_0": state.scheduler.get_last_lr()[0],
               "debug/batch_size_per_gpu": state.per_rank, "debug/num_gpu": torch.cuda.device_count(),
               "debug/model_size": sum(p.numel() for p in state.core.parameters() if p.requires_grad),
               "debug/gradient_steps_skipped": state.skipped, "debug/num_gradient_steps": total_steps,
               "debug/steps_left": total_steps - state.global_step,
               "debug/average_loading_time": window.stall / max(window.samples, 1)}
    if scaler is not None:
        values["debug/grad_scale"] = scaler.get_scale()
    values["throughput/samples_per_s"] = window.samples / max(window.seconds, 1e-9)
    values["throughput/data_stall_pct"] = 100.0 * window.stall / max(window.seconds, 1e-9)
    if torch.cuda.is_available():
        values["debug/max_gpu_mem"] = torch.cuda.max_memory_allocated() / 1024**3
    values["memory/host_max_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    state.logger.log(values, state.global_step)
    bar.set_postfix(loss=f"{losses['total']:.3f}", refresh=False)


def draw_step(state: TrainState, batch: dict[str, Tensor], step: StepOutput) -> None:
    """The training picture of sample 0 (`leadtrain.viz`), to ``<viz_dir>/<phase>/`` and TensorBoard/W&B."""
    image = render_sample(batch, state.spec.viz(step.pred), epoch=state.epoch, step=state.global_step,
                          losses=step.host_losses(), phase=state.phase)
    save_png(image, state.viz_dir / f"{state.phase}_e{state.epoch:04d}_s{state.global_step:07d}.png")
    state.logger.image(f"{state.phase}/sample", image, state.global_step)


def _next_batch(state: TrainState, batches) -> dict[str, Tensor] | None:
    """The loader's next batch; an unreadable sample (``on_error=raise``) is re-raised with how to go on."""
    try:
        return next(batches, None)
    except ShardSetError as e:
        cfg = state.cfg
        rebuild = "" if "python -m leadio.shard" in str(e) else (
            f"; rebuild the set with `python -m leadio.shard --root {cfg.root} --collection {cfg.shard_collection}`")
        raise ShardSetError(f"{e}{rebuild}; or train on with on_error=skip (such samples are then skipped, counted "
                            f"and logged each epoch)") from e


def train_epoch(state: TrainState) -> None:
    """Epoch ``state.epoch`` from ``state.step_in_epoch`` (non-zero after a mid-epoch resume), then `end_epoch`."""
    epoch = state.epoch
    state.loader.set_epoch(epoch)
    steps = state.steps_in(epoch)
    state.model.train()
    t_epoch = time.perf_counter()
    bar = tqdm(total=steps, initial=state.step_in_epoch, desc=f"{state.phase} epoch {epoch}", disable=not state.main,
               dynamic_ncols=True, leave=False)
    try:
        step = _train_batches(state, steps, bar)
    finally:
        bar.close()  # also on an error or Ctrl-C: the message that follows starts on its own line
    end_epoch(state, t_epoch, step)


def _train_batches(state: TrainState, steps: int, bar: tqdm) -> StepOutput | None:
    """The steps of `train_epoch` up to ``steps``; returns the last one."""
    cfg, epoch = state.cfg, state.epoch
    batches, step, drawn = iter(state.loader), None, False
    while state.step_in_epoch < steps:
        t0 = time.perf_counter()
        batch = _next_batch(state, batches)
        if batch is None:
            break
        t_data = time.perf_counter()
        batch = {k: v.to(state.accelerator.device, non_blocking=True) for k, v in batch.items()}
        log_due = (state.global_step + 1) % cfg.log_scalars_frequency == 0 or state.step_in_epoch + 1 == steps
        step = train_step(state, batch, {} if log_due and state.main else None)
        t_end = time.perf_counter()
        state.window.stall += t_data - t0
        state.window.seconds += t_end - t0
        state.window.samples += state.per_rank * state.accelerator.num_processes
        state.stall_s += t_data - t0
        state.step_s += t_end - t0
        bar.update(1)
        if log_due:
            log_step(state, step, bar)
        if state.main and cfg.visualize_training and (state.global_step % cfg.log_images_frequency == 0 or not drawn):
            draw_step(state, batch, step)
            drawn = True
        if state.step_in_epoch < steps and resume_due(state):
            save_resume(state, epoch, state.step_in_epoch)
    return step


def _epoch_scalars(state: TrainState, seconds: float) -> tuple[dict[str, float], int]:
    """``epoch/*`` of the epoch just trained (rank 0's losses; skipped samples of every rank) and the skips."""
    skipped = state.loader.stats.skipped - state.skipped_before
    state.skipped_before = state.loader.stats.skipped
    if state.accelerator.num_processes > 1:
        total = torch.tensor(float(skipped), device=state.accelerator.device)
        skipped = int(state.accelerator.reduce(total, reduction="sum").item())
    samples = state.epoch_steps * state.per_rank * state.accelerator.num_processes
    mean = float(state.epoch_loss) / state.epoch_steps if state.epoch_steps else math.nan
    state.epoch_loss, state.epoch_steps = None, 0
    return {"epoch/loss_total": mean, "epoch/seconds": seconds, "epoch/samples_per_s": samples / max(seconds, 1e-9),
            "epoch/data_stall_pct": state.stall_pct, "epoch/samples_skipped": skipped}, skipped


def end_epoch(state: TrainState, t_epoch: float, step: StepOutput | None) -> None:
    """The epoch's files (LEAD's layout), the epoch-end resume state, pruning, ``epoch/*`` scalars and one log
    line (with the samples skipped under ``on_error=skip``); next epoch."""
    epoch = state.epoch
    state.nonfinite.check()
    if state.main:
        save_epoch_checkpoint(state.logdir, epoch, state.states(), state.skipped)
    state.epoch_times.append(time.perf_counter() - t_epoch)
    scalars, skipped = _epoch_scalars(state, state.epoch_times[-1])
    if step is not None:
        state.last_losses = step.host_losses()
    state.epoch, state.step_in_epoch = epoch + 1, 0
    state.loader.set_epoch(epoch + 1)
    save_resume(state, epoch + 1, 0, weights_from_epoch=epoch)  # before pruning: it points at this epoch's files
    if state.main:
        prune_epoch_files(state.logdir, epoch, list(state.cfg.epoch_checkpoints_keep))
        state.logger.log(scalars, state.global_step)
        skips = ""
        if skipped:
            names = state.loader.stats.skipped_samples[-min(skipped, 3):]
            skips = f", {skipped} unreadable samples skipped (on_error=skip; e.g. {'; '.join(names)})"
        log.info("%s epoch %d: %.1fs, loss %.4f, data stall %.1f%%%s", state.phase, epoch, state.epoch_times[-1],
                 state.last_losses.get("total", math.nan), state.stall_pct, skips)


def _write_rank_summary(state: TrainState) -> None:
    """``run_summary_rank{r}.json``: steps taken and a checksum of the weights, per rank (DDP sanity check)."""
    h = hashlib.sha256()  # learned parameters only: DDP keeps those equal; BatchNorm statistics are per rank
    for name, tensor in sorted(state.core.named_parameters()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    rank = state.accelerator.process_index
    summary = {"rank": rank, "global_steps": state.global_step, "seconds_per_epoch": state.epoch_times,
               "data_stall_pct": state.stall_pct, "weights_sha256": h.hexdigest()}
    atomic_write_bytes(state.logdir / f"run_summary_rank{rank}.json", json.dumps(summary, indent=1).encode())


def run(cfg: TrainingConfig) -> RunResult:
    """Train as ``cfg`` says; returns what was done (rank 0's view; ``main`` says whether this is rank 0).

    Nothing is written before `setup` and `restore` succeeded (`commit_logdir`)."""
    state = setup(cfg)
    try:
        restore(state)
        start_epoch = state.epoch
        state.global_step = state.epoch * state.steps_per_epoch + state.step_in_epoch
        notes = commit_logdir(state)
        if state.main:
            for line in startup_summary(state, notes):
                log.info("%s", line)
        state.logger = MetricsLogger(cfg, state.main)
        while state.epoch < cfg.epochs:
            train_epoch(state)
    finally:
        if state.logger is not None:
            state.logger.close()
        state.loader.close()
    _write_rank_summary(state)
    state.accelerator.wait_for_everyone()
    state.accelerator.end_training()
    return RunResult(state.logdir, cfg.epochs - start_epoch, state.global_step, state.epoch_times, state.stall_pct,
                     state.last_losses, state.main)
