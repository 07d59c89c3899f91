"""TFv6 backbone: image and LiDAR encoders fused by a GPT at each of the 4 scales, plus the BEV pyramid.

Module tree and parameter names are the reference's (``image_encoder``, ``lidar_encoder``,
``lidar_channel_to_img.i``, ``img_channel_to_lidar.i``, ``transformers.i.{pos_emb, blocks.j.{ln1, ln2,
attn.{key, query, value, proj}, mlp.{0, 2}}, ln_f}``, ``c5_conv``, ``up_conv5``, ``up_conv4``). Data flow for
the default config (B samples)::

    rgb (B,3,384,1152) 0..255 -> ImageNet norm -> image encoder stem;  rasterized_lidar (B,1,320,384) -> LiDAR stem
    (both in float32, or with ``precision=reference`` in the mixed-precision dtype: `float_type`)
    4 x [ next encoder stage of each branch
          -> both maps avg-pooled to anchors (12x36 image, 10x12 LiDAR), LiDAR channels -> image channels (1x1)
          -> GPT over the 432 + 120 tokens -> back to LiDAR channels, bilinearly resized, added to both maps ]
    -> LiDAR features (B,512,10,12) ("bev_features"), image features (B,512,12,36)
    top_down(LiDAR features) -> (B,64,80,96): 1x1 conv, x2 up + 3x3 conv, up to the BEV/4 grid + 3x3 conv
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leadtrain.models.tfv6.config import TFv6Config
from leadtrain.models.tfv6.encoders import create_encoder

__all__ = ["GPT", "TransfuserBackbone", "normalize_imagenet"]

log = logging.getLogger(__name__)

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def normalize_imagenet(x: Tensor) -> Tensor:
    """0..255 RGB -> ImageNet-normalised, per channel ``((x / 255) - mean) / std`` with Python scalars in ``x``'s
    dtype, as the reference (in bfloat16 each step rounds there)."""
    return torch.stack([((x[:, c] / 255.0) - m) / s for c, (m, s) in enumerate(zip(_MEAN, _STD, strict=True))],
                       dim=1)


class SelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, attn_pdrop: float, resid_pdrop: float):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"GPT width {n_embd} is not a multiple of n_head={n_head}")
        self.key, self.query, self.value = nn.Linear(n_embd, n_embd), nn.Linear(n_embd, n_embd), nn.Linear(n_embd,
                                                                                                         n_embd)
        self.attn_pdrop = attn_pdrop
        self.resid_drop = nn.Dropout(resid_pdrop)
        self.proj = nn.Linear(n_embd, n_embd)
        self.n_head = n_head

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape

        def heads(linear: nn.Linear) -> Tensor:
            return linear(x).view(b, t, self.n_head, c // self.n_head).transpose(1, 2)

        y = F.scaled_dot_product_attention(heads(self.query), heads(self.key), heads(self.value),
                                           dropout_p=self.attn_pdrop if self.training else 0.0)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, c)))


class Block(nn.Module):
    """Pre-norm transformer block; the MLP uses ReLU (as the reference)."""

    def __init__(self, n_embd: int, cfg: TFv6Config):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.attn = SelfAttention(n_embd, cfg.n_head, cfg.attn_pdrop, cfg.resid_pdrop)
        hidden = cfg.block_exp * n_embd
        self.mlp = nn.Sequential(nn.Linear(n_embd, hidden), nn.ReLU(True), nn.Linear(hidden, n_embd),
                                 nn.Dropout(cfg.resid_pdrop))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Self-attention over image-anchor and LiDAR-anchor tokens (learned positions), one fusion scale."""

    def __init__(self, n_embd: int, cfg: TFv6Config):
        super().__init__()
        self.n_embd, self.n_img = n_embd, cfg.img_vert_anchors * cfg.img_horz_anchors
        tokens = self.n_img + cfg.lidar_vert_anchors * cfg.lidar_horz_anchors
        self.pos_emb = nn.Parameter(torch.zeros(1, tokens, n_embd))
        self.drop = nn.Dropout(cfg.embd_pdrop)
        self.blocks = nn.Sequential(*(Block(n_embd, cfg) for _ in range(cfg.n_layer)))
        self.ln_f = nn.LayerNorm(n_embd)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, cfg.gpt_linear_layer_init_mean, cfg.gpt_linear_layer_init_std)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.zeros_(m.bias)
                nn.init.constant_(m.weight, cfg.gpt_layer_norm_init_weight)

    def forward(self, image: Tensor, lidar: Tensor) -> tuple[Tensor, Tensor]:
        b, _, ih, iw = image.shape
        lh, lw = lidar.shape[2:]
        tokens = torch.cat([image.flatten(2).transpose(1, 2), lidar.flatten(2).transpose(1, 2)], dim=1)
        x = self.ln_f(self.blocks(self.drop(self.pos_emb + tokens)))
        image_out = x[:, : self.n_img].transpose(1, 2).reshape(b, -1, ih, iw)
        lidar_out = x[:, self.n_img :].transpose(1, 2).reshape(b, -1, lh, lw)
        return image_out, lidar_out


def _start(encoder: nn.Module) -> int:
    """1 when the encoder's stem is a feature of its own (timm ResNet: act1), else 0."""
    return 1 if len(encoder.return_layers) > 4 else 0


class TransfuserBackbone(nn.Module):
    def __init__(self, cfg: TFv6Config, encoder_backend: str = "auto", image_weights: Path | None = None):
        """``image_weights``: timm's ImageNet weights file for the image encoder (None: random init)."""
        super().__init__()
        self.cfg = cfg
        self.image_encoder = create_encoder(cfg.image_architecture, 3, encoder_backend, image_weights)
        self.lidar_encoder = create_encoder(cfg.lidar_architecture, 1, encoder_backend)
        #: ``timm <version>`` or ``built-in (<why>)``: what `create_encoder` built (start-up summaries say it)
        self.encoder_implementation = self.image_encoder.implementation
        broken = "does not import" in self.encoder_implementation
        log.log(logging.WARNING if broken else logging.INFO, "TFv6 encoders (image %s, LiDAR %s): %s%s",
                cfg.image_architecture, cfg.lidar_architecture, self.encoder_implementation,
                "; leadtrain's built-in ResNets are used (timm's names and weights)" if broken else "")
        img_info = self.image_encoder.feature_info.info[_start(self.image_encoder):]
        lid_info = self.lidar_encoder.feature_info.info[_start(self.lidar_encoder):]
        img_ch, lid_ch = [i["num_chs"] for i in img_info[:4]], [i["num_chs"] for i in lid_info[:4]]
        self.num_image_features, self.num_lidar_features = img_ch[3], lid_ch[3]
        self.avgpool_img = nn.AdaptiveAvgPool2d((cfg.img_vert_anchors, cfg.img_horz_anchors))
        self.avgpool_lidar = nn.AdaptiveAvgPool2d((cfg.lidar_vert_anchors, cfg.lidar_horz_anchors))
        self.lidar_channel_to_img = nn.ModuleList(nn.Conv2d(lid_ch[i], img_ch[i], 1) for i in range(4))
        self.img_channel_to_lidar = nn.ModuleList(nn.Conv2d(img_ch[i], lid_ch[i], 1) for i in range(4))
        self.transformers = nn.ModuleList(GPT(img_ch[i], cfg) for i in range(4))
        self.perspective_upsample_factor = img_info[3]["reduction"] // cfg.perspective_downsample_factor
        c = cfg.bev_features_chanels
        self.up_conv5 = nn.Conv2d(c, c, 3, padding=1)
        self.up_conv4 = nn.Conv2d(c, c, 3, padding=1)
        self.c5_conv = nn.Conv2d(self.num_lidar_features, c, 1)
        self.channels_last = False  # set by the trainer (reference option channel_last)
        self.float_type: torch.dtype | None = None  # precision=reference: the inputs' dtype (TFv6.set_float_type)

    def top_down(self, x: Tensor) -> Tensor:
        """LiDAR features -> BEV feature grid (B, bev_features_chanels, H_bev / 4, W_bev / 4)."""
        cfg = self.cfg
        p5 = F.relu(self.c5_conv(x))
        p4 = F.relu(self.up_conv5(F.interpolate(p5, scale_factor=cfg.bev_upsample_factor, mode="bilinear",
                                                align_corners=False)))
        down = cfg.bev_down_sample_factor
        size = (cfg.lidar_height_pixel // down, cfg.lidar_width_pixel // down)
        return F.relu(self.up_conv4(F.interpolate(p4, size=size, mode="bilinear", align_corners=False)))

    @staticmethod
    def _advance(layers, return_layers: dict, x: Tensor) -> Tensor:
        """Run the encoder's next blocks up to and including its next feature layer."""
        for name, module in layers:
            x = module(x)
            if name in return_layers:
                break
        return x

    def forward(self, rgb: Tensor, lidar: Tensor) -> tuple[Tensor, Tensor]:
        """(rgb 0..255 (B,3,H,W), LiDAR BEV (B,1,H_bev,W_bev)) -> (LiDAR features, image features)."""
        float_type = self.float_type or torch.float32
        image = normalize_imagenet(rgb.to(float_type))
        lidar = lidar.to(float_type)
        if self.channels_last:
            image, lidar = image.contiguous(memory_format=torch.channels_last), lidar.contiguous(
                memory_format=torch.channels_last)
        img_layers, lid_layers = iter(self.image_encoder.items()), iter(self.lidar_encoder.items())
        if _start(self.image_encoder):
            image = self._advance(img_layers, self.image_encoder.return_layers, image)
        if _start(self.lidar_encoder):
            lidar = self._advance(lid_layers, self.lidar_encoder.return_layers, lidar)
        for i in range(4):
            image = self._advance(img_layers, self.image_encoder.return_layers, image)
            lidar = self._advance(lid_layers, self.lidar_encoder.return_layers, lidar)
            image, lidar = self._fuse(image, lidar, i)
        return lidar, image

    def _fuse(self, image: Tensor, lidar: Tensor, i: int) -> tuple[Tensor, Tensor]:
        img_tokens = self.avgpool_img(image)
        lid_tokens = self.lidar_channel_to_img[i](self.avgpool_lidar(lidar))
        img_out, lid_out = self.transformers[i](img_tokens, lid_tokens)
        lid_out = self.img_channel_to_lidar[i](lid_out)
        image = image + F.interpolate(img_out, size=image.shape[2:], mode="bilinear", align_corners=False)
        lidar = lidar + F.interpolate(lid_out, size=lidar.shape[2:], mode="bilinear", align_corners=False)
        return image, lidar
