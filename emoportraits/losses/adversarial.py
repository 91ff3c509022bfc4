"""Hinge GAN loss and discriminator feature matching: L_GAN = w_adv·L_adv + w_FM·L_FM (seed §1.3).

With D_k the k-th of K discriminator scales (means over batch and patches):

* discriminator: L_D   = 1/K Σ_k  E[relu(1 − D_k(x))] + E[relu(1 + D_k(x̂))]
* generator:     L_adv = 1/K Σ_k −E[D_k(x̂)]
* feature match: L_FM  = 1/K Σ_k 1/L Σ_l |F_kl(x̂) − sg[F_kl(x)]|₁ (mean absolute error)

All functions take the per-scale lists that ``MultiScalePatchDiscriminator`` returns; use
``split_outputs`` to turn its ``[(features, logits), ...]`` into the two lists.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["d_hinge_loss", "g_hinge_loss", "feature_matching_loss", "split_outputs"]


def split_outputs(outputs):
    """``[(features, logits), ...]`` → ``([features, ...], [logits, ...])``."""
    return [f for f, _ in outputs], [l for _, l in outputs]


def _check(lists: Sequence, name: str) -> None:
    if len(lists) == 0:
        raise ValueError(f"{name} is empty: expected one entry per discriminator scale")


def d_hinge_loss(real_logits_list: Sequence[torch.Tensor], fake_logits_list: Sequence[torch.Tensor]) -> torch.Tensor:
    _check(real_logits_list, "real_logits_list")
    if len(real_logits_list) != len(fake_logits_list):
        raise ValueError(f"{len(real_logits_list)} real vs {len(fake_logits_list)} fake scales")
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits_list, fake_logits_list)]
    return torch.stack(terms).mean()


def g_hinge_loss(fake_logits_list: Sequence[torch.Tensor]) -> torch.Tensor:
    _check(fake_logits_list, "fake_logits_list")
    return torch.stack([-f.mean() for f in fake_logits_list]).mean()


def feature_matching_loss(real_feats: Sequence[Sequence[torch.Tensor]],
                          fake_feats: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    _check(real_feats, "real_feats")
    if len(real_feats) != len(fake_feats):
        raise ValueError(f"{len(real_feats)} real vs {len(fake_feats)} fake scales")
    per_scale = []
    for real, fake in zip(real_feats, fake_feats):
        if len(real) != len(fake) or len(real) == 0:
            raise ValueError(f"feature lists differ in length ({len(real)} real vs {len(fake)} fake)")
        # real features are a fixed target: the generator must not move D's view of the real image
        per_scale.append(torch.stack([F.l1_loss(f, r.detach()) for r, f in zip(real, fake)]).mean())
    return torch.stack(per_scale).mean()
