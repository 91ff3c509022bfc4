"""The 3-D part of the source branch: source volume blocks and G3D, the canonical-volume U-Net."""
from __future__ import annotations


import torch
from torch import nn

from ..config import EmoPortraitsConfig
from .blocks import NormActConv, ResBlock, avg_pool, upsample
from .tracing import record


class SourceVolumeBlocks(nn.Module):
    """Residual 3-D blocks applied to v_s before it is warped to the canonical space."""

    def __init__(self, config: EmoPortraitsConfig):
        super().__init__()
        c = config.volume_channels
        self.blocks = nn.ModuleList(
            ResBlock(3, c, c, config.norm_groups, first_ws=False) for _ in range(config.source_volume_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = record(f"vol_source.block{i}", block(x))
        return x


class CanonicalUNet(nn.Module):
    """G3D: 3-D U-Net turning the warped source volume into the canonical volume V^C.

    Down path: depth ×2, residual blocks with pooling in between (features F_i). The up path does
    not start from the bottleneck but from a learned constant; at each level it up-samples, adds a
    residual-block-processed skip F_i and applies an up block. Depth is halved again at the end,
    then GN → ReLU → 1×1×1 conv (with bias).
    """

    def __init__(self, config: EmoPortraitsConfig):
        super().__init__()
        cfg = config
        g = cfg.norm_groups
        chans = (cfg.volume_channels, *cfg.unet_channels)
        self.depth_up, self.pools = cfg.unet_depth_upsample, cfg.unet_pools
        self.down = nn.ModuleList(ResBlock(3, chans[i], chans[i + 1], g, first_ws=False)
                                  for i in range(len(cfg.unet_channels)))
        # up level k works at the resolution of down block n-1-k
        up_in = chans[-1:0:-1]              # 512, 384, 192
        up_out = chans[-2::-1]              # 384, 192, 96
        self.skips = nn.ModuleList(ResBlock(3, c, c, g, first_ws=False) for c in up_in)
        self.up = nn.ModuleList(ResBlock(3, a, b, g, first_ws=False) for a, b in zip(up_in, up_out))
        # the constant input sits one ×2 below the deepest feature map
        d, h, w = cfg.volume_shape
        d *= self.depth_up
        for pd, ph, pw in self.pools:
            d, h, w = d // pd, h // ph, w // pw
        self.up_scales = ((2, 2, 2), *reversed(self.pools))
        self.const_input = nn.Parameter(torch.randn(1, chans[-1], d // 2, h // 2, w // 2))
        self.out = NormActConv(3, cfg.volume_channels, cfg.volume_channels, g, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depth_up > 1:
            x = upsample(x, (float(self.depth_up), 1.0, 1.0), "trilinear")
        feats = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = avg_pool(x, self.pools[i - 1])
            x = record(f"unet.down{i}", block(x))
            feats.append(x)
        y = self.const_input.expand(x.shape[0], *self.const_input.shape[1:])
        for k, (skip, up, scale) in enumerate(zip(self.skips, self.up, self.up_scales)):
            y = upsample(y, tuple(float(s) for s in scale), "trilinear")
            y = y + record(f"unet.skip{k}", skip(feats[-1 - k]))
            y = record(f"unet.up{k}", up(y))
        if self.depth_up > 1:
            y = avg_pool(y, (self.depth_up, 1, 1))
        return self.out(record("unet.head_in", y))
