"""Mixed precision as the reference trains (``precision=reference``, the default) or autocast alone.

The reference trains under ``torch.amp.autocast(dtype=torch.bfloat16)`` and, on top of it:

- casts the model's inputs and most loss targets to that dtype before using them (its ``torch_float_type``; for
  TFv6 the batch keys `leadtrain.models.tfv6.REFERENCE_CASTS`), so they round there (route and waypoint targets at
  32-64 m to 0.25 m) and the losses that mix them compute there;
- adds that dtype's eps to the CenterNet ``avg_factor`` (``torch.finfo(bfloat16).eps`` = 2**-7);
- keeps every norm layer (BatchNorm, GroupNorm, LayerNorm) in float32: its input is cast to float32, normalised
  with float32 weights, and cast back to the input's dtype (`keep_norms_fp32`);
- sums the weighted losses into a tensor of that dtype, in place, so the total rounds there (`weighted_sum`).

``precision=autocast`` is autocast alone (leadtrain's behaviour before): inputs and targets stay float32, norms run
as autocast runs them, the total is a float32 sum. Neither changes anything without mixed precision
(``mixed_precision=no``), and the compact model has only the autocast behaviour.
"""

from __future__ import annotations

import types
from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["PRECISIONS", "float_type", "keep_norms_fp32", "weighted_sum"]

#: the values of the trainer's ``precision`` key
PRECISIONS = ("reference", "autocast")
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def float_type(mixed_precision: str) -> torch.dtype:
    """The reference's ``torch_float_type`` for Accelerate's resolved ``mixed_precision`` (``bf16`` | ``fp16`` |
    ``no``): the autocast dtype, float32 without mixed precision."""
    types_ = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}
    if mixed_precision not in types_:
        raise ValueError(f"mixed_precision={mixed_precision!r}: expected one of {sorted(types_)}")
    return types_[mixed_precision]


def _fp32_norm_forward(self: nn.Module, x: Tensor) -> Tensor:
    return type(self).forward(self, x.float()).to(x.dtype)


def keep_norms_fp32(model: nn.Module) -> int:
    """Every norm layer of ``model`` computes in float32 (weights in float32, input cast to float32, output cast
    back to the input's dtype), as the reference's ``patch_norm_fp32``. Module tree and state_dict are unchanged.

    Returns:
        the number of norm layers (patching twice is harmless).
    """
    count = 0
    for module in model.modules():
        if isinstance(module, _NORMS):
            module.float()
            module.forward = types.MethodType(_fp32_norm_forward, module)
            count += 1
    return count


def weighted_sum(losses: Mapping[str, Tensor], weights: Mapping[str, float],
                 accumulate: torch.dtype | None = None) -> tuple[dict[str, Tensor], Tensor]:
    """(``scaled``: weight x loss by name, ``total``: their sum), as the training step logs and backpropagates them.

    ``accumulate`` None (autocast alone): every term in float32, summed in float32. A dtype (``precision=reference``):
    the reference's ``loss = zeros(1, dtype=torch_float_type); loss += weight * value``: each term in its loss's
    own dtype, added in place into a tensor of ``accumulate``, so each addition rounds there (the gradients are the
    same: each term's is its weight).
    """
    if accumulate is None:
        scaled = {k: weights[k] * v.float() for k, v in losses.items()}
        return scaled, sum(scaled.values())
    scaled = {k: weights[k] * v for k, v in losses.items()}
    total = torch.zeros((), dtype=accumulate, device=next(iter(losses.values())).device)
    for value in scaled.values():
        total += value.reshape(())
    return scaled, total
