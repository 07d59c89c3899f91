"""The loop's ``channel_last`` and ``compile`` keys (leadtrain.loop.to_channels_last / compiled), on CPU."""

from __future__ import annotations

import copy

import torch
from accelerate.utils import extract_model_from_parallel
from test_tfv6 import SMALL, leadio_batch

from leadio.lead import to_lead_batch
from leadtrain.config import TrainingConfig
from leadtrain.loop import compiled, to_channels_last
from leadtrain.model import ModelConfig, TransFuser
from leadtrain.tfv6 import TFv6


def _convs_channels_last(model: torch.nn.Module) -> list[bool]:
    """Per 3x3+ conv weight with more than one input channel (else both layouts coincide): channels_last?"""
    return [p.is_contiguous(memory_format=torch.channels_last)
            for p in model.parameters() if p.ndim == 4 and p.shape[2:] != (1, 1) and p.shape[1] > 1]


def test_channel_last_converts_the_weights_and_keeps_the_outputs():
    torch.manual_seed(0)
    b = leadio_batch(1, (64, 192))
    model = TransFuser(ModelConfig.preset("tiny")).eval()
    assert to_channels_last(TrainingConfig(model="leadtrain"), model) is model  # off: unchanged
    assert not any(_convs_channels_last(model))
    reference = copy.deepcopy(model)
    model = to_channels_last(TrainingConfig(model="leadtrain", channel_last=True), model)
    assert all(_convs_channels_last(model))
    with torch.no_grad():
        got, want = model(b), reference(b)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-4)

    tfv6 = TFv6(SMALL, encoder_backend="auto").eval()
    tfv6_ref = copy.deepcopy(tfv6)
    tfv6 = to_channels_last(TrainingConfig(model="tfv6", tfv6=SMALL, channel_last=True), tfv6)
    assert tfv6.backbone.channels_last and all(_convs_channels_last(tfv6))
    data = to_lead_batch(b)
    with torch.no_grad():
        got, want = tfv6(data), tfv6_ref(data)
    for k in ("pred_semantic", "pred_depth", "pred_bev_semantic"):
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-3)


def test_compile_wraps_the_model_and_checkpoints_keep_plain_names():
    model = TransFuser(ModelConfig.preset("tiny"))
    assert compiled(TrainingConfig(model="leadtrain"), model) is model  # off: unchanged
    wrapped = compiled(TrainingConfig(model="leadtrain", compile=True), model)
    assert isinstance(wrapped, torch._dynamo.eval_frame.OptimizedModule) and wrapped._orig_mod is model
    # what the loop saves: unwrap_model(model, keep_torch_compile=False) -> the reference's key names
    bare = extract_model_from_parallel(wrapped, keep_torch_compile=False)
    assert bare is model
    assert list(bare.state_dict()) == list(TransFuser(ModelConfig.preset("tiny")).state_dict())
