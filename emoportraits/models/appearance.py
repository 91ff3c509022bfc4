"""The source-side encoders: E_app (appearance volume v_s) and the identity/global encoder (e_s)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import EmoPortraitsConfig
from .blocks import NormActConv, ResBlock, conv
from .resnet import ResNetTrunk, imagenet_normalize
from .tracing import record


class AppearanceEncoder(nn.Module):
    """E_app: image (B, 3, S, S) → appearance volume v_s (B, C, D, S/8, S/8).

    7×7 conv, stride-2 pre-activation residual blocks, then GN → ReLU → WS 1×1 conv to C·D channels
    which are unpacked as C×D (channel index = c·D + d).
    """

    def __init__(self, config: EmoPortraitsConfig):
        super().__init__()
        cfg = config
        self.volume_channels, self.volume_depth = cfg.volume_channels, cfg.volume_depth
        self.from_rgb = conv(2, 3, cfg.app_base_channels, 7, bias=True)
        chans = (cfg.app_base_channels, *cfg.app_block_channels)
        self.blocks = nn.ModuleList(
            ResBlock(2, chans[i], chans[i + 1], cfg.norm_groups, resample="down")
            for i in range(len(cfg.app_block_channels)))
        self.out = NormActConv(2, chans[-1], cfg.volume_channels * cfg.volume_depth, cfg.norm_groups, ws=True)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = record("app_enc.from_rgb", self.from_rgb(image))
        for i, block in enumerate(self.blocks):
            x = record(f"app_enc.block{i}", block(x))
        x = record("app_enc_out", self.out(x))
        b, _, h, w = x.shape
        return x.view(b, self.volume_channels, self.volume_depth, h, w)


class IdentityEncoder(nn.Module):
    """Identity/global descriptor e_s: GroupNorm ResNet-50 on the half-resolution source,
    1×1 projection, average-pooled to embed_spatial² (B, E, s, s)."""

    def __init__(self, config: EmoPortraitsConfig):
        super().__init__()
        cfg = config
        self.input_size, self.embed_spatial = cfg.idt_input_size, cfg.embed_spatial
        self.trunk = ResNetTrunk(cfg.idt_layers, cfg.idt_widths, bottleneck=cfg.idt_bottleneck,
                                 norm="group", groups=cfg.norm_groups)
        self.proj = conv(2, self.trunk.out_channels, cfg.embed_channels, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(image, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = record("idt.input_normalized", imagenet_normalize(x))
        x = self.trunk(x, record=lambda name, t: record(f"idt.{name}", t))
        x = record("idt.fc", self.proj(x))
        return record("idt_embed", F.adaptive_avg_pool2d(x, self.embed_spatial))
