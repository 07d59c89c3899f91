"""The loader's options as one frozen value: `LoaderConfig`.

`LoaderConfig` is the single home of the loader's options and their defaults: ``open_dataset(source, config,
**overrides)`` takes one (or builds one from the overrides) first, so a bad option fails in ``__post_init__``
before any shard set is opened; `LeadLoader` receives the config with its environment-dependent fields resolved
(topology, backend, shuffle). The messages are the ones the later stages
(`leadio.plan`, `leadio.engine`) would raise, so checking early changes when an error comes, not what it says.
Opening the source (collection, root, cache, verify) is not the loader's business and stays in `open_dataset`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields

from leadio.decode import BACKENDS
from leadio.plan.shuffle import SHUFFLES, Shuffle
from leadio.schema import DEFAULT_KEYS, FIELD_MEMBER, KEYS

__all__ = ["LoaderConfig", "unknown_option_message"]



@dataclass(frozen=True, kw_only=True)
class LoaderConfig:
    """How a `LeadLoader` turns a shard set into batches; every field as `open_dataset`'s argument of that name.

    Attributes:
        keys: fields to load (names in `leadio.schema.KEYS`); stored as a tuple.
        batch_size: samples per batch per rank (>= 1).
        backend: ``"auto"``, ``"cpu"`` or ``"dali"``; a loader gets ``"cpu"`` or ``"dali"``.
        world_size, rank: topology; None = from torch.distributed or WORLD_SIZE/RANK (resolved before a
            loader is built), else ``0 <= rank < world_size``.
        seed: plan seed.
        num_workers: decode threads (>= 0); None = this process's share of the cores.
        perturbation_rate: probability of the perturbated view, in [0, 1].
        uneven: ``"drop"`` or ``"pad"`` for sample counts not divisible by the world size.
        shuffle: ``"auto"``, a name in `leadio.plan.SHUFFLES`, or a `Shuffle` (what a loader gets).
        block_shards: shards per block of the ``block`` shuffle (>= 1); None = as many as fit twice in the cache.
        on_error: ``"raise"`` or ``"skip"`` (unreadable samples replaced and counted).
        pin_memory: decode into pinned batch buffers (with a GPU), for ``non_blocking`` copies to it; None (the
            default): pinned when ``device`` is a GPU (there the batch is copied from them: ``output="lead"``
            builds LEAD's batch on the device, the dali backend's non-JPEG members stay on the host).
        persistent_workers: keep the decode threads between epochs.
        device: where batches are made: None or ``"cpu"``, or ``"cuda"`` / ``"cuda:N"``: the dali backend
            decodes JPEGs there (nvJPEG) and ``output="lead"`` builds the LEAD batch there. The cpu backend's
            compact batches are made on the CPU, so it refuses ``"cuda"`` there.
        output: ``"compact"`` (leadio's batch) or ``"lead"`` (the reference loader's batch).
    """

    keys: Sequence[str] = field(default=DEFAULT_KEYS)
    batch_size: int = 32
    backend: str = "auto"
    world_size: int | None = None
    rank: int | None = None
    seed: int = 0
    num_workers: int | None = None
    perturbation_rate: float = 0.5
    uneven: str = "drop"
    shuffle: str | Shuffle = "auto"
    block_shards: int | None = None
    on_error: str = "raise"
    pin_memory: bool | None = None
    persistent_workers: bool = True
    device: str | None = None
    output: str = "compact"

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))
        unknown = [k for k in self.keys if k not in FIELD_MEMBER]
        if unknown:
            raise ValueError(f"unknown keys {unknown}; valid keys: {list(KEYS)}")
        if self.output not in ("compact", "lead"):
            raise ValueError(f"output must be 'compact' or 'lead', got {self.output!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.backend != "auto" and self.backend not in BACKENDS:
            names = " or ".join(repr(name) for name in sorted(BACKENDS))
            raise ValueError(f"backend must be 'auto', {names}, got {self.backend!r}")
        if self.world_size is not None and self.rank is not None and not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size}), got {self.rank}")
        if self.num_workers is not None and int(self.num_workers) < 0:
            raise ValueError(f"num_workers must be >= 0, got {int(self.num_workers)}")
        if not 0.0 <= self.perturbation_rate <= 1.0:
            raise ValueError(f"perturbation_rate must be in [0, 1], got {self.perturbation_rate}")
        if self.uneven not in ("drop", "pad"):
            raise ValueError(f"uneven must be 'drop' or 'pad', got {self.uneven!r}")
        if isinstance(self.shuffle, str) and self.shuffle != "auto" and self.shuffle not in SHUFFLES:
            raise ValueError(f"shuffle must be 'auto' or one of {sorted(SHUFFLES)}, got {self.shuffle!r}")
        if self.shuffle == "block" and self.block_shards is not None and self.block_shards < 1:
            raise ValueError(f"shuffle 'block' needs block_shards >= 1, got {self.block_shards!r}")
        if self.device is not None and not (self.device == "cpu" or str(self.device).split(":")[0] == "cuda"):
            raise ValueError(f"device must be None, 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")

    @property
    def pins_memory(self) -> bool:
        """Whether batch buffers are pinned (when a GPU is there): ``pin_memory``, or by default whether
        ``device`` is a GPU."""
        if self.pin_memory is not None:
            return bool(self.pin_memory)
        return str(self.device or "cpu").split(":")[0] == "cuda"

    @property
    def resolved(self) -> bool:
        """Whether a `LeadLoader` can use it: topology known, backend chosen, shuffle a `Shuffle`."""
        return (self.world_size is not None and self.rank is not None and self.backend != "auto"
                and isinstance(self.shuffle, Shuffle))


def unknown_option_message(unknown: Iterable[str], extra: Iterable[str] = ()) -> str:
    """``unknown option(s) 'batchsize' (did you mean 'batch_size'?); options: ...`` for `open_dataset`."""
    known = sorted({f.name for f in fields(LoaderConfig)} | set(extra))
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    return f"open_dataset got unknown option(s) {', '.join(hints)}; options: {', '.join(known)}"
