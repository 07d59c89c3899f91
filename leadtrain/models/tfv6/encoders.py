"""The TFv6 encoders: timm ``features_only`` models, or a built-in ResNet with timm's exact parameter names.

`create_encoder` returns an `nn.ModuleDict` of the network's top-level blocks plus ``return_layers`` (block name
-> feature index) and ``feature_info`` (``.info`` list of ``num_chs``/``reduction``), which is the interface the
reference backbone walks block by block (timm's ``FeatureListNet``), and ``implementation`` (``timm <version>``
or ``built-in``). ``backend``:

- ``timm``: ``timm.create_model(name, features_only=True, in_chans=...)``, any timm architecture, as the
  reference (``pretrained=True`` with the weights file `leadtrain.models.tfv6.weights` fetched);
- ``builtin``: resnet18/26/34/50/101 written here with timm's module names, so state dicts and timm's ImageNet
  weight files are interchangeable with timm's (checked against timm 1.0.31). It exists because timm needs a
  torchvision built for the installed torch, and a CPU torch has none on PyPI (``import timm`` then fails with
  ``operator torchvision::nms does not exist``);
- ``auto``: timm when it imports, else the built-in ResNet (other architectures then need timm: clear error).
  Which one was built is logged, and a timm that is installed but does not import is a warning, not silence.

``python -m leadtrain.models.tfv6`` prints which implementation ``auto`` builds here (`main`); it exits with 1 when
timm is installed but does not import (``make`` then removes that timm and its torchvision).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from torch import nn

__all__ = ["BUILTIN_ARCHITECTURES", "create_encoder", "load_pretrained", "timm_or_none", "timm_status"]

log = logging.getLogger(__name__)

#: name -> (block kind, blocks per stage)
BUILTIN_ARCHITECTURES = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet26": ("bottleneck", (2, 2, 2, 2)),
                         "resnet34": ("basic", (3, 4, 6, 3)), "resnet50": ("bottleneck", (3, 4, 6, 3)),
                         "resnet101": ("bottleneck", (3, 4, 23, 3))}
_timm_error: str | None = None


def timm_or_none():
    """The timm module, or None when it cannot be imported here (the reason is kept for messages)."""
    global _timm_error
    try:
        import timm
    except Exception as e:
        _timm_error = f"{type(e).__name__}: {e}"
        return None
    return timm


def timm_status() -> tuple[object | None, str]:
    """(the timm module or None, what to say about it): ``timm 1.0.31``, ``timm is not installed`` or ``timm is
    installed but does not import (<error>)``."""
    timm = timm_or_none()
    if timm is not None:
        return timm, f"timm {timm.__version__}"
    if importlib.util.find_spec("timm") is None:
        return None, "timm is not installed"
    return None, f"timm is installed but does not import ({_timm_error}; it needs a torchvision built for torch " \
                 f"{torch.__version__})"


class _FeatureInfo:
    def __init__(self, info: list[dict]):
        self.info = info

    def channels(self) -> list[int]:
        return [i["num_chs"] for i in self.info]

    def reduction(self) -> list[int]:
        return [i["reduction"] for i in self.info]


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))) + shortcut)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        out = planes * self.expansion
        self.conv1, self.bn1, self.act1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2, self.act2 = nn.BatchNorm2d(planes), nn.ReLU(True)
        self.conv3, self.bn3, self.act3 = nn.Conv2d(planes, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(True)
        self.downsample = downsample

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        return self.act3(self.bn3(self.conv3(x)) + shortcut)


class _BuiltinResNet(nn.ModuleDict):
    """timm's ResNet (``features_only``): conv1/bn1/act1/maxpool/layer1-4, same names, init and features."""

    def __init__(self, name: str, in_chans: int):
        kind, depths = BUILTIN_ARCHITECTURES[name]
        block = _BasicBlock if kind == "basic" else _Bottleneck
        modules: dict[str, nn.Module] = {"conv1": nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False),
                                         "bn1": nn.BatchNorm2d(64), "act1": nn.ReLU(inplace=True),
                                         "maxpool": nn.MaxPool2d(3, 2, 1)}
        cin, info = 64, [{"module": "act1", "num_chs": 64, "reduction": 2}]
        for i, depth in enumerate(depths):
            planes, stride = 64 * 2**i, 1 if i == 0 else 2
            out = planes * block.expansion
            down = None
            if stride != 1 or cin != out:
                down = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            blocks = [block(cin, planes, stride, down)] + [block(out, planes, 1, None) for _ in range(depth - 1)]
            modules[f"layer{i + 1}"] = nn.Sequential(*blocks)
            cin = out
            info.append({"module": f"layer{i + 1}", "num_chs": out, "reduction": 4 * 2**i})
        super().__init__(modules)
        self.return_layers = {m["module"]: str(i) for i, m in enumerate(info)}
        self.feature_info = _FeatureInfo(info)
        for m in self.modules():  # timm ResNet.init_weights(zero_init_last=True)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if hasattr(m, "zero_init_last"):
                m.zero_init_last()

    def forward(self, x):
        feats = []
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                feats.append(x)
        return feats


def create_encoder(name: str, in_chans: int, backend: str = "auto", weights: Path | None = None) -> nn.Module:
    """A ``features_only`` encoder of architecture ``name`` with ``in_chans`` input channels: random weights, or
    timm's ImageNet weights from the file ``weights`` (`leadtrain.models.tfv6.weights.resolve_image_weights`).

    Raises:
        ValueError: unknown backend, an architecture the built-in path lacks while timm cannot be imported, or a
            weights file that does not fit.
    """
    if backend not in ("auto", "timm", "builtin"):
        raise ValueError(f"encoder_backend={backend!r}: expected auto, timm or builtin")
    timm, status = timm_status() if backend in ("auto", "timm") else (None, "encoder_backend=builtin")
    if timm is not None:
        extra = {} if weights is None else {"pretrained_cfg_overlay": {"file": str(weights)}}
        encoder = timm.create_model(name, pretrained=weights is not None, features_only=True, in_chans=in_chans,
                                    **extra)
        encoder.implementation = status
        return encoder
    if backend == "timm":
        raise ValueError(f"encoder_backend=timm but {status}; install timm with a torchvision that matches your "
                         f"torch, or use encoder_backend=builtin")
    if name not in BUILTIN_ARCHITECTURES:
        raise ValueError(f"architecture {name!r} needs timm, but {status}; built-in architectures: "
                         f"{sorted(BUILTIN_ARCHITECTURES)}")
    encoder = _BuiltinResNet(name, in_chans)
    encoder.implementation = "built-in" if backend == "builtin" else f"built-in ({status})"
    if weights is not None:
        load_pretrained(encoder, name, weights)
    return encoder


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def load_pretrained(encoder: nn.Module, name: str, path: Path | str) -> None:
    """Load timm's ImageNet weights file ``path`` (``.safetensors``/``.pth``/``.bin``) of ``name`` into a built-in
    ``encoder``, as timm does for ``features_only``: classifier keys (``fc.*``) dropped, every other key must fit.

    Raises:
        ValueError: the file's keys or shapes do not fit the encoder.
    """
    path = Path(path)
    state = {k: v for k, v in _read_weights(path).items() if not k.startswith(("fc.", "head.", "classifier."))}
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state) - {k for k in own if k.endswith("num_batches_tracked")})
    unexpected = sorted(set(state) - set(own))
    bad = [k for k in set(state) & set(own) if state[k].shape != own[k].shape]
    if missing or unexpected or bad:
        raise ValueError(f"{path}: not {name} ImageNet weights for this encoder: {len(missing)} missing keys "
                         f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, {len(bad)} of other shape "
                         f"{sorted(bad)[:3]}")
    encoder.load_state_dict(state, strict=False)


def main() -> int:
    """Say which encoders ``encoder_backend=auto`` builds here; 1 when timm is installed but does not import."""
    timm, status = timm_status()
    if timm is not None:
        print(f"TFv6 encoders: {status}")
        return 0
    print(f"TFv6 encoders: built-in ResNets ({status})")
    return 1 if importlib.util.find_spec("timm") is not None else 0
