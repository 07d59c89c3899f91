"""leadtrain.models.tfv6: the reference TransFuser v6 (kesai-labs/lead), checkpoint-compatible both ways."""

from leadtrain.models.tfv6.config import TFv6Config
from leadtrain.models.tfv6.model import TFv6
from leadtrain.models.tfv6.spec import SPEC, color_augment, loss_weights

__all__ = ["SPEC", "TFv6", "TFv6Config", "color_augment", "loss_weights"]
