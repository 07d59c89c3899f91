"""TFv6Config: the reference TransFuser v6's model options, under the reference's key names and defaults.

The defaults are the reference's ``carla_leaderboard_mode`` values for the 3-camera Leaderboard-2 rig
(`lead.training.config_training.TrainingConfig` at kesai-labs/lead 4489176), so that a default `TFv6` has the
reference's module tree, parameter names and shapes. Values the reference derives from the rig (anchors, BEV
pixels) are properties here, derived the same way. Options the reference has but this port does not implement
(NavSim/Waymo heads, TFv5 planner, acceleration and past-state tokens, latent TransFuser) are listed in
`UNSUPPORTED` with the only value accepted, so a config that needs them is refused by name instead of building
a different network.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields

__all__ = ["DERIVED", "UNSUPPORTED", "TFv6Config"]


@dataclass(frozen=True, kw_only=True)
class TFv6Config:
    """Model options of `leadtrain.models.tfv6.TFv6` (reference names; defaults = the reference's LB2 defaults)."""

    # encoders (timm names; ImageNet weights only for the image branch, as the reference)
    image_architecture: str = "resnet34"
    lidar_architecture: str = "resnet34"
    # GPT fusion at each of the 4 encoder scales
    n_layer: int = 2
    n_head: int = 4
    block_exp: int = 4
    embd_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    gpt_linear_layer_init_mean: float = 0.0
    gpt_linear_layer_init_std: float = 0.02
    gpt_layer_norm_init_weight: float = 1.0
    # sensor geometry (3 cameras of 384 x 384, BEV 4 px/m over x in [-32, 64], y in [-40, 40])
    final_image_height: int = 384
    final_image_width: int = 1152
    num_used_cameras: int = 3
    pixels_per_meter: float = 4.0
    min_x_meter: float = -32
    max_x_meter: float = 64
    min_y_meter: float = -40
    max_y_meter: float = 40
    # perspective decoders
    use_semantic: bool = True
    use_depth: bool = True
    num_semantic_classes: int = 10
    perspective_downsample_factor: int = 1
    deconv_channel_num_0: int = 128
    deconv_channel_num_1: int = 64
    deconv_channel_num_2: int = 32
    deconv_scale_factor_0: int = 4
    deconv_scale_factor_1: int = 8
    # BEV feature pyramid and BEV semantic decoder
    use_bev_semantic: bool = True
    num_bev_semantic_classes: int = 13
    bev_features_chanels: int = 64  # (sic) the reference's spelling
    bev_down_sample_factor: int = 4
    bev_upsample_factor: int = 2
    # CenterNet
    detect_boxes: bool = True
    num_bb_classes: int = 8
    num_dir_bins: int = 12
    bb_input_channel: int = 64
    training_used_lidar_steps: int = 10  # > 1: the velocity head exists
    # radar detector
    radar_detection: bool = True
    use_radar_detection: bool = True  # the planner reads the radar queries
    num_radar_sensors: int = 4
    num_radar_queries: int = 20
    radar_hidden_dim_tokenizer: int = 1024
    radar_token_dim: int = 256
    radar_tf_dim_ff: int = 1024
    radar_dropout: float = 0.1
    radar_num_heads: int = 8
    radar_num_layers: int = 4
    radar_hidden_dim_decoder: int = 1024
    radar_classification_loss_weight: float = 1.0
    radar_regression_loss_weight: float = 5.0
    max_speed: float = 25.0
    # planning decoder (post-training)
    transfuser_token_dim: int = 256  # the paper's, which the reference now publishes (its code at 4489176: 64)
    transfuser_num_bev_cross_attention_heads: int = 8
    transfuser_num_bev_cross_attention_layers: int = 6
    use_velocity: bool = True
    use_discrete_command: bool = True
    discrete_command_dim: int = 6
    use_tp: bool = True
    use_previous_tp: bool = True
    use_next_tp: bool = True
    predict_spatial_path: bool = True
    predict_temporal_spatial_waypoints: bool = True
    predict_target_speed: bool = True
    num_route_points_prediction: int = 10
    num_way_points_prediction: int = 8
    target_speed_classes: list = field(default_factory=lambda: [0.0, 4.0, 8.0, 10.0, 13.88888888, 16.0,
                                                                17.77777777, 20.0])
    target_points_normalization_constants: list = field(default_factory=lambda: [[200.0, 50.0]])
    # training-time options that belong to the model's inputs
    use_color_aug: bool = True
    use_color_aug_prob: float = 0.2
    freeze_backbone: bool = False

    def __post_init__(self) -> None:
        problems = []
        for name in ("final_image_height", "final_image_width", "lidar_height_pixel", "lidar_width_pixel"):
            if getattr(self, name) % 32:
                problems.append(f"{name}={getattr(self, name)} must be a multiple of 32 (the encoders' stride)")
        for dim, heads, what in ((self.radar_token_dim, self.radar_num_heads, "radar"),
                                 (self.transfuser_token_dim, self.transfuser_num_bev_cross_attention_heads,
                                  "planning")):
            if dim % heads:
                problems.append(f"{what} token dim {dim} must be a multiple of its {heads} heads")
        if problems:
            raise ValueError("invalid TFv6 config: " + "; ".join(problems))

    # ------------------------------------------------------------------ derived as the reference derives them
    @property
    def lidar_height_pixel(self) -> int:
        return int((self.max_y_meter - self.min_y_meter) * self.pixels_per_meter)

    @property
    def lidar_width_pixel(self) -> int:
        return int((self.max_x_meter - self.min_x_meter) * self.pixels_per_meter)

    @property
    def img_vert_anchors(self) -> int:
        return self.final_image_height // 32

    @property
    def img_horz_anchors(self) -> int:
        return self.final_image_width // 32

    @property
    def lidar_vert_anchors(self) -> int:
        return self.lidar_height_pixel // 32

    @property
    def lidar_horz_anchors(self) -> int:
        return self.lidar_width_pixel // 32

    def derived(self) -> dict:
        return {name: getattr(self, name) for name in DERIVED}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | self.derived()

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def replace(self, **changes) -> TFv6Config:
        return dataclasses.replace(self, **changes)


#: Derived keys (written to config.json for the reference agent; checked, not set, when read back).
DERIVED = ("lidar_height_pixel", "lidar_width_pixel", "img_vert_anchors", "img_horz_anchors", "lidar_vert_anchors",
           "lidar_horz_anchors")

#: Reference options this port does not implement, with the only value it accepts.
UNSUPPORTED = {"LTF": False, "use_tfv5_planning_decoder": False, "use_navsim_data": False,
               "use_waymo_e2e_data": False, "use_carla_data": True, "use_acceleration": False,
               "use_past_positions": False, "use_past_speeds": False}
