"""What the training loop needs from a model, as one value (`ModelSpec`), and the one loss-weight normalisation.

A model is one module (or package) that defines a ``SPEC`` and one row in `leadtrain.models.MODELS`. The loop
(`leadtrain.loop`) knows no model by name: per step it runs ``prepare`` -> ``forward`` -> ``losses`` and sums the
losses with the weights `ModelSpec.loss_weights` normalised once at set-up; every ``log_images_frequency`` steps
it hands ``viz(pred)`` to `leadtrain.viz.render_sample`.

Loss weights, LEAD's way (``Trainer.schedule_loss_weights``): the model's table of raw weights for the phase,
``loss_weights=`` overrides on top, every weight divided by their sum once; the loss is then
``sum(w[k] * loss[k])``, and ``w[k] * loss[k]`` is what ``scaled_loss/<k>`` logs.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from leadtrain.config import TrainingConfig

__all__ = ["ModelSpec", "normalise_loss_weights"]


def normalise_loss_weights(table: Mapping[str, float], overrides: Mapping[str, float] | None = None, *,
                           model: str, known: Collection[str] | None = None) -> dict[str, float]:
    """``table`` with ``overrides`` applied, divided by its sum (the weights then sum to 1).

    Args:
        table: raw weight per loss the phase computes (a weight may be 0).
        overrides: the ``loss_weights`` key: new raw weights by loss name.
        model: the model's name, for messages.
        known: every loss name the model has (default: ``table``'s); an override for a known loss outside
            ``table`` (a planning loss during pre-training, say) is accepted and ignored.

    Raises:
        ValueError: an override for a loss the model does not have, or weights that sum to <= 0.
    """
    overrides = dict(overrides or {})
    known = set(table) if known is None else set(known) | set(table)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"loss_weights names unknown {model} losses {unknown}; known: {sorted(known)}")
    weights = {name: float(overrides.get(name, weight)) for name, weight in table.items()}
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"{model} loss weights of {sorted(weights)} sum to {total}; need > 0")
    return {name: weight / total for name, weight in weights.items()}


@dataclass(frozen=True)
class ModelSpec:
    """A model as the training loop sees it.

    Attributes:
        name: the ``model=`` value that selects it.
        build: config -> the model with fresh weights (the phase's heads; post-training adds the planner).
        prepare: (config, leadio batch on the device) -> the model's input (runs under autocast).
        forward: (config, model, input) -> predictions; ``model`` may be wrapped (DDP, torch.compile).
        losses: (unwrapped model, predictions, input, metrics) -> unweighted 0-d losses by name; ``metrics`` is a
            dict to fill with ``metric/*`` floats on logged steps, else None (no host sync then).
        loss_table: config -> raw weight per loss the phase computes (see `normalise_loss_weights`).
        loss_names: every loss name the model has (what ``loss_weights=`` may name).
        viz: predictions -> the names `leadtrain.viz.render_sample` draws (`leadtrain.viz.PREDICTION_KEYS`).
        channels_last: called on the model after its weights moved to channels_last (``channel_last=true``),
            for inputs the model converts itself.
        set_precision: (model, ``precision``, Accelerate's resolved ``mixed_precision``) -> the dtype the step
            sums its weighted losses in (`leadtrain.models.precision.weighted_sum`), or None for float32; called
            once after `build` (and ``load_file``), before the model is prepared. A model without the reference's
            precision (the compact one) ignores it.
    """

    name: str
    build: Callable[[TrainingConfig], nn.Module]
    prepare: Callable[[TrainingConfig, dict[str, Tensor]], dict[str, Any]]
    forward: Callable[[TrainingConfig, nn.Module, dict[str, Any]], dict[str, Any]]
    losses: Callable[[nn.Module, dict[str, Any], dict[str, Any], dict | None], dict[str, Tensor]]
    loss_table: Callable[[TrainingConfig], dict[str, float]]
    loss_names: tuple[str, ...]
    viz: Callable[[dict[str, Any]], dict[str, Any]]
    channels_last: Callable[[nn.Module], None] = lambda model: None
    set_precision: Callable[[nn.Module, str, str], torch.dtype | None] = lambda model, precision, mixed: None

    def loss_weights(self, cfg: TrainingConfig) -> dict[str, float]:
        """The phase's normalised weights with ``cfg.loss_weights`` applied (once per run)."""
        return normalise_loss_weights(self.loss_table(cfg), cfg.loss_weights, model=self.name, known=self.loss_names)
