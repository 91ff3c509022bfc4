"""Projection P and the image decoder G2D."""
from __future__ import annotations

import torch
from torch import nn

from ..config import EmoPortraitsConfig
from .blocks import NormActConv, ResBlock, conv
from .tracing import record


def project(volume: torch.Tensor) -> torch.Tensor:
    """P: the driver-posed volume (B, C, D, H, W) → (B, C·D, H, W), channel = c·D + d.

    The released model does no volume rendering here: depth is simply folded into channels.
    """
    b, c, d, h, w = volume.shape
    return volume.reshape(b, c * d, h, w)


class Decoder(nn.Module):
    """G2D: 1×1 conv, residual blocks at the feature resolution, then ×2 stages of
    [up block, block] to the image resolution, GN → ReLU → WS 1×1 conv → sigmoid."""

    def __init__(self, config: EmoPortraitsConfig):
        super().__init__()
        cfg = config
        g = cfg.norm_groups
        self.in_conv = conv(2, cfg.volume_channels * cfg.volume_depth, cfg.dec_channels, 1)
        self.res_blocks = nn.ModuleList(ResBlock(2, cfg.dec_channels, cfg.dec_channels, g)
                                        for _ in range(cfg.dec_res_blocks))
        chans = (cfg.dec_channels, *cfg.dec_up_channels)
        blocks = []
        for a, b in zip(chans[:-1], chans[1:]):
            blocks += [ResBlock(2, a, b, g, resample="up"), ResBlock(2, b, b, g)]
        self.up_blocks = nn.ModuleList(blocks)
        self.out = NormActConv(2, chans[-1], 3, g, ws=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = record("dec.res_conv_in", self.in_conv(features))
        for i, block in enumerate(self.res_blocks):
            x = record(f"dec.res_block{i}", block(x))
        record("dec.res_out", x)
        for i, block in enumerate(self.up_blocks):
            x = record(f"dec.img_block{i}", block(x))
        x = record("pre_sigmoid", self.out(record("dec.img_feat", x)))
        return record("image", torch.sigmoid(x))
