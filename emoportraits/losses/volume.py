"""Canonical volume loss (paper eq. 2, SPEC §3): L_CV = L1(V^C_s, sg[V^C_d]).

V^C_s and V^C_d are the canonical volumes computed from the source and from the driver frame of
the SAME video (pose and expression removed, source scale). Matching them removes expression
information from V^C, so it must come from z. The driver volume is the target (stop-gradient).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["canonical_volume_loss"]


def canonical_volume_loss(v_source: torch.Tensor, v_driver: torch.Tensor) -> torch.Tensor:
    if v_source.shape != v_driver.shape:
        raise ValueError(f"canonical volumes differ in shape: {tuple(v_source.shape)} vs {tuple(v_driver.shape)}")
    return F.l1_loss(v_source, v_driver.detach())
