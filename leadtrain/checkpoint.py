"""LEAD's checkpoint layout in the logdir, written atomically and checksummed, plus the mid-epoch resume state.

After epoch e: ``model_{e:04d}.pth`` (state_dict without ``module.``), ``optimizer_``, ``scheduler_``,
``scaler_`` (same pattern) and ``gradient_steps_skipped_{e:04d}.txt`` (cumulative steps the GradScaler
skipped). For e > 0 the e-1 optimizer/scheduler/scaler/txt files are deleted, and ``model_{e-1}`` too unless
e is in ``epoch_checkpoints_keep`` (LEAD checks e, not e-1: kept as LEAD does it).

Checksums: ``checksums.json`` beside the epoch files records each one's size and xxh3-128 as written (hashed
from the temp file before its rename; the file is rewritten atomically after each epoch's files). Every load
(`load_checkpoint_file`: ``load_file``, ``continue_failed_training``) compares a file that has an entry and
refuses a damaged one with `DamagedCheckpointError`, naming the file; a file without an entry (the reference's
checkpoints, or any copied without it) loads unverified. The reference never reads ``checksums.json``, so the
layout stays its own.

``resume/`` holds what an exact continuation needs beyond the epoch files: RNG states, the loader position and
counters, plus (mid-epoch only) the model, optimizer, scheduler and scaler. At an epoch end it holds no weights
and points at that epoch's files instead (a few KB, not a second copy of the checkpoint). It is always written
as a temp folder renamed into place, with its own ``checksums.json`` (which also records where the state stands:
epoch, step, the epoch files it points at), so a kill -9 leaves the previous complete state, and a damaged
``state.pth`` can be replaced by the epoch files (`resume_summary`).

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

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from leadio.files import atomic_write_bytes, file_xxh3, remove_stale_temps, replace_dir, temp_sibling, writing

__all__ = ["CHECKSUMS", "EPOCH_FILES", "CheckpointMismatch", "DamagedCheckpointError", "clean_state_dict",
           "fit_state_dict", "latest_epoch_checkpoint", "load_checkpoint_file", "load_model_file",
           "load_resume_state", "prune_epoch_files", "record_checksums", "resume_summary", "save_atomic",
           "save_epoch_checkpoint", "save_resume_state", "set_aside_previous_run", "verify_checkpoint_file"]

log = logging.getLogger(__name__)

EPOCH_FILES = ("model", "optimizer", "scheduler", "scaler")
CHECKSUMS = "checksums.json"  # beside the epoch files, and in resume/; the reference ignores it


class CheckpointMismatch(ValueError):
    """A model file whose keys do not fit the model."""


class DamagedCheckpointError(ValueError):
    """A checkpoint file whose bytes differ from those written, or that cannot be read; ``path`` names it."""

    def __init__(self, path: Path, message: str):
        super().__init__(message)
        self.path = Path(path)


# ---- checksums ---------------------------------------------------------------------------------------------------
def _entry(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "xxh3_128": file_xxh3(path)}


def _read_checksums(folder: Path) -> dict[str, Any]:
    """``folder/checksums.json`` as a dict (``files``: name -> entry); empty when absent or unreadable."""
    path = folder / CHECKSUMS
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            raise ValueError("no 'files' table")
        return data
    except FileNotFoundError:
        return {"files": {}}
    except (OSError, ValueError) as e:
        log.warning("%s cannot be read (%s): the checkpoints beside it load unverified; it is rewritten with "
                    "the next checkpoint", path, e)
        return {"files": {}}


def _write_checksums(folder: Path, files: dict[str, Any], **extra: Any) -> None:
    remove_stale_temps(folder / CHECKSUMS)
    doc = {"version": 1, "algorithm": "xxh3-128", **extra, "files": dict(sorted(files.items()))}
    atomic_write_bytes(folder / CHECKSUMS, (json.dumps(doc, indent=1) + "\n").encode())


def record_checksums(folder: Path, new: dict[str, dict[str, Any]], forget: tuple[str, ...] = ()) -> None:
    """Rewrite ``folder/checksums.json``: the entries of files still there, minus ``forget``, plus ``new``."""
    old = _read_checksums(folder)["files"]
    files = {n: e for n, e in old.items() if n not in forget and (folder / n).exists()} | new
    if files != old or not (folder / CHECKSUMS).exists():
        _write_checksums(folder, files)


def verify_checkpoint_file(path: Path) -> bool:
    """Compare ``path`` with its entry in the ``checksums.json`` beside it: True if it matches, False if it has
    no entry (loaded unverified).

    Raises:
        DamagedCheckpointError: the size or the xxh3-128 differs from the one recorded when it was written.
    """
    path = Path(path)
    entry = _read_checksums(path.parent)["files"].get(path.name)
    if entry is None:
        return False
    recorded = path.parent / CHECKSUMS
    size = path.stat().st_size
    if size != entry.get("bytes"):
        raise DamagedCheckpointError(path, f"{path} is damaged: {size} bytes, {entry.get('bytes')} when it was "
                                           f"written (recorded in {recorded}); restore it from a copy")
    digest = file_xxh3(path)
    if digest != entry.get("xxh3_128"):
        raise DamagedCheckpointError(path, f"{path} is damaged: its xxh3-128 is {digest}, {recorded} recorded "
                                           f"{entry.get('xxh3_128')} when it was written; restore it from a copy")
    return True


def load_checkpoint_file(path: Path) -> Any:
    """``torch.load`` (CPU, ``weights_only``) of a checkpoint file, checked against its checksum first.

    Raises:
        FileNotFoundError: no such file.
        DamagedCheckpointError: its checksum differs (`verify_checkpoint_file`), or torch cannot read it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    verified = verify_checkpoint_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises RuntimeError, EOFError, UnpicklingError, BadZipFile, ...
        why = " ".join(str(e).split())[:200] or type(e).__name__
        hint = "" if verified else " (truncated?)"
        raise DamagedCheckpointError(path, f"{path} cannot be read as a checkpoint{hint}: {type(e).__name__}: "
                                           f"{why}") from e


# ---- model files -------------------------------------------------------------------------------------------------
def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes (the reference's names have neither)."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key.replace("._orig_mod.", ".")] = value
    return out


def fit_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str,
                   strict: bool = False) -> dict[str, Any]:
    """Load ``state`` into ``model`` (see the module docstring); ``strict``: no module may be new or dropped
    either (a continued run). Returns counts and the modules left as they were.

    Raises:
        CheckpointMismatch: keys or shapes that do not fit (message: matched / missing / unexpected counts).
    """
    state = clean_state_dict(state)
    own = model.state_dict()
    matched = [k for k in own if k in state and state[k].shape == own[k].shape]
    reshaped = sorted(k for k in own if k in state and state[k].shape != own[k].shape)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))

    def top(keys) -> set[str]:
        return {k.split(".")[0] for k in keys}

    new_modules = set() if strict else top(missing) - top(state)  # modules the file lacks entirely (a new head)
    dropped_modules = set() if strict else top(unexpected) - top(own)  # modules the model lacks entirely
    stray = [k for k in missing if k.split(".")[0] not in new_modules] + [
        k for k in unexpected if k.split(".")[0] not in dropped_modules]
    if not matched or reshaped or stray:
        raise CheckpointMismatch(
            f"{what} does not fit this model: {len(matched)} of {len(own)} keys match, {len(missing)} "
            f"missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), {len(reshaped)} of "
            f"another shape (e.g. {reshaped[:2]}); is it a checkpoint of this model and config (model=, "
            f"image_architecture=, ...)?")
    model.load_state_dict({k: state[k] for k in matched}, strict=False)
    return {"matched": len(matched), "new_modules": sorted(new_modules), "dropped_modules": sorted(dropped_modules)}


def load_model_file(model: torch.nn.Module, path: Path, what: str = "load_file",
                    strict: bool = False) -> dict[str, Any]:
    """Load the model file ``path`` into ``model`` (checksum checked, `fit_state_dict`).

    Raises:
        FileNotFoundError: no such file.
        DamagedCheckpointError: the file is damaged (`load_checkpoint_file`).
        CheckpointMismatch: keys or shapes that do not fit.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what}={path}: no such file")
    return fit_state_dict(model, load_checkpoint_file(Path(path)), f"{what}={path}", strict=strict)


# ---- epoch files -------------------------------------------------------------------------------------------------
def save_atomic(obj: Any, path: Path) -> dict[str, Any]:
    """torch.save to a temp name beside ``path``, then rename (a killed save's temp is removed first); returns
    the file's checksum entry (hashed before the rename)."""
    remove_stale_temps(path)
    tmp = temp_sibling(path)
    try:
        with writing(path), open(tmp, "wb") as f:  # a file object: a full disk surfaces as ENOSPC
            torch.save(obj, f)
        entry = _entry(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return entry


def save_epoch_checkpoint(logdir: Path, epoch: int, states: dict[str, dict], skipped_steps: int) -> None:
    """Write the epoch's files (``states``: model/optimizer/scheduler/scaler state dicts) and their checksums."""
    names = [f"{name}_{epoch:04d}.pth" for name in EPOCH_FILES]
    txt = logdir / f"gradient_steps_skipped_{epoch:04d}.txt"
    if any(n in _read_checksums(logdir)["files"] for n in [*names, txt.name]):  # rewritten (a continued epoch)
        record_checksums(logdir, {}, forget=(*names, txt.name))  # never an old entry beside a new file
    entries = {}
    for name, file in zip(EPOCH_FILES, names, strict=True):
        state = clean_state_dict(states[name]) if name == "model" else states[name]
        entries[file] = save_atomic(state, logdir / file)
    atomic_write_bytes(txt, f"{skipped_steps}\n".encode())
    entries[txt.name] = _entry(txt)
    record_checksums(logdir, entries)


def prune_epoch_files(logdir: Path, epoch: int, keep: list[int]) -> None:
    """Delete epoch-1's files as LEAD does after writing epoch's (and their checksum entries)."""
    if epoch <= 0:
        return
    prev = epoch - 1
    for name in EPOCH_FILES[1:]:
        (logdir / f"{name}_{prev:04d}.pth").unlink(missing_ok=True)
    (logdir / f"gradient_steps_skipped_{prev:04d}.txt").unlink(missing_ok=True)
    if epoch not in keep:
        (logdir / f"model_{prev:04d}.pth").unlink(missing_ok=True)
    record_checksums(logdir, {})


def latest_epoch_checkpoint(logdir: Path) -> tuple[int, Path] | None:
    """(epoch, path) of the newest ``model_XXXX.pth`` whose sibling files are all present."""
    found = []
    for p in logdir.glob("model_*.pth"):
        m = re.fullmatch(r"model_(\d+)\.pth", p.name)
        if m and all((logdir / f"{n}_{m[1]}.pth").exists() for n in EPOCH_FILES):
            found.append((int(m[1]), p))
    return max(found) if found else None


#: What a training run leaves in its logdir (wandb/ keeps its own runs). ``config.json`` goes along when any of
#: these does, so a set-aside checkpoint keeps the config that builds its model.
RUN_FILE_PATTERNS = ("model_*.pth", "optimizer_*.pth", "scheduler_*.pth", "scaler_*.pth",
                     "gradient_steps_skipped_*.txt", "events.out.tfevents.*", "run_summary_rank*.json", "resume",
                     CHECKSUMS)


#: What makes a set-aside run worth keeping over a later one that left none of it.
CHECKPOINT_PATTERNS = ("model_*.pth", "resume")


def set_aside_previous_run(folder: Path, patterns: tuple[str, ...] = RUN_FILE_PATTERNS,
                           companions: tuple[str, ...] = ("config.json",)) -> tuple[list[str], Path | None]:
    """Move an earlier run's files (``patterns``, plus ``companions`` when any of those moves) into
    ``folder/previous_run/``.

    A fresh run into a used logdir would otherwise leave e.g. the old ``model_0001.pth`` beside its own
    ``model_0000.pth``, and `latest_epoch_checkpoint` (post-training's default ``load_file``) would pick the
    stale one. Only the latest earlier run is kept (an older ``previous_run/`` is replaced), except that a run
    which left no checkpoint (it failed in its first epoch: events and config.json only) never replaces one that
    did: it goes to ``folder/previous_run_without_checkpoint/`` instead. Returns the names moved and where to
    (None when nothing was there).
    """
    moved = sorted({p.name for pattern in patterns for p in folder.glob(pattern)})
    if not moved:
        return [], None
    moved += [name for name in companions if (folder / name).exists()]
    aside = folder / "previous_run"
    if patterns == RUN_FILE_PATTERNS and not _any_match(folder, CHECKPOINT_PATTERNS) and \
            _any_match(aside, CHECKPOINT_PATTERNS):
        aside = folder / "previous_run_without_checkpoint"
    tmp = temp_sibling(aside)
    tmp.mkdir(parents=True)
    for name in moved:
        os.replace(folder / name, tmp / name)
    replace_dir(tmp, aside)
    return moved, aside


def _any_match(folder: Path, patterns: tuple[str, ...]) -> bool:
    return any(next(folder.glob(pattern), None) is not None for pattern in patterns)


# ---- resume state ------------------------------------------------------------------------------------------------
def save_resume_state(logdir: Path, state: dict[str, Any]) -> None:
    """Replace ``logdir/resume`` with ``state`` (one torch file) and its checksum, atomically."""
    final = logdir / "resume"
    remove_stale_temps(final)  # a killed save's temp folder (only the main process writes the logdir)
    tmp = temp_sibling(final)
    tmp.mkdir(parents=True)
    try:
        with writing(final / "state.pth"), open(tmp / "state.pth", "wb") as f:
            torch.save(state, f)
        where = {k: state.get(k) for k in ("epoch", "step_in_epoch", "weights_from_epoch")}
        _write_checksums(tmp, {"state.pth": _entry(tmp / "state.pth")}, state=where)
        replace_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_resume_state(logdir: Path) -> dict[str, Any] | None:
    """``logdir/resume/state.pth``, checked; None if there is none.

    Raises:
        DamagedCheckpointError: it is damaged or truncated (see `resume_summary` for where it stood).
    """
    path = logdir / "resume" / "state.pth"
    if not path.exists():
        return None
    return load_checkpoint_file(path)


def resume_summary(logdir: Path) -> dict[str, Any]:
    """Where ``logdir/resume`` stood, from its ``checksums.json`` (``epoch``, ``step_in_epoch``,
    ``weights_from_epoch``); empty if unknown."""
    state = _read_checksums(logdir / "resume").get("state")
    return state if isinstance(state, dict) else {}
