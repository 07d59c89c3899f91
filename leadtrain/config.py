"""TrainingConfig: LEAD's training options under LEAD's names and defaults, ``key=value`` overrides, and the
reference's ``config.json``.

Sources, lowest priority first (as LEAD's ``initialize_config``): the defaults; with ``load_file``, the
``config.json`` beside it (or, with ``continue_failed_training``, the logdir's own); the environment variable
``LEAD_TRAINING_CONFIG`` (space-separated ``key=value``); the command line. Overrides are parsed against each
field's type (``epochs=3``, ``log_wandb=true``, ``load_file=null``, ``epoch_checkpoints_keep=[7,15]``). An
unknown key on the command line or in ``LEAD_TRAINING_CONFIG`` is an error that suggests the closest key (a typo
must not start a 31-epoch run with the defaults).

Keys are leadtrain's fields plus the TFv6 model options (`leadtrain.models.tfv6.TFv6Config`, reference names),
flat.
A ``config.json`` written by the reference is understood: keys leadtrain implements keep their meaning (aliases:
``carla_root`` = ``root``, ``use_sensor_perburtation_prob`` = ``perturbation_rate``,
``use_mixed_precision_training``), derived keys are checked against ours, options this port does not implement
are refused unless at their default, and every other key is listed once in a warning. The saved
``<logdir>/config.json`` holds every key under the reference's names (plus leadtrain's own), so the reference
agent can build the model from it.

A new phase does not inherit the old one's phase-specific keys: with ``load_file``, ``continue_failed_training``
is never inherited, and when ``use_planning_decoder`` differs from the inherited value, ``collection`` and
``logdir`` go back to the new phase's defaults (``full_posttrain``, ``outputs/local_training/posttrain``).
``compile`` and ``channel_last`` are never inherited through ``load_file``: the reference writes both as true
(they are properties), although its ``torch.compile`` result is discarded, so inheriting them would turn on
minutes of compilation that the reference never ran.

Why not OmegaConf's ``from_dotlist`` (the reference's parser; checked with omegaconf 2.3): it reads each value as
YAML without knowing the key, so a string key loses its text (``wandb_id=007`` -> 7, ``wandb_id=1e3`` -> 1000.0,
``wandb_id=true`` -> True; here they stay ``"007"``, ``"1e3"``, ``"true"``), and a misspelt key passes silently.
Merging a structured schema (``OmegaConf.structured``) catches typos and type changes, but then refuses what this
parser maps (the reference's ``carla_root=``, ``use_sensor_perburtation_prob=``) and has no warn-once mode for
reference keys leadtrain does not implement. It would add omegaconf and antlr4 (2.1 MB, 100-160 ms import) for a
flat JSON config that uses none of its nesting, interpolation or YAML. Ours types each value by its key's default.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from leadtrain.models import MODELS
from leadtrain.models.precision import PRECISIONS
from leadtrain.models.tfv6.config import DERIVED, UNSUPPORTED, TFv6Config

__all__ = ["ConfigError", "TrainingConfig", "detect_mixed_precision", "parse_overrides"]

log = logging.getLogger(__name__)
ENV_KEY = "LEAD_TRAINING_CONFIG"


class ConfigError(ValueError):
    """A bad key or value in the training config."""


@dataclass(kw_only=True)
class TrainingConfig:
    """Training options (LEAD's names and defaults where LEAD has them); ``tfv6`` holds the model options."""

    # data
    root: str = "data/carla_leaderboard2"            # dataset root (reference: carla_root)
    collection: str = "auto"                         # bucket collection; auto: full_pretrain / full_posttrain
    shard_collection: str = "full_pretrain"          # collection whose shard set holds the samples
    perturbation_rate: float = 0.5                   # reference: use_sensor_perburtation_prob
    num_workers: int = 4                             # decode threads per process (leadio.engine)
    backend: str = "auto"                            # leadio decode backend: auto | cpu | dali
    on_error: str = "raise"                          # an unreadable sample: raise (naming shard, sample, the
                                                     # rebuild command) | skip (counted, logged each epoch)
    # optimisation (LEAD: AdamW amsgrad, cosine warm restarts with T_0 = steps per epoch, T_mult 2)
    batch_size: int = 64                             # global batch; each of N processes takes batch_size // N
    epochs: int = 31
    lr: float = 3e-4
    weight_decay: float = 0.01
    seed: int = 0
    mixed_precision: str = "auto"                    # auto (bf16 where supported, else no) | bf16 | fp16 | no
    precision: str = "reference"                     # with mixed precision: reference (its casts, fp32 norms) |
                                                     # autocast (autocast alone); leadtrain.models.precision
    max_steps_per_epoch: int = 0                     # 0 = the whole epoch (a cap for smoke runs)
    compile: bool = False                            # torch.compile the model (inductor; any device)
    channel_last: bool = False                       # channels_last weights (and TFv6 encoder inputs)
    # model
    model: str = "auto"                              # a name in leadtrain.models.MODELS (tfv6 | compact); auto:
                                                     # compact for model_size tiny/small, else tfv6
    model_size: str = "reference"                    # compact presets: tiny | small | reference
    encoder_backend: str = "auto"                    # TFv6 encoders: auto | timm | builtin
    image_pretrained_weights: str = "imagenet"       # TFv6 ImageNet weights: imagenet | <file> | none
    use_planning_decoder: bool = False               # post-training adds the planner
    loss_weights: dict = field(default_factory=dict)  # overrides by loss name; normalised to sum 1
    tfv6: TFv6Config = field(default_factory=TFv6Config)
    # checkpoints and resume
    logdir: str = "auto"                             # auto: outputs/local_training/{pretrain,posttrain}
    load_file: str | None = None                     # model_XXXX.pth to start from (post-training, fine-tuning)
    continue_failed_training: bool = False           # resume the latest complete state in logdir
    epoch_checkpoints_keep: list = field(default_factory=list)  # LEAD leaderboard mode: []
    resume_every_minutes: float = 30.0               # mid-epoch resume state (data stream included); 0 = off
    resume_every_steps: int = 0                      # ... or every N steps (0 = by time only)
    # logging
    log_scalars_frequency: int = 50
    log_images_frequency: int = 5000
    visualize_training: bool = True
    log_wandb: bool = False
    wandb_project: str = "auto"                      # auto: lead_pretrain / lead_posttrain (as LEAD)
    wandb_id: str | None = None                      # continue a W&B run (with wandb_resume=must|allow)
    wandb_resume: str = "never"                      # never | allow | must
    viz_dir: str = "outputs/training_viz"

    def __post_init__(self):
        if isinstance(self.tfv6, dict):
            self.tfv6 = TFv6Config(**self.tfv6)
        if self.model == "auto":
            self.model = "compact" if self.model_size in ("tiny", "small") else "tfv6"
        phase = "posttrain" if self.use_planning_decoder else "pretrain"
        if self.collection == "auto":
            self.collection = f"full_{phase}"
        if self.logdir == "auto":
            self.logdir = f"outputs/local_training/{phase}"
        checks = [
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.mixed_precision in ("auto", "bf16", "fp16", "no"), "mixed_precision must be auto|bf16|fp16|no"),
            (self.precision in PRECISIONS, f"precision must be {'|'.join(PRECISIONS)}"),
            (self.backend in ("auto", "cpu", "dali"), "backend must be auto|cpu|dali"),
            (self.on_error in ("raise", "skip"), "on_error must be raise|skip"),
            (self.model != "leadtrain", "model 'leadtrain' is now called 'compact'"),
            (self.model in MODELS or self.model == "leadtrain", f"model must be {'|'.join(MODELS)}|auto"),
            (self.model_size in ("tiny", "small", "reference"), "model_size must be tiny|small|reference"),
            (self.encoder_backend in ("auto", "timm", "builtin"), "encoder_backend must be auto|timm|builtin"),
            (self.wandb_resume in ("never", "allow", "must"), "wandb_resume must be never|allow|must"),
            (0.0 <= self.perturbation_rate <= 1.0, "perturbation_rate must be in [0, 1]"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (self.log_scalars_frequency >= 1 and self.log_images_frequency >= 1, "log frequencies must be >= 1"),
            (self.resume_every_minutes >= 0 and self.resume_every_steps >= 0, "resume_every_* must be >= 0"),
        ]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise ConfigError("; ".join(bad))

    # ---------------------------------------------------------------------------------------- derived
    @property
    def posttrain(self) -> bool:
        return self.use_planning_decoder

    @property
    def wandb_project_name(self) -> str:
        if self.wandb_project != "auto":
            return self.wandb_project
        return "lead_posttrain" if self.use_planning_decoder else "lead_pretrain"

    def to_dict(self) -> dict[str, Any]:
        """Every key, flat, under the reference's names (TFv6 options and aliases included), JSON-serialisable."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "tfv6"}
        out = json.loads(json.dumps(out))
        out.update(self.tfv6.to_dict())
        out.update({"posttrain": self.posttrain, "is_pretraining": not self.use_planning_decoder,
                    "carla_root": self.root, "use_sensor_perburtation_prob": self.perturbation_rate,
                    "use_mixed_precision_training": self.mixed_precision != "no",
                    "wandb_project_name": self.wandb_project_name, **UNSUPPORTED})
        return out

    def save(self, logdir: str | Path | None = None) -> Path:
        from leadio.files import atomic_write_bytes

        path = Path(logdir or self.logdir) / "config.json"
        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=4).encode())
        return path

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> TrainingConfig:
        """Build from flat keys (ours or the reference's; see the module docstring)."""
        return cls._build(_normalise(data, source, strict=False))

    @classmethod
    def _build(cls, flat: dict) -> TrainingConfig:
        model_keys = set(TFv6Config.keys())
        own = {k: v for k, v in flat.items() if k not in model_keys}
        tfv6 = {k: v for k, v in flat.items() if k in model_keys}
        try:
            return cls(**own, tfv6=TFv6Config(**tfv6))
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e)) from None

    @classmethod
    def load(cls, path: str | Path) -> TrainingConfig:
        return cls.from_dict(json.loads(Path(path).read_text()), str(path))

    @classmethod
    def from_cli(cls, argv: list[str], defaults: dict | None = None,
                 environ: dict | None = None) -> TrainingConfig:
        """Build from ``key=value`` arguments and ``LEAD_TRAINING_CONFIG`` over ``defaults`` and the inherited
        ``config.json`` (see the module docstring for the order)."""
        cli = parse_overrides(argv)
        env_text = (os.environ if environ is None else environ).get(ENV_KEY, "").strip()
        env = parse_overrides(env_text.split(), source=ENV_KEY) if env_text else {}
        given = {**env, **cli}
        merged = {**(defaults or {}), **given}
        inherited: dict = {}
        if merged.get("continue_failed_training"):
            logdir = merged.get("logdir", "auto")
            if logdir == "auto":  # the phase's default logdir (see __post_init__)
                logdir = f"outputs/local_training/{'posttrain' if merged.get('use_planning_decoder') else 'pretrain'}"
            beside = Path(logdir) / "config.json"  # a resumed run keeps its own config
            if beside.exists():
                inherited = _normalise(json.loads(beside.read_text()), str(beside), strict=False)
        elif merged.get("load_file"):
            beside = Path(merged["load_file"]).parent / "config.json"
            if beside.exists():
                inherited = _normalise(json.loads(beside.read_text()), str(beside), strict=False)
                inherited.pop("continue_failed_training", None)  # never inherited from another run
                inherited.pop("load_file", None)
                # per-run speed switches, not model semantics: the reference's config.json always says
                # compile=true, channel_last=true (properties), yet its compile never takes effect
                inherited.pop("compile", None)
                inherited.pop("channel_last", None)
                planning = merged.get("use_planning_decoder", inherited.get("use_planning_decoder", False))
                if bool(planning) != bool(inherited.get("use_planning_decoder", False)):
                    inherited.pop("collection", None)  # a new phase: its own collection and logdir
                    inherited.pop("logdir", None)
        if "model_size" in given and "model" not in given:
            given["model"] = "auto"  # an explicit preset picks its model family
        return cls._build({**inherited, **(defaults or {}), **given})


_ALIASES = {"carla_root": "root", "use_sensor_perburtation_prob": "perturbation_rate"}
_DERIVED_OURS = {"posttrain", "is_pretraining", "wandb_project_name"}


def _valid_keys() -> dict[str, Any]:
    own = TrainingConfig.__dataclass_fields__
    out = {name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
           for name, f in own.items() if name != "tfv6"}
    out.update(dataclasses.asdict(TFv6Config()))
    return out


def _normalise(data: dict, source: str, strict: bool) -> dict:
    """Map a flat config dict onto our keys: aliases, derived keys checked and dropped, unsupported options
    refused, unknown keys warned about once (or refused with ``strict``)."""
    valid = _valid_keys()
    out, unknown = {}, []
    for key, value in data.items():
        if key in valid:
            out[key] = value
        elif key in _ALIASES:
            if _ALIASES[key] not in data:
                out[_ALIASES[key]] = value
        elif key == "use_mixed_precision_training":
            if "mixed_precision" not in data and not value:
                out["mixed_precision"] = "no"
        elif key in UNSUPPORTED:
            if value != UNSUPPORTED[key]:
                raise ConfigError(f"{source}: {key}={value!r} is not implemented by leadtrain's TFv6 (only "
                                  f"{UNSUPPORTED[key]!r}); use the reference trainer for this configuration")
        elif key in DERIVED or key in _DERIVED_OURS:
            continue
        else:
            unknown.append(key)
    if unknown and strict:
        raise ConfigError(f"{source}: unknown keys {sorted(unknown)}; valid keys: {sorted(valid)}")
    tfv6 = TFv6Config(**{k: v for k, v in out.items() if k in TFv6Config.keys()})
    wrong = [f"{k}={data[k]} (leadtrain derives {v})" for k, v in tfv6.derived().items() if k in data
             and data[k] != v]
    if wrong:
        raise ConfigError(f"{source}: derived keys disagree with the config's own options: {', '.join(wrong)}")
    if unknown:
        log.warning("%s: %d keys leadtrain does not implement are ignored: %s", source, len(unknown),
                    ", ".join(sorted(unknown)))
    return out


def parse_overrides(argv: list[str], source: str = "command line", strict: bool = True) -> dict[str, Any]:
    """``["epochs=3", "log_wandb=true"]`` -> typed dict, checked against the keys.

    Raises:
        ConfigError: not ``key=value``, unknown key (``strict``; else a warning), or a value that does not
            parse as the key's type.
    """
    defaults = _valid_keys()
    out: dict[str, Any] = {}
    unknown = []
    for arg in argv:
        key, eq, raw = arg.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        key = _ALIASES.get(key, key)
        where = "" if source == "command line" else f"{source}: "
        if not eq:
            raise ConfigError(f"{where}argument {arg!r} is not key=value{_did_you_mean(key, defaults)} "
                              f"({HELP_HINT})")
        if key not in defaults:
            if key in UNSUPPORTED or key == "use_mixed_precision_training":
                out.update(_normalise({key: _parse_value(raw, True, key)}, source, strict=True))
                continue
            if strict:
                raise ConfigError(f"{where}unknown key {key!r}{_did_you_mean(key, defaults)} ({HELP_HINT})")
            unknown.append(key)
            continue
        default = defaults[key]
        try:
            out[key] = _parse_value(raw, default, key)
        except (ValueError, json.JSONDecodeError) as e:
            kind = "null or a path" if default is None else type(default).__name__
            raise ConfigError(f"{key}={raw!r}: expected {kind} ({e})") from None
    if unknown:
        log.warning("%s: %d keys leadtrain does not implement are ignored: %s", source, len(unknown),
                    ", ".join(sorted(unknown)))
    return out


HELP_HINT = "python leadtrain/pretrain.py --help lists every key"


def _did_you_mean(key: str, valid: dict[str, Any]) -> str:
    """``; did you mean 'epochs'?`` for the closest valid key(s), or nothing when none is close."""
    close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.75)
    if not close:
        close = [k for k in valid if len(key) >= 4 and (k.startswith(key) or key.startswith(k))][:3]
    return f"; did you mean {' or '.join(repr(k) for k in close)}?" if close else ""


def _parse_value(raw: str, default: Any, key: str) -> Any:
    low = raw.strip().lower()
    if low in ("null", "none", "") and default is None:
        return None
    if default is None:
        return raw
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
