"""Pixel-level image metrics on (B, 3, H, W) tensors in [0, 1].

Every metric takes an optional ``mask`` (B, 1, H, W) in [0, 1]: the "masked" variants of the
self-reenactment protocol score only the portrait (the background of a talking-head video is
not the model's job), weighting each pixel by the mask.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"pred and target must both be (B, C, H, W), got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    if mask is None:
        return None
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] != pred.shape[0] or mask.shape[2:] != pred.shape[2:]:
        raise ValueError(f"mask must be (B, 1, H, W) = ({pred.shape[0]}, 1, {pred.shape[2]}, {pred.shape[3]}), "
                         f"got {tuple(mask.shape)}")
    return mask.to(pred.dtype)


def _weighted_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-image mean of (B, C, H, W) values, weighted by a (B, 1, H, W) mask when given."""
    if mask is None:
        return values.flatten(1).mean(1)
    w = mask.expand_as(values)
    return (values * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-12)


def l1_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error per image, (B,)."""
    mask = _check(pred, target, mask)
    return _weighted_mean((pred - target).abs(), mask)


def mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per image, (B,)."""
    mask = _check(pred, target, mask)
    return _weighted_mean((pred - target) ** 2, mask)


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
         data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, (B,); +inf for identical images."""
    err = mse(pred.double(), target.double(), None if mask is None else mask.double())
    return (10 * torch.log10(data_range ** 2 / err)).to(pred.dtype)   # 1/0 → inf, as the definition says


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_map(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Local SSIM (B, C, H', W') over the valid positions of the Gaussian window."""
    window = min(window, pred.shape[-1], pred.shape[-2])
    c = pred.shape[1]
    w = _gaussian_window(window, sigma, c, pred.device, pred.dtype)
    mu_x, mu_y = F.conv2d(pred, w, groups=c), F.conv2d(target, w, groups=c)
    sxx = F.conv2d(pred * pred, w, groups=c) - mu_x ** 2
    syy = F.conv2d(target * target, w, groups=c) - mu_y ** 2
    sxy = F.conv2d(pred * target, w, groups=c) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5,
         mask: torch.Tensor | None = None) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, (B,): Gaussian window, C1=(0.01)², C2=(0.03)²,
    averaged over channels and valid positions. The window shrinks for images smaller than it.
    With ``mask``, the local SSIM values are weighted by the mask averaged over each window."""
    mask = _check(pred, target, mask)
    s = ssim_map(pred, target, window, sigma)
    if mask is not None:
        k = min(window, pred.shape[-1], pred.shape[-2])
        mask = F.conv2d(mask, _gaussian_window(k, sigma, 1, mask.device, mask.dtype))
    return _weighted_mean(s, mask)
