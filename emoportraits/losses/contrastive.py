"""Latent losses on the expression code z: L_lat = w_cos·L_cos + w_sdm·L_sdm (seed §1.3, SPEC §3).

CosFace (Wang et al. 2018, as used by MegaPortraits/EMOPortraits), with cos the cosine similarity:

    d⁺(a, p) = s·(cos(a, p) − m),   d⁻(a, n) = s·cos(a, n),   s = 5, m = 0.2
    L_cos = mean_b −log( exp d⁺(a_b, p_b) / (exp d⁺(a_b, p_b) + Σ_j exp d⁻(a_b, n_bj)) )

i.e. cross-entropy over logits [d⁺, d⁻_1 … d⁻_N] with the positive as class 0. In training the
anchors are E_motion(x̂_{s→d}) (and E_motion(x̂_mix)), the positives z_d and the negatives the z
of the other drivers in the batch (``cosface_batch``).

Source–driver mismatch (paper eq. 3): source and driver come from the same video, so any
similarity of their codes above a margin is identity leaking into z:

    L_sdm = mean_b max(0, cos(sg[z_s], z_d) − margin)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cosface_loss", "cosface_batch", "source_driver_mismatch_loss"]


def cosface_loss(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                 s: float = 5.0, m: float = 0.2, negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """anchors, positives (B, D); negatives (B, N, D) per anchor, or (N, D) shared by all anchors.

    ``negative_mask`` (B, N) bool, optional: True where negative j is used for anchor b (the others
    are dropped from the softmax).
    """
    if anchors.ndim != 2 or positives.shape != anchors.shape:
        raise ValueError(f"anchors/positives must both be (B, D), got {tuple(anchors.shape)}, {tuple(positives.shape)}")
    a, p, n = F.normalize(anchors, dim=-1), F.normalize(positives, dim=-1), F.normalize(negatives, dim=-1)
    cos_pos = (a * p).sum(-1, keepdim=True)                                         # (B, 1)
    cos_neg = torch.einsum("bd,bnd->bn", a, n) if n.ndim == 3 else a @ n.t()        # (B, N)
    neg_logits = s * cos_neg
    if negative_mask is not None:
        neg_logits = neg_logits.masked_fill(~negative_mask.bool(), float("-inf"))
    logits = torch.cat([s * (cos_pos - m), neg_logits], dim=1)
    return F.cross_entropy(logits, logits.new_zeros(logits.shape[0], dtype=torch.long))


def cosface_batch(z_pred: torch.Tensor, z_target: torch.Tensor, s: float = 5.0, m: float = 0.2) -> torch.Tensor:
    """In-batch CosFace: anchor z_pred[i], positive z_target[i], negatives z_target[j ≠ i].

    With a batch of one there is no negative and the loss is 0.
    """
    b = z_pred.shape[0]
    others = ~torch.eye(b, dtype=torch.bool, device=z_pred.device)
    return cosface_loss(z_pred, z_target, z_target, s=s, m=m, negative_mask=others)


def source_driver_mismatch_loss(z_s: torch.Tensor, z_d: torch.Tensor, margin: float | torch.Tensor = 0.5,
                                weights: torch.Tensor | None = None) -> torch.Tensor:
    """mean(max(0, cos(sg[z_s], z_d) − margin)); ``margin`` and ``weights`` may be per sample (B,).

    Per-sample values express the paper's FEED settings (margin 0.25, weight ×10) in a mixed batch.
    """
    # stop-gradient on z_s: only the driver code is pushed away (paper eq. 3)
    hinge = F.relu(F.cosine_similarity(z_s.detach(), z_d, dim=-1) - margin)
    if weights is not None:
        hinge = hinge * weights
    return hinge.mean()
