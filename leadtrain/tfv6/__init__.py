"""leadtrain.tfv6: the reference TransFuser v6 (kesai-labs/lead), checkpoint-compatible both ways."""

from leadtrain.tfv6.config import TFv6Config
from leadtrain.tfv6.model import TFv6, color_augment, loss_weights

__all__ = ["TFv6", "TFv6Config", "color_augment", "loss_weights"]
