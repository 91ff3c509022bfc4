"""Losses of the head-pose GAN (SPEC §5; seed supplementary eq. 5–9), on (B, T, 9) pose sequences
(6D rotation r + translation t, ``geometry`` "head-pose sequences"):

    L_G = λ_recons·(λ_rot·L1(r̂, r) + λ_trans·L1(t̂, t)) + λ_adv·(−E[D(x̃)]) + λ_smooth·E|X_t − X_{t−1}|
    L_D = E[D(x̃)] − E[D(x)] + λ_gp·E[(‖∇_x̂ D(x̂)‖₂ − 1)²],  x̂ = ε·x + (1 − ε)·x̃,  ε ~ U[0, 1] per sequence

L1 terms are means over frames and numbers (the paper's sums up to a constant factor).
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["pose_reconstruction_loss", "pose_smoothness_loss", "wgan_critic_loss", "wgan_generator_loss",
           "interpolates", "gradient_penalty"]


def pose_reconstruction_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1 of the 6D rotations, L1 of the translations) of (…, 9) poses."""
    if pred.shape != target.shape or pred.shape[-1] != 9:
        raise ValueError(f"pred and target must be (…, 9) of one shape, got {tuple(pred.shape)}, {tuple(target.shape)}")
    diff = (pred - target).abs()
    return diff[..., :6].mean(), diff[..., 6:].mean()


def pose_smoothness_loss(poses: torch.Tensor) -> torch.Tensor:
    """Mean |X_t − X_{t−1}| over consecutive frames of (B, T, 9) (0 for T < 2)."""
    if poses.shape[-2] < 2:
        return poses.sum() * 0.0
    return (poses[..., 1:, :] - poses[..., :-1, :]).abs().mean()


def wgan_critic_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """E[D(fake)] − E[D(real)] (without the gradient penalty)."""
    return d_fake.mean() - d_real.mean()


def wgan_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """−E[D(fake)]."""
    return -d_fake.mean()


def interpolates(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """x̂ = ε·real + (1 − ε)·fake with one ε ~ U[0, 1] per sample (``eps`` (B,) to fix it)."""
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have one shape, got {tuple(real.shape)}, {tuple(fake.shape)}")
    if eps is None:
        eps = torch.rand(real.shape[0], generator=generator, device="cpu" if generator is None else generator.device)
    eps = eps.to(real.device, real.dtype).view(-1, *([1] * (real.ndim - 1)))
    return eps * real.detach() + (1 - eps) * fake.detach()


def gradient_penalty(critic: Callable[..., torch.Tensor], real: torch.Tensor, fake: torch.Tensor, *cond,
                     eps: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """E[(‖∇_x̂ critic(x̂, *cond)‖₂ − 1)²] on interpolates x̂ of ``real`` and ``fake`` (WGAN-GP). The
    norm is per sample over all its numbers; the gradient is taken w.r.t. x̂ only (``cond``, e.g. the
    audio, is a fixed condition) and kept in the graph (create_graph) so the penalty trains the critic.
    Computed in float32 outside autocast: double backward in half precision is unreliable."""
    x = interpolates(real, fake, eps, generator).float().requires_grad_(True)
    with torch.autocast(device_type=x.device.type, enabled=False):
        scores = critic(x, *cond)
        grad, = torch.autograd.grad(scores.sum(), x, create_graph=True)
    norm = grad.flatten(1).norm(2, dim=1)
    return ((norm - 1) ** 2).mean()
