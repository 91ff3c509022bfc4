"""Expression warps: the warp embedding and the two warp generators W_s→ and W_→d.

Both generators turn (z, e_s) into a dense 3-D sampling grid over the volume: the embedding drives
every GroupNorm of the generator through AdaptiveGroupNorm, and the network predicts an offset
Δ ∈ (-1, 1) (tanh) that is added to the identity grid. W_s→ removes the source expression
(source → canonical); W_→d adds the driver's (canonical → driver). They share the architecture
and the embedding network but have their own weights.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import EmoPortraitsConfig
from .blocks import AdaptiveGroupNorm, NormActConv, ResBlock, avg_pool, conv, upsample
from .geometry import identity_grid_3d
from .tracing import is_capturing, record


class WarpEmbedding(nn.Module):
    """(z, e_s) → warp embedding (B, E, s²): linear z → E·s² (no bias), averaged with e_s, 1×1 conv."""

    def __init__(self, config: EmoPortraitsConfig):
        super().__init__()
        e, s = config.embed_channels, config.embed_spatial
        self.shape = (e, s, s)
        self.z_to_embed = nn.Linear(config.z_dim, e * s * s, bias=False)
        self.mix = conv(2, e, e, 1)

    def forward(self, z: torch.Tensor, e_s: torch.Tensor) -> torch.Tensor:
        zu = record("z_unsqueezed", self.z_to_embed(z).view(-1, *self.shape))
        x = record("warp_embed_head_in", (zu + e_s) * 0.5)
        return record("warp_embed", self.mix(x).flatten(2))


class WarpGenerator(nn.Module):
    """Warp embedding (B, E, s²) → sampling grid (B, D, H, W, 3) over the volume."""

    def __init__(self, config: EmoPortraitsConfig, trace_name: str):
        super().__init__()
        cfg = config
        self.trace_name = trace_name
        chans = cfg.warp_channels
        self.first_depth, self.upsample_scales = cfg.warp_first_depth, cfg.warp_upsample
        self.depth_pool, self.volume_shape = cfg.warp_depth_pool, cfg.volume_shape
        self.first_conv = conv(2, cfg.embed_channels, chans[0] * cfg.warp_first_depth, 1)
        adaptive = (cfg.embed_channels, cfg.embed_spatial ** 2)
        self.blocks = nn.ModuleList(
            ResBlock(3, chans[i], chans[i + 1], cfg.norm_groups, adaptive=adaptive)
            for i in range(len(chans) - 1))
        self.out = NormActConv(3, chans[-1], 3, cfg.norm_groups, kernel=3)

    def _record(self, name: str, t: torch.Tensor) -> torch.Tensor:
        return record(f"{self.trace_name}.{name}", t)

    def forward(self, embed: torch.Tensor) -> torch.Tensor:
        norms = [m for m in self.modules() if isinstance(m, AdaptiveGroupNorm)]
        for norm in norms:
            norm.set_embedding(embed)
        if is_capturing():
            for i, norm in enumerate(norms):
                gamma, beta = norm.affine(embed)
                self._record(f"adagn{i}.gamma", gamma)
                self._record(f"adagn{i}.beta", beta)
        b, e, n = embed.shape
        s = int(round(n ** 0.5))
        x = self._record("first_conv", self.first_conv(embed.view(b, e, s, s)))
        x = x.view(b, -1, self.first_depth, s, s)   # channel index = c·D + d
        try:
            for i, (block, scale) in enumerate(zip(self.blocks, self.upsample_scales)):
                if tuple(scale) != (1, 1, 1):
                    x = upsample(x, tuple(float(v) for v in scale), "trilinear")
                x = self._record(f"block{i}", block(x))
        finally:
            for norm in norms:
                norm.set_embedding(None)   # do not keep the batch's tensors alive
        if self.depth_pool > 1:
            x = avg_pool(x, (self.depth_pool, 1, 1))
        delta = torch.tanh(self._record("head_pre_tanh", self.out(x)))
        grid = identity_grid_3d(self.volume_shape, x.device).to(delta.dtype) + delta.permute(0, 2, 3, 4, 1)
        return self._record("warp", grid)
