"""Shared building blocks: weight-standardised convs, (adaptive) GroupNorm, residual blocks.

Written once for 2-D and 3-D: ``dims`` picks ``nn.Conv2d``/``nn.Conv3d`` and the matching pooling
and interpolation. Spectral norm is not a module here: the released weights are converted with
σ folded into plain conv weights (the authors' inference path divides by the same σ every call),
and training wraps convs with ``torch.nn.utils.parametrizations.spectral_norm`` when it wants it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WS_EPS = 1e-5   # added to the (unbiased) std, not inside the square root — as the released code does
GN_EPS = 1e-5


def standardize_weight(weight: torch.Tensor, eps: float = WS_EPS) -> torch.Tensor:
    """Zero mean, unit (unbiased) std per output channel; the released code's weight standardisation."""
    flat = weight.reshape(weight.shape[0], -1)
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, keepdim=True)  # unbiased (n-1)
    return ((flat - mean) / (std + eps)).reshape_as(weight)


class _WeightStandardized:
    """Mixin for nn.ConvNd: standardise the weight at every forward (it is a reparametrisation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self._conv_forward(x, standardize_weight(self.weight), self.bias)


class WSConv2d(_WeightStandardized, nn.Conv2d):
    pass


class WSConv3d(_WeightStandardized, nn.Conv3d):
    pass


def conv(dims: int, c_in: int, c_out: int, kernel: int = 3, *, ws: bool = False, bias: bool | None = None,
         stride: int = 1) -> nn.Module:
    """A 'same'-padded conv; weight-standardised ones always carry a bias (as in the released model)."""
    if ws:
        cls = WSConv2d if dims == 2 else WSConv3d
        bias = True
    else:
        cls = nn.Conv2d if dims == 2 else nn.Conv3d
        bias = bool(bias)
    return cls(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=bias)


def avg_pool(x: torch.Tensor, kernel) -> torch.Tensor:
    """Non-overlapping average pooling (kernel = stride) for 2-D and 3-D feature maps.

    3-D pooling is written as a reshape + mean: torch has no CPU avg_pool3d kernel for bfloat16.
    """
    if x.dim() == 4:
        return F.avg_pool2d(x, kernel)
    kd, kh, kw = (kernel,) * 3 if isinstance(kernel, int) else kernel
    b, c, d, h, w = x.shape
    return x.reshape(b, c, d // kd, kd, h // kh, kh, w // kw, kw).mean(dim=(3, 5, 7))


def upsample(x: torch.Tensor, scale, mode: str) -> torch.Tensor:
    """Integer up-sampling; align_corners=False as everywhere in the model."""
    if mode == "nearest":
        return F.interpolate(x, scale_factor=scale, mode="nearest")
    return F.interpolate(x, scale_factor=scale, mode=mode, align_corners=False)


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm modulated by a projection of a conditioning embedding.

    P = proj_u (C×E) · embed (E×T) · proj_v (T×2);  γ = weight + P[:, 0],  β = bias + P[:, 1];
    out = (GN(x)·weight + bias)·γ + β.
    The static affine is applied twice (inside the GroupNorm and again through γ, β): that is what
    the authors' layer computes (it sets weight/bias on an nn.GroupNorm built without affine, which
    then uses them), and the released weights were trained with it — the parity fixture shows it.
    The embedding (B, E, T) is set once per forward with ``set_embedding`` (all norms of a warp
    generator share it), which keeps the residual blocks' signature the same as the plain ones.
    """

    def __init__(self, channels: int, embed_channels: int, embed_tokens: int, groups: int):
        super().__init__()
        self.groups = groups
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        # low-rank projector, initialised to unit-variance outputs for a unit-variance embedding
        self.proj_u = nn.Parameter(torch.empty(channels, embed_channels).uniform_(-1, 1) * (3 / embed_channels) ** 0.5)
        self.proj_v = nn.Parameter(torch.empty(embed_tokens, 2).uniform_(-1, 1) * (3 / embed_tokens) ** 0.5)
        self._embed: torch.Tensor | None = None

    def set_embedding(self, embed: torch.Tensor | None) -> None:
        self._embed = embed

    def affine(self, embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = torch.matmul(torch.matmul(self.proj_u, embed), self.proj_v)   # (B, C, 2)
        return self.weight + p[..., 0], self.bias + p[..., 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._embed is None:
            raise RuntimeError("AdaptiveGroupNorm needs set_embedding() before forward()")
        gamma, beta = self.affine(self._embed)
        shape = (*gamma.shape, *([1] * (x.dim() - 2)))
        x = F.group_norm(x, self.groups, self.weight, self.bias, GN_EPS)
        return x * gamma.view(shape) + beta.view(shape)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=GN_EPS)


class ResBlock(nn.Module):
    """Pre-activation residual block: norm → ReLU → conv → norm → ReLU → conv, plus a skip.

    ``first_ws``: the first conv is weight-standardised (+bias); otherwise plain without bias.
    ``resample``: None, ``"down"`` (AvgPool 2 after both branches) or ``"up"`` (nearest ×2 first).
    ``adaptive``: (embed_channels, embed_tokens) to use AdaptiveGroupNorm instead of GroupNorm.
    The skip is a 1×1 conv only when the channel count changes.
    """

    def __init__(self, dims: int, c_in: int, c_out: int, groups: int, *, first_ws: bool = True,
                 resample: str | None = None, adaptive: tuple[int, int] | None = None):
        super().__init__()
        self.resample = resample
        if adaptive is None:
            self.norm1, self.norm2 = group_norm(c_in, groups), group_norm(c_out, groups)
        else:
            self.norm1 = AdaptiveGroupNorm(c_in, *adaptive, groups)
            self.norm2 = AdaptiveGroupNorm(c_out, *adaptive, groups)
        self.conv1 = conv(dims, c_in, c_out, 3, ws=first_ws)
        self.conv2 = conv(dims, c_out, c_out, 3)
        self.skip = conv(dims, c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            x = upsample(x, 2, "nearest")
        h = self.conv1(F.relu(self.norm1(x)))
        h = self.conv2(F.relu(self.norm2(h)))
        s = x if self.skip is None else self.skip(x)
        if self.resample == "down":
            h, s = avg_pool(h, 2), avg_pool(s, 2)
        return h + s


class NormActConv(nn.Sequential):
    """The heads used all over the model: GroupNorm → ReLU → conv."""

    def __init__(self, dims: int, c_in: int, c_out: int, groups: int, kernel: int = 1, *,
                 ws: bool = False, bias: bool = True):
        super().__init__()
        self.norm = group_norm(c_in, groups)
        self.act = nn.ReLU()
        self.conv = conv(dims, c_in, c_out, kernel, ws=ws, bias=bias)
