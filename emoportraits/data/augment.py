"""E_motion input augmentation: the driver image E_motion sees is warped and recoloured so that the
expression latent z cannot carry the driver's face shape or identity (SPEC §3).

Batched torch, on any device, reproducible with a ``torch.Generator`` (on the images' device)::

    aug = MotionAugment()
    z_input = aug(driver, generator=torch.Generator(driver.device).manual_seed(step))

* elastic warp — a smooth random displacement field: Gaussian noise on a coarse ``grid_size``²
  grid (std ``warp`` in normalised [-1, 1] units), upsampled bicubically to the image, added to the
  identity sampling grid, applied with ``grid_sample`` (bilinear, border padding);
* colour jitter, per image, in this order: brightness ×U[1−b, 1+b], contrast (blend with the mean
  grey) ×U[1−c, 1+c], saturation (blend with the luma) ×U[1−s, 1+s], hue rotation by U[−h, h]
  turns (rotation of the chroma plane in YIQ); values clamped to [0, 1] after each step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["MotionAugment", "elastic_warp", "color_jitter"]

_LUMA = (0.299, 0.587, 0.114)
_RGB2YIQ = ((0.299, 0.587, 0.114), (0.595716, -0.274453, -0.321263), (0.211456, -0.522591, 0.311135))


def _uniform(n: int, spread: float, generator, device, centre: float = 1.0) -> torch.Tensor:
    u = torch.rand(n, generator=generator, device=device)
    return centre + (2 * u - 1) * spread


def _check(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 \
            or not images.is_floating_point():
        raise ValueError(f"expected float RGB images (B, 3, H, W) in [0, 1], got "
                         f"{getattr(images, 'dtype', type(images))} {tuple(getattr(images, 'shape', ()))}")


def elastic_warp(images: torch.Tensor, strength: float = 0.05, grid_size: int = 4,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Warp each image by its own smooth random displacement field (see the module docstring)."""
    _check(images)
    b, _, h, w = images.shape
    if strength <= 0:
        return images
    coarse = torch.randn(b, 2, grid_size, grid_size, generator=generator, device=images.device) * strength
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=images.device)     # pixel centres
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=images.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], -1)[None] + field.permute(0, 2, 3, 1)
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border",
                         align_corners=False)


def _hue_matrices(turns: torch.Tensor) -> torch.Tensor:
    """(B,) hue rotations in turns → (B, 3, 3) RGB → RGB matrices (rotation of I/Q in YIQ)."""
    t = torch.tensor(_RGB2YIQ, dtype=torch.float32, device=turns.device)
    t_inv = torch.linalg.inv(t)
    a = turns.float() * 2 * math.pi
    c, s = a.cos(), a.sin()
    rot = torch.zeros(turns.shape[0], 3, 3, device=turns.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    return t_inv @ rot @ t


def color_jitter(images: torch.Tensor, brightness: float = 0.5, contrast: float = 0.5, saturation: float = 0.5,
                 hue: float = 0.1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness, contrast, saturation and hue per image (see the module docstring)."""
    _check(images)
    b, dev = images.shape[0], images.device
    luma_w = torch.tensor(_LUMA, dtype=images.dtype, device=dev).view(1, 3, 1, 1)
    # draw every factor up front, so a factor of 0 does not shift the random stream of the others
    fb, fc, fs = (_uniform(b, v, generator, dev).to(images.dtype).view(b, 1, 1, 1)
                  for v in (brightness, contrast, saturation))
    fh = _uniform(b, hue, generator, dev, centre=0.0)
    x = images
    if brightness > 0:
        x = (x * fb).clamp(0, 1)
    if contrast > 0:
        mean = (x * luma_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        x = (mean + fc * (x - mean)).clamp(0, 1)
    if saturation > 0:
        grey = (x * luma_w).sum(1, keepdim=True)
        x = (grey + fs * (x - grey)).clamp(0, 1)
    if hue > 0:
        m = _hue_matrices(fh).to(x.dtype)
        x = torch.einsum("bij,bjhw->bihw", m, x).clamp(0, 1)
    return x


@dataclass
class MotionAugment:
    """Elastic warp + strong colour jitter for E_motion's driver input: ``aug(images, generator)``."""
    warp: float = 0.05            # std of the coarse displacements, normalised units (2 = image side)
    grid_size: int = 4            # coarse grid side of the displacement field
    brightness: float = 0.5
    contrast: float = 0.5
    saturation: float = 0.5
    hue: float = 0.1              # in turns (0.1 = ±36°)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = elastic_warp(images, self.warp, self.grid_size, generator)
        return color_jitter(x, self.brightness, self.contrast, self.saturation, self.hue, generator)
