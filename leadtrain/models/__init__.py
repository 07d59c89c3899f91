"""leadtrain's models, by the name that ``model=`` selects: the `MODELS` table (name -> `ModelSpec`).

- ``tfv6``: the reference TransFuser v6 of kesai-labs/lead (`leadtrain.models.tfv6`), state_dict-compatible
  with the reference both ways; LEAD-format batches (`leadio.lead.to_lead_batch`), the reference's losses.
- ``compact``: a small model after TransFuser's layout (`leadtrain.models.compact`) for CPU demos and tests;
  leadio batches as they come, `leadtrain.models.compact_losses`.

A new model is one module that defines a `ModelSpec` named ``SPEC`` (build, batch preparation, forward, losses
and their weights, what the visualiser draws) and one row here.
"""

from __future__ import annotations

from leadtrain.models import compact, tfv6
from leadtrain.models.spec import ModelSpec, normalise_loss_weights

__all__ = ["MODELS", "ModelSpec", "normalise_loss_weights"]

MODELS: dict[str, ModelSpec] = {
    "tfv6": tfv6.SPEC,
    "compact": compact.SPEC,
}
