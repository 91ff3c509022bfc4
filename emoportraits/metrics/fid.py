"""Fréchet Inception Distance (Heusel et al. 2017) with a user-provided feature extractor.

FID = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^{1/2}). Inception weights are not reachable offline:
pass a TorchScript file (``torch.jit.save``) or module mapping images (B, 3, H, W) to features (B, D),
e.g. the pool3 Inception-v3 of the standard FID implementations, exported on a machine that has it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .weights import load_module, on_device


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(w.clip(0))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance of two Gaussians. tr((Σ₁Σ₂)^{1/2}) = tr((Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}): the inner
    matrix is symmetric PSD, so its square root is real and stable (no complex sqrtm of Σ₁Σ₂)."""
    mu1, mu2 = np.asarray(mu1, np.float64).ravel(), np.asarray(mu2, np.float64).ravel()
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shapes do not match: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    r1 = _sqrt_psd(s1)
    cross = np.sqrt(np.linalg.eigvalsh(r1 @ s2 @ r1).clip(0)).sum()
    return float(max(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross, 0.0))


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), N ≥ 2."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features (N, D) with N >= 2, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def fid_from_features(features_a, features_b) -> float:
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


@dataclass
class FIDConfig:
    input_size: int = 299             # Inception-v3
    input_range: str = "0,1"          # what the extractor expects: "0,1" or "-1,1"
    batch_size: int = 32


class FeatureExtractor:
    """Images → features with a user's network (module / callable / TorchScript file)."""

    def __init__(self, network: str | os.PathLike | torch.nn.Module, config: FIDConfig | None = None,
                 device: str | torch.device = "cpu"):
        self.net = on_device(load_module(network, "FID feature extractor"), device)
        self.config, self.device = config or FIDConfig(), torch.device(device)
        if self.config.input_range not in ("0,1", "-1,1"):
            raise ValueError(f"input_range must be '0,1' or '-1,1', got {self.config.input_range!r}")

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """Features (N, D) of images (N, 3, H, W) in [0, 1]."""
        out, c = [], self.config
        for i in range(0, len(images), c.batch_size):
            x = images[i:i + c.batch_size].to(self.device).float()
            x = F.interpolate(x, size=(c.input_size, c.input_size), mode="bilinear", align_corners=False)
            if c.input_range == "-1,1":
                x = x * 2 - 1
            out.append(self.net(x).float().reshape(x.shape[0], -1).cpu().numpy())
        return np.concatenate(out)
