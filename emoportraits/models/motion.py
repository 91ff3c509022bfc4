"""Motion descriptors of a face image: E_motion (expression latent z) and the head-pose network (θ)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import EmoPortraitsConfig
from .blocks import conv
from .geometry import expression_crop_grid, sample, theta_from_raw9
from .resnet import ResNetTrunk, imagenet_normalize
from .tracing import record


class ExpressionEncoder(nn.Module):
    """E_motion: z ∈ R^z_dim from a face crop aligned with the head pose θ.

    crop (grid_sample of the image along inv(θ), zoomed ×2) → GroupNorm ResNet-18 → 1×1 conv →
    Dropout → avg-pool to p×p → flatten → linear (no bias). The dropout is the paper's
    bottleneck regulariser: it is active in train mode only.
    """

    def __init__(self, config: EmoPortraitsConfig):
        super().__init__()
        cfg = config
        self.crop_size, self.zoom, self.pool = cfg.exp_crop_size, cfg.exp_crop_zoom, cfg.exp_pool_size
        self.trunk = ResNetTrunk(cfg.exp_layers, cfg.exp_widths, bottleneck=False, norm="group",
                                 groups=cfg.norm_groups)
        self.proj = conv(2, self.trunk.out_channels, cfg.exp_fc_channels, 1)
        self.dropout = nn.Dropout(cfg.exp_dropout)
        self.head = nn.Linear(cfg.exp_fc_channels * self.pool ** 2, cfg.z_dim, bias=False)

    def crop(self, image: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = record("exp.align_grid", expression_crop_grid(theta, self.crop_size, self.zoom))
        return record("exp.crop", sample(image, grid))

    def forward(self, image: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        x = record("exp.net_input", self.crop(image, theta))
        x = self.trunk(imagenet_normalize(x))
        record("exp.layer4", x)
        x = F.adaptive_avg_pool2d(self.dropout(self.proj(x)), self.pool)
        record("exp.fc_out", x)
        return record("z", self.head(x.flatten(1)))


class HeadPoseNet(nn.Module):
    """Head-pose regressor: torchvision ResNet-18 (BatchNorm) on the image resized to 128², no
    normalisation, 9 outputs (scale 3, yaw/pitch/roll 3, translation 3) → θ (B, 4, 4).

    Trained (by the authors) to fit a similarity transform of 3-D landmarks to a template; kept
    frozen everywhere in this project.
    """

    def __init__(self, config: EmoPortraitsConfig):
        super().__init__()
        self.input_size = config.pose_input_size
        self.trunk = ResNetTrunk(config.pose_layers, config.pose_widths, bottleneck=False, norm="batch")
        self.fc = nn.Linear(self.trunk.out_channels, 9)

    def raw(self, image: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(image, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = self.trunk(record("input_128", x))
        x = record("features", torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return record("raw9", self.fc(x))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return record("theta", theta_from_raw9(self.raw(image)))
