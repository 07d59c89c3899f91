"""The ImageNet weights of TFv6's image encoder, fetched as the reference's ``timm.create_model(pretrained=True)``.

``image_pretrained_weights`` (`resolve_image_weights`):

- ``imagenet`` (also spelled ``timm-cache``, its former name): timm's default ImageNet weights of
  ``image_architecture`` from the Hugging Face hub (``timm/<architecture>.<tag>``), through
  ``huggingface_hub.hf_hub_download``, the call timm itself makes, into the same cache
  (``$HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``): taken from the cache when there, downloaded when the
  network allows. Under DDP the main process of each machine fetches first and the others then read the cache
  without going to the network. Offline and not cached: one line (`WeightsUnavailable`) naming the cache and
  ``none``.
- a file (``.safetensors``, ``.pth``, ``.bin``): timm's weights of that architecture.
- ``none``: random init.

timm's files are the same for its own models and for leadtrain's built-in ResNets (same parameter names), so
the weights do not depend on whether timm is installed (`leadtrain.models.tfv6.encoders`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["HUB_NAMES", "WeightsUnavailable", "hub_cache_dir", "hub_download", "hub_id", "resolve_image_weights"]

log = logging.getLogger(__name__)

#: the values of ``image_pretrained_weights`` that mean "timm's default ImageNet weights from the hub"
HUB_NAMES = ("imagenet", "timm-cache")
#: timm's default pretrained tag of each built-in architecture (timm 1.0.31 ``default_cfgs``: the first tag listed)
_BUILTIN_HUB_IDS = {"resnet18": "timm/resnet18.a1_in1k", "resnet26": "timm/resnet26.bt_in1k",
                    "resnet34": "timm/resnet34.a1_in1k", "resnet50": "timm/resnet50.a1_in1k",
                    "resnet101": "timm/resnet101.a1h_in1k"}
#: what timm asks the hub for, in its order: safetensors first, else the PyTorch pickle
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


class WeightsUnavailable(FileNotFoundError):
    """The ImageNet weights cannot be had here; the message is one line that says what to do."""


def hub_cache_dir() -> str:
    """Where ``hf_hub_download`` (and so timm) keeps hub files: ``$HF_HUB_CACHE``, default
    ``~/.cache/huggingface/hub``."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:
        return os.environ.get("HF_HUB_CACHE") or str(Path.home() / ".cache" / "huggingface" / "hub")


def hub_id(name: str, timm=None) -> str | None:
    """The hub repository of timm's default ImageNet weights of architecture ``name`` (``timm``: the module, when
    it imports), or None when unknown."""
    if timm is not None:
        try:
            cfg = timm.models.get_pretrained_cfg(name)
        except Exception:
            cfg = None
        if cfg is not None and getattr(cfg, "hf_hub_id", None):
            return cfg.hf_hub_id
    return _BUILTIN_HUB_IDS.get(name)


def hub_download(repo_id: str, *, local_files_only: bool = False, **hub_kwargs) -> Path:
    """``repo_id``'s weights file as timm fetches it: ``model.safetensors``, else ``pytorch_model.bin``, through
    ``huggingface_hub.hf_hub_download`` (cache first; ``hub_kwargs`` such as ``cache_dir``/``endpoint`` pass on).

    Raises:
        huggingface_hub's errors: ``LocalEntryNotFoundError`` offline and not cached, ``EntryNotFoundError`` when
        the repository has neither file, others for HTTP failures.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    first, fallback = _HUB_FILES
    try:
        return Path(hf_hub_download(repo_id, first, local_files_only=local_files_only, **hub_kwargs))
    except LocalEntryNotFoundError as offline:  # not cached and the hub unreachable: the other file may be cached
        try:
            return Path(hf_hub_download(repo_id, fallback, local_files_only=True, **hub_kwargs))
        except LocalEntryNotFoundError:
            raise offline from None
    except EntryNotFoundError:  # the repository has no safetensors file (LocalEntryNotFoundError is caught above)
        return Path(hf_hub_download(repo_id, fallback, local_files_only=local_files_only, **hub_kwargs))


@contextlib.contextmanager
def _hub_quiet() -> Iterator[None]:
    """huggingface_hub's own warnings (one per retry when offline) off: a failure ends in one line of ours."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _local_rank_and_world() -> tuple[int, bool]:
    """(this process's rank on its machine, whether a process group is up)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 0, False
    return int(os.environ.get("LOCAL_RANK", dist.get_rank())), True


def _main_process_first(fetch: Callable[[bool], Path]) -> Path:
    """``fetch(local_files_only)`` on each machine's main process first (it may download), then on the others
    from the cache only. Every process passes the barrier, failed or not, so none waits forever."""
    local_rank, distributed = _local_rank_and_world()
    if not distributed:
        return fetch(False)
    import torch.distributed as dist

    if local_rank == 0:
        try:
            return fetch(False)
        finally:
            dist.barrier()
    dist.barrier()
    return fetch(True)


def resolve_image_weights(name: str, source: str, *, timm=None, download: Callable[..., Path] = hub_download,
                          cache_dir: str | None = None) -> Path | None:
    """The file to load ``name``'s ImageNet weights from (see the module doc), or None for ``none``.

    Args:
        name: the timm architecture (``image_architecture``).
        source: ``image_pretrained_weights``: ``imagenet`` (or ``timm-cache``), a file, or ``none``.
        timm: the timm module when it imports (its pretrained config names the hub repository), else None.
        download: ``(repo_id, *, local_files_only, **hub_kwargs) -> Path``: `hub_download` (a test may pass it an
            ``endpoint``, or inject another).
        cache_dir: the hub cache to use (default: huggingface_hub's, `hub_cache_dir`).

    Raises:
        WeightsUnavailable: a missing file, an architecture without known hub weights, or the hub unreachable
            with nothing cached (one line: the cache path and the ``none`` option).
    """
    if source == "none":
        return None
    if source not in HUB_NAMES:
        path = Path(source).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"image_pretrained_weights={source}: no such file; give timm's weights of "
                                     f"{name} (.safetensors or .pth), imagenet (download them), or none (random init)")
        return path
    repo = hub_id(name, timm)
    if repo is None:
        raise WeightsUnavailable(f"image_pretrained_weights={source}: no known ImageNet weights for {name!r} "
                                 f"without timm; install timm or give a weights file, or use "
                                 f"image_pretrained_weights=none (random init)")

    cache = cache_dir or hub_cache_dir()

    def fetch(local_files_only: bool) -> Path:
        try:
            with _hub_quiet():
                return download(repo, local_files_only=local_files_only, cache_dir=cache)
        except Exception as e:
            if isinstance(e, FileNotFoundError):  # huggingface_hub's LocalEntryNotFoundError: offline, not cached
                why = "no connection to the hub" if not local_files_only else "the main process could not fetch them"
            else:
                text = str(e).strip()
                why = f"{type(e).__name__}: {text.splitlines()[0][:160] if text else ''}".rstrip(": ")
            raise WeightsUnavailable(
                f"image_pretrained_weights={source}: the ImageNet weights of {name} ({repo}) are not in the Hugging "
                f"Face cache {cache} and cannot be downloaded ({why}); copy that cache from a machine with "
                f"internet, give a weights file (image_pretrained_weights=<file.safetensors|.pth>), or use "
                f"image_pretrained_weights=none (random init)") from e

    path = _main_process_first(fetch)
    log.info("image encoder %s: ImageNet weights %s from %s", name, repo, path)
    return path
