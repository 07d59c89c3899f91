"""TrainingConfig: LEAD's training options that apply here, with LEAD's defaults, `key=value` overrides.

Overrides are parsed against each field's type (``epochs=3``, ``log_wandb=true``, ``load_file=null``,
``epoch_checkpoints_keep=[7,15]``); an unknown key or a value of the wrong type is an error listing the valid
keys or the expected type. The resolved config (fields and derived properties) is written to
``<logdir>/config.json`` (indent 4, as LEAD does). With ``load_file``, the ``config.json`` beside it is the
base config and the command line overrides it (how post-training inherits the pre-training config).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "TrainingConfig", "detect_mixed_precision", "parse_overrides"]


class ConfigError(ValueError):
    """A bad key or value in the training config."""


@dataclass(kw_only=True)
class TrainingConfig:
    """Training options (LEAD's names and defaults where LEAD has them)."""

    # data
    root: str = "data/carla_leaderboard2"            # dataset root (raw routes, buckets, shards)
    collection: str = "full_pretrain"                # bucket collection to plan over
    shard_collection: str = "full_pretrain"          # collection whose shard set holds the samples
    perturbation_rate: float = 0.5                   # probability of the perturbated sensor view
    num_workers: int = 4                             # DataLoader workers per process
    backend: str = "auto"                            # leadio decode backend: auto | cpu | dali
    # optimisation (LEAD: AdamW amsgrad, cosine warm restarts with T_0 = steps per epoch, T_mult 2)
    batch_size: int = 64                             # global batch; each of N processes takes batch_size // N
    epochs: int = 31
    lr: float = 3e-4
    weight_decay: float = 0.01
    seed: int = 0
    mixed_precision: str = "auto"                    # auto (bf16 where supported, else no) | bf16 | fp16 | no
    max_steps_per_epoch: int = 0                     # 0 = the whole epoch (a cap for smoke runs)
    # model
    model_size: str = "reference"                    # tiny | small | reference
    use_planning_decoder: bool = False               # post-training adds the planner
    loss_weights: dict = field(default_factory=lambda: {"depth": 1e-5})  # others 1; normalised to sum 1
    # checkpoints and resume
    logdir: str = "outputs/local_training/pretrain"
    load_file: str | None = None                     # model_XXXX.pth to start from (post-training) or resume
    continue_failed_training: bool = False           # resume the latest complete state in logdir
    epoch_checkpoints_keep: list = field(default_factory=list)  # LEAD leaderboard mode: []
    resume_every_steps: int = 50                     # mid-epoch resume state (data stream included); 0 = off
    # logging
    log_scalars_frequency: int = 50
    log_images_frequency: int = 5000
    visualize_training: bool = True
    log_wandb: bool = False
    wandb_project: str = "leadtrain"
    viz_dir: str = "outputs/training_viz"

    def __post_init__(self):
        checks = [
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.mixed_precision in ("auto", "bf16", "fp16", "no"), "mixed_precision must be auto|bf16|fp16|no"),
            (self.backend in ("auto", "cpu", "dali"), "backend must be auto|cpu|dali"),
            (self.model_size in ("tiny", "small", "reference"), "model_size must be tiny|small|reference"),
            (0.0 <= self.perturbation_rate <= 1.0, "perturbation_rate must be in [0, 1]"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (self.log_scalars_frequency >= 1 and self.log_images_frequency >= 1, "log frequencies must be >= 1"),
        ]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise ConfigError("; ".join(bad))

    # ---------------------------------------------------------------------------------------- derived
    @property
    def posttrain(self) -> bool:
        return self.use_planning_decoder

    def to_dict(self) -> dict[str, Any]:
        """Fields plus derived properties, JSON-serialisable (what config.json holds)."""
        out = dataclasses.asdict(self)
        out["posttrain"] = self.posttrain
        return out

    def save(self, logdir: str | Path | None = None) -> Path:
        from leadio._io import atomic_write_bytes

        path = Path(logdir or self.logdir) / "config.json"
        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=4).encode())
        return path

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> TrainingConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names - {"posttrain"})
        if unknown:
            raise ConfigError(f"{source}: unknown keys {unknown}; valid keys: {sorted(names)}")
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def load(cls, path: str | Path) -> TrainingConfig:
        return cls.from_dict(json.loads(Path(path).read_text()), str(path))

    @classmethod
    def from_cli(cls, argv: list[str], defaults: dict | None = None) -> TrainingConfig:
        """Build from ``key=value`` arguments over ``defaults``; with ``load_file``, over its config.json."""
        overrides = parse_overrides(argv)
        base: dict = dict(defaults or {})
        merged = {**base, **overrides}
        beside = None
        if merged.get("continue_failed_training") and merged.get("logdir"):
            beside = Path(merged["logdir"]) / "config.json"  # a resumed run keeps its own config
        elif merged.get("load_file"):
            beside = Path(merged["load_file"]).parent / "config.json"
        if beside is not None and beside.exists():
            inherited = json.loads(beside.read_text())
            inherited.pop("posttrain", None)
            base = {**inherited, **base}
        return cls.from_dict({**base, **overrides}, "command line")


def _field_types() -> dict[str, Any]:
    defaults = TrainingConfig()
    return {f.name: getattr(defaults, f.name) for f in fields(TrainingConfig)}


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """``["epochs=3", "log_wandb=true"]`` -> typed dict, checked against the fields.

    Raises:
        ConfigError: not ``key=value``, unknown key, or a value that does not parse as the field's type.
    """
    defaults = _field_types()
    out: dict[str, Any] = {}
    for arg in argv:
        key, eq, raw = arg.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not eq:
            raise ConfigError(f"argument {arg!r} is not key=value; valid keys: {sorted(defaults)}")
        if key not in defaults:
            raise ConfigError(f"unknown key {key!r}; valid keys: {sorted(defaults)}")
        default = defaults[key]
        try:
            out[key] = _parse_value(raw, default, key)
        except (ValueError, json.JSONDecodeError) as e:
            kind = "null or a path" if key == "load_file" else type(default).__name__
            raise ConfigError(f"{key}={raw!r}: expected {kind} ({e})") from None
    return out


def _parse_value(raw: str, default: Any, key: str) -> Any:
    low = raw.strip().lower()
    if low in ("null", "none", "") and (default is None or key == "load_file"):
        return None
    if isinstance(default, bool):
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ValueError("not a boolean (true/false)")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, list | dict):
        value = json.loads(raw)
        if not isinstance(value, type(default)):
            raise ValueError(f"JSON {type(value).__name__}, not {type(default).__name__}")
        return value
    return raw


def detect_mixed_precision(requested: str) -> str:
    """Resolve ``auto``: bf16 where the device supports it (asked of torch, no GPU name lists), else no."""
    import torch

    if requested != "auto":
        if requested in ("bf16", "fp16") and not torch.cuda.is_available():
            raise ConfigError(f"mixed_precision={requested} needs a CUDA device; none is visible "
                              f"(use mixed_precision=no or auto)")
        if requested == "bf16" and not torch.cuda.is_bf16_supported():
            raise ConfigError("mixed_precision=bf16: this GPU does not support bf16; use fp16 or no")
        return requested
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"
