"""leadtrain.models: the MODELS table and the one loss-weight normalisation (LEAD's: the phase's table, overrides,
divided by the sum once)."""

from __future__ import annotations

import pytest
import torch
from leadtrain_batches import SMALL, fake_batch

from leadtrain.config import TrainingConfig
from leadtrain.models import MODELS, ModelSpec, normalise_loss_weights
from leadtrain.models.compact_losses import DEFAULT_LOSS_WEIGHTS, total_loss
from leadtrain.models.tfv6 import TFv6Config, loss_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest

PLANNING = {"waypoints", "route", "target_speed"}


def test_every_row_is_a_spec_under_its_own_name():
    assert set(MODELS) == {"tfv6", "compact"}
    assert all(isinstance(spec, ModelSpec) and spec.name == name for name, spec in MODELS.items())


def test_normalise_loss_weights_applies_overrides_then_divides_once():
    assert normalise_loss_weights({"a": 1.0, "b": 3.0}, {"b": 1.0}, model="m") == {"a": 0.5, "b": 0.5}
    # a loss the model has but the phase does not compute: accepted (configs are inherited across phases), ignored
    assert normalise_loss_weights({"a": 1.0}, {"c": 9.0}, model="m", known={"a", "c"}) == {"a": 1.0}
    with pytest.raises(ValueError, match=r"loss_weights names unknown m losses \['c'\]; known: \['a', 'b'\]"):
        normalise_loss_weights({"a": 1.0, "b": 3.0}, {"c": 1.0}, model="m")
    with pytest.raises(ValueError, match=r"m loss weights of \['a'\] sum to 0.0; need > 0"):
        normalise_loss_weights({"a": 1.0}, {"a": 0}, model="m")


def test_compact_weights_are_leads_over_the_phase_losses():
    pre = MODELS["compact"].loss_weights(TrainingConfig(model="compact", model_size="tiny"))
    post = MODELS["compact"].loss_weights(TrainingConfig(model="compact", model_size="tiny",
                                                         use_planning_decoder=True))
    assert set(pre) == set(DEFAULT_LOSS_WEIGHTS) - PLANNING and set(post) == set(DEFAULT_LOSS_WEIGHTS)
    assert pre["depth"] == pytest.approx(1e-5 / 9.00001) and pre["semantic"] == pytest.approx(1 / 9.00001)
    assert post["waypoints"] == pytest.approx(1 / 12.00001) and sum(post.values()) == pytest.approx(1.0)
    inherited = TrainingConfig(model="compact", model_size="tiny", loss_weights={"waypoints": 5.0})
    assert MODELS["compact"].loss_weights(inherited) == pre  # pre-training ignores a planning weight
    with pytest.raises(ValueError, match=r"unknown compact losses \['loss_depth'\]"):
        MODELS["compact"].loss_weights(TrainingConfig(model="compact", loss_weights={"loss_depth": 1.0}))


def test_tfv6_weights_are_the_references_in_every_phase():
    for planning in (False, True):
        cfg = TrainingConfig(model="tfv6", tfv6=SMALL, use_planning_decoder=planning, loss_weights={"loss_depth": 1})
        assert MODELS["tfv6"].loss_weights(cfg) == loss_weights(SMALL, planning, {"loss_depth": 1})
        assert set(MODELS["tfv6"].loss_weights(cfg)) == set(MODELS["tfv6"].loss_names)
    assert loss_weights(TFv6Config(), False)["loss_spatial_route"] == 0.0  # the reference's table keeps every name


def test_the_loops_weighted_sum_is_total_loss():
    torch.manual_seed(0)
    spec, batch = MODELS["compact"], fake_batch(2)
    cfg = TrainingConfig(model="compact", model_size="tiny", use_planning_decoder=True)
    model = spec.build(cfg).eval()
    with torch.no_grad():
        data = spec.prepare(cfg, batch)
        losses = spec.losses(model, spec.forward(cfg, model, data), data, None)
    weights = spec.loss_weights(cfg)
    assert set(losses) == set(weights)
    weighted = sum(weights[k] * v for k, v in losses.items())
    assert weighted.item() == pytest.approx(total_loss(losses).item(), rel=1e-6)


def test_weighted_sum_is_float32_or_accumulated_in_the_references_dtype():
    from leadtrain.models.precision import weighted_sum

    def fresh():
        return {"a": torch.tensor(300.3, requires_grad=True),
                "b": torch.tensor(1.5, dtype=torch.bfloat16, requires_grad=True)}

    losses = fresh()
    scaled, total = weighted_sum(losses, {"a": 1.0, "b": 0.5})
    assert total.dtype == torch.float32 and total.item() == pytest.approx(301.05)
    losses = fresh()
    scaled, total = weighted_sum(losses, {"a": 1.0, "b": 0.5}, torch.bfloat16)
    # the reference: zeros(bf16); += 300.3 -> 300 (bf16 steps of 2 there); += 0.75 -> 300.75 -> 300
    assert total.dtype == torch.bfloat16 and total.item() == 300.0 and scaled["b"].dtype == torch.bfloat16
    total.backward()
    assert losses["a"].grad.item() == 1.0 and losses["b"].grad.item() == 0.5  # the gradients are the weights
    assert MODELS["compact"].set_precision(None, "reference", "bf16") is None  # the compact model: autocast only
