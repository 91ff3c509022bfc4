"""Multi-scale patch discriminator (training only): the D of L_adv and L_FM (SPEC §3).

Paper (supplementary §1.3, after MegaPortraits / pix2pixHD): a multi-scale PatchGAN trained with
a hinge loss, whose intermediate features also feed the feature-matching loss. SPEC §2: 2 scales,
4 conv blocks each (3×3, InstanceNorm, LeakyReLU 0.2; 64→128→256→512), 3.10 M parameters.

Layout of one scale: ``num_blocks`` × [3×3 conv stride 2 (no bias), InstanceNorm(affine),
LeakyReLU(0.2)], then a 1×1 conv to one logit per patch. Scale k sees the input average-pooled
k times by 2. The default has 3,104,898 parameters (2 × 1,552,449), i.e. SPEC's 3.10 M.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DiscriminatorConfig", "MultiScalePatchDiscriminator", "PatchDiscriminator"]


@dataclass
class DiscriminatorConfig:
    num_scales: int = 2
    num_blocks: int = 4
    base_channels: int = 64
    max_channels: int = 512
    in_channels: int = 3


class PatchDiscriminator(nn.Module):
    """One scale: returns (features after every block, patch logits (B, 1, H/2^n, W/2^n))."""

    def __init__(self, num_blocks: int = 4, base_channels: int = 64, max_channels: int = 512,
                 in_channels: int = 3):
        super().__init__()
        blocks, cin = [], in_channels
        for i in range(num_blocks):
            cout = min(base_channels * 2 ** i, max_channels)
            blocks.append(nn.Sequential(
                # no bias: InstanceNorm subtracts the per-channel mean, so a bias would be a no-op
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.InstanceNorm2d(cout, affine=True),
                nn.LeakyReLU(0.2),
            ))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Conv2d(cin, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats, self.out(x)


class MultiScalePatchDiscriminator(nn.Module):
    """``forward(x)`` → ``[(features, logits) for each scale]``; scale k sees ``avg_pool2d(x, 2)`` k times.

    Images are taken as given: feed real and fake in the same range (the trainer's choice).
    """

    def __init__(self, num_scales: int = 2, num_blocks: int = 4, base_channels: int = 64,
                 max_channels: int = 512, in_channels: int = 3):
        super().__init__()
        self.config = DiscriminatorConfig(num_scales, num_blocks, base_channels, max_channels, in_channels)
        self.scales = nn.ModuleList(
            PatchDiscriminator(num_blocks, base_channels, max_channels, in_channels) for _ in range(num_scales))

    @classmethod
    def from_config(cls, config: DiscriminatorConfig) -> "MultiScalePatchDiscriminator":
        return cls(**asdict(config))

    def forward(self, x: torch.Tensor) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"discriminator expects (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        outputs = []
        for k, disc in enumerate(self.scales):
            if k > 0:
                x = F.avg_pool2d(x, 2)
            outputs.append(disc(x))
        return outputs
