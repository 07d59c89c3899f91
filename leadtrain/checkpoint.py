"""LEAD's checkpoint layout in the logdir, written atomically, plus the mid-epoch resume state.

After epoch e: ``model_{e:04d}.pth`` (state_dict without ``module.``), ``optimizer_``, ``scheduler_``,
``scaler_`` (same pattern) and ``gradient_steps_skipped_{e:04d}.txt`` (cumulative steps the GradScaler
skipped). For e > 0 the e-1 optimizer/scheduler/scaler/txt files are deleted, and ``model_{e-1}`` too unless
e is in ``epoch_checkpoints_keep`` (LEAD checks e, not e-1: kept as LEAD does it).

``resume/`` holds what an exact continuation needs beyond the epoch files: RNG states, the loader position and
counters, plus (mid-epoch only) the model, optimizer, scheduler and scaler. At an epoch end it holds no weights
and points at that epoch's files instead (a few KB, not a second copy of the checkpoint). It is always written
as a temp folder renamed into place, so a kill -9 leaves the previous complete state.

`load_model_file` loads a ``model_XXXX.pth`` (leadtrain's or the reference's; ``module.``/``_orig_mod.``
prefixes are stripped). Keys must match by name and shape, except whole top-level modules that one side lacks
(the planner when post-training starts from a pre-training checkpoint); anything else is an error that says how
many keys matched, never a silent start from scratch.

Why not accelerate's ``save_state``/``load_state`` (accelerate 1.16, measured with TFv6, 59.1 M parameters):
(1) the epoch files must keep LEAD's names (``model_0030.pth``, ``optimizer_...`` are what the reference agent,
``load_file`` and ``continue_failed_training`` read), and ``save_state`` writes fixed ones (``model.safetensors``,
``optimizer.bin``, ``random_states_0.pkl``, ...), so it could only replace ``resume/``; (2) there it writes the
whole state on every call: 946.8 MB in 1.5 s at each epoch end, where our epoch-end ``resume/`` is 6.7 KB
(0.6 ms) pointing at the epoch files just written; (3) it writes into the target folder file by file, and with
``total_limit`` deletes the oldest checkpoint before writing the new one, so a kill -9 during a save can leave
no complete state, while ``resume/`` is a temp folder renamed into place; (4) objects registered with
``register_for_checkpointing`` (the loader state) are reloaded by a full unpickle, ours with
``weights_only=True``. What it saves that we do not (Python's and numpy's global RNG per rank) adds nothing
here: leadtrain draws from neither, and every rank is seeded alike.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from leadio.files import replace_dir, temp_sibling

__all__ = ["EPOCH_FILES", "CheckpointMismatch", "clean_state_dict", "latest_epoch_checkpoint", "load_model_file",
           "load_resume_state", "prune_epoch_files", "save_atomic", "save_epoch_checkpoint", "save_resume_state",
           "set_aside_previous_run"]

EPOCH_FILES = ("model", "optimizer", "scheduler", "scaler")


class CheckpointMismatch(ValueError):
    """A model file whose keys do not fit the model."""


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes (the reference's names have neither)."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key.replace("._orig_mod.", ".")] = value
    return out


def load_model_file(model: torch.nn.Module, path: Path, what: str = "load_file") -> dict[str, Any]:
    """Load ``path`` into ``model`` (see the module docstring); returns counts and the modules left as they were.

    Raises:
        FileNotFoundError: no such file.
        CheckpointMismatch: keys or shapes that do not fit (message: matched / missing / unexpected counts).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what}={path}: no such file")
    state = clean_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    own = model.state_dict()
    matched = [k for k in own if k in state and state[k].shape == own[k].shape]
    reshaped = sorted(k for k in own if k in state and state[k].shape != own[k].shape)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))

    def top(keys) -> set[str]:
        return {k.split(".")[0] for k in keys}

    new_modules = top(missing) - top(state)  # modules the file lacks entirely (a new head)
    dropped_modules = top(unexpected) - top(own)  # modules the model lacks entirely
    stray = [k for k in missing if k.split(".")[0] not in new_modules] + [
        k for k in unexpected if k.split(".")[0] not in dropped_modules]
    if not matched or reshaped or stray:
        raise CheckpointMismatch(
            f"{what}={path} does not fit this model: {len(matched)} of {len(own)} keys match, {len(missing)} "
            f"missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), {len(reshaped)} of "
            f"another shape (e.g. {reshaped[:2]}); is it a checkpoint of this model and config (model=, "
            f"image_architecture=, ...)?")
    model.load_state_dict({k: state[k] for k in matched}, strict=False)
    return {"matched": len(matched), "new_modules": sorted(new_modules), "dropped_modules": sorted(dropped_modules)}


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp name beside ``path``, then rename (a killed save's temp is removed first)."""
    from leadio.files import remove_stale_temps, writing

    remove_stale_temps(path)
    tmp = temp_sibling(path)
    try:
        with writing(path), open(tmp, "wb") as f:  # a file object: a full disk surfaces as ENOSPC
            torch.save(obj, f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text_atomic(path: Path, text: str) -> None:
    from leadio.files import atomic_write_bytes

    atomic_write_bytes(path, text.encode())


def save_epoch_checkpoint(logdir: Path, epoch: int, states: dict[str, dict], skipped_steps: int) -> None:
    """Write the epoch's files (``states``: model/optimizer/scheduler/scaler state dicts)."""
    for name in EPOCH_FILES:
        state = clean_state_dict(states[name]) if name == "model" else states[name]
        save_atomic(state, logdir / f"{name}_{epoch:04d}.pth")
    _write_text_atomic(logdir / f"gradient_steps_skipped_{epoch:04d}.txt", f"{skipped_steps}\n")


def prune_epoch_files(logdir: Path, epoch: int, keep: list[int]) -> None:
    """Delete epoch-1's files as LEAD does after writing epoch's."""
    if epoch <= 0:
        return
    prev = epoch - 1
    for name in EPOCH_FILES[1:]:
        (logdir / f"{name}_{prev:04d}.pth").unlink(missing_ok=True)
    (logdir / f"gradient_steps_skipped_{prev:04d}.txt").unlink(missing_ok=True)
    if epoch not in keep:
        (logdir / f"model_{prev:04d}.pth").unlink(missing_ok=True)


def latest_epoch_checkpoint(logdir: Path) -> tuple[int, Path] | None:
    """(epoch, path) of the newest ``model_XXXX.pth`` whose sibling files are all present."""
    found = []
    for p in logdir.glob("model_*.pth"):
        m = re.fullmatch(r"model_(\d+)\.pth", p.name)
        if m and all((logdir / f"{n}_{m[1]}.pth").exists() for n in EPOCH_FILES):
            found.append((int(m[1]), p))
    return max(found) if found else None


#: What a training run leaves in its logdir (config.json is rewritten by every run; wandb/ keeps its own runs).
RUN_FILE_PATTERNS = ("model_*.pth", "optimizer_*.pth", "scheduler_*.pth", "scaler_*.pth",
                     "gradient_steps_skipped_*.txt", "events.out.tfevents.*", "run_summary_rank*.json", "resume")


def set_aside_previous_run(logdir: Path) -> list[str]:
    """Move an earlier run's checkpoints, event files and resume state into ``logdir/previous_run/``.

    A fresh run into a used logdir would otherwise leave e.g. the old ``model_0001.pth`` beside its own
    ``model_0000.pth``, and `latest_epoch_checkpoint` (post-training's default ``load_file``) would pick the
    stale one. Only the latest earlier run is kept (an older ``previous_run/`` is replaced). Returns the names
    moved.
    """
    moved = sorted({p.name for pattern in RUN_FILE_PATTERNS for p in logdir.glob(pattern)})
    if not moved:
        return []
    aside = logdir / "previous_run"
    tmp = temp_sibling(aside)
    tmp.mkdir(parents=True)
    for name in moved:
        os.replace(logdir / name, tmp / name)
    replace_dir(tmp, aside)
    return moved


def save_resume_state(logdir: Path, state: dict[str, Any]) -> None:
    """Replace ``logdir/resume`` with ``state`` (one torch file), atomically."""
    from leadio.files import remove_stale_temps, writing

    final = logdir / "resume"
    remove_stale_temps(final)  # a killed save's temp folder (only the main process writes the logdir)
    tmp = temp_sibling(final)
    tmp.mkdir(parents=True)
    try:
        with writing(final / "state.pth"), open(tmp / "state.pth", "wb") as f:
            torch.save(state, f)
        replace_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_resume_state(logdir: Path) -> dict[str, Any] | None:
    path = logdir / "resume" / "state.pth"
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
