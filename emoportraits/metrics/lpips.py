"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric").

The architecture is built here; its weights (ImageNet trunk + learned linear layers) are not
reachable offline, so the user passes a file. Key layout of that file (strict)::

    features.{i}.weight / .bias   the conv layers, indexed as in torchvision's alexnet()/vgg16()
                                  `.features` (so those state dicts map one to one)
    lins.{k}                      (1, C_k, 1, 1) non-negative channel weights of tap k
                                  (the official `lpips` package's `lin{k}.model.1.weight`)

`convert_official_lpips` merges a torchvision trunk state dict and the official linear layers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..models.feature_trunks import ALEXNET, VGG16, TapTrunk
from ..state_dict import load_strict

# the trunks (``feature_trunks``) and the convs (0-based) whose ReLU output is a tap: each ends a stage
_TRUNKS = {"alex": (ALEXNET, (3, 2), (0, 1, 2, 3, 4)), "vgg": (VGG16[:-1], (2, 2), (1, 3, 6, 9, 12))}
# ImageNet statistics expressed for inputs in [-1, 1], as LPIPS's scaling layer uses
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


@dataclass
class LPIPSConfig:
    backbone: str = "alex"         # "alex" (the LPIPS default) or "vgg"

    def __post_init__(self):
        if self.backbone not in _TRUNKS:
            raise ValueError(f"LPIPS backbone must be one of {sorted(_TRUNKS)}, got {self.backbone!r}")


class LPIPS(TapTrunk):
    """d(x, y) = Σ_k mean_hw ‖w_k ⊙ (n(f_k(x)) − n(f_k(y)))‖², n = unit norm over channels.

    Inputs (B, 3, H, W) in [0, 1]; output (B,). 0 for identical images whatever the weights.
    """

    def __init__(self, config: LPIPSConfig | None = None):
        config = config or LPIPSConfig()
        spec, pool, convs = _TRUNKS[config.backbone]
        super().__init__(spec, pool=pool)
        self.config = config
        self.taps = self.relu_after_conv(convs)
        channels = [self.features[i - 1].out_channels for i in self.taps]
        self.lins = nn.ParameterList([nn.Parameter(torch.ones(1, c, 1, 1) / c) for c in channels])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_file(cls, path: str | os.PathLike, backbone: str = "alex") -> "LPIPS":
        """Weights from a ``.safetensors`` / ``.pt`` state dict in the layout of the module docstring."""
        return load_strict(cls(LPIPSConfig(backbone)), path).eval()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 3:
            raise ValueError(f"LPIPS needs two (B, 3, H, W) images, got {tuple(pred.shape)} and {tuple(target.shape)}")
        x = torch.cat([pred, target]).to(self.shift.dtype)
        x = (x * 2 - 1 - self.shift) / self.scale
        total = 0.0
        for f, w in zip(self.tap_outputs(x), self.lins):
            f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            a, b = f.chunk(2)
            total = total + ((a - b) ** 2 * w).sum(1).mean((1, 2))
        return total


def convert_official_lpips(trunk: dict[str, torch.Tensor], lins: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our layout from torchvision's ``alexnet()/vgg16().features`` state dict (keys ``{i}.weight`` or
    ``features.{i}.weight``) and the official lpips ``lin{k}.model.1.weight`` tensors."""
    out = {}
    for k, v in trunk.items():
        if k.startswith("features."):
            k = k[len("features."):]
        if k.split(".")[0].isdigit():
            out[f"features.{k}"] = v
    for k, v in lins.items():
        if k.startswith("lin") and k.endswith(".model.1.weight"):
            out[f"lins.{int(k[3:k.index('.')])}"] = v
    return out
