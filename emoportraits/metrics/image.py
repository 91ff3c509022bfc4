"""Pixel-level image metrics on (B, 3, H, W) tensors in [0, 1]."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def l1_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image, (B,)."""
    return (pred - target).abs().flatten(1).mean(1)


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, (B,): Gaussian window, C1=(0.01)², C2=(0.03)²,
    averaged over channels and valid positions. The window shrinks for images smaller than it."""
    window = min(window, pred.shape[-1], pred.shape[-2])
    c = pred.shape[1]
    w = _gaussian_window(window, sigma, c, pred.device, pred.dtype)
    mu_x, mu_y = F.conv2d(pred, w, groups=c), F.conv2d(target, w, groups=c)
    sxx = F.conv2d(pred * pred, w, groups=c) - mu_x ** 2
    syy = F.conv2d(target * target, w, groups=c) - mu_y ** 2
    sxy = F.conv2d(pred * target, w, groups=c) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)
