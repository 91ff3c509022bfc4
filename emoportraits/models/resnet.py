"""ResNet trunks in torchvision's layout, with the two normalisation flavours the model uses.

* ``norm="group"`` (identity encoder, E_motion): BatchNorm replaced by GroupNorm, and the convs that
  follow a norm inside a block are weight-standardised with a bias (the released weights' layout).
* ``norm="batch"`` (head-pose network): a plain torchvision ResNet, so the authors'
  ``head_pose_regressor.pth`` maps onto it key for key.

Layer names follow torchvision (conv1, layer1..4, downsample) with ``bnK`` renamed ``normK``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import GN_EPS, conv


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(groups, channels, eps=GN_EPS)
    return nn.BatchNorm2d(channels, eps=1e-5)


class _Downsample(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, groups: int):
        super().__init__()
        self.conv = conv(2, c_in, c_out, 1, stride=stride)
        self.norm = _norm(norm, c_out, groups)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int, norm: str, groups: int):
        super().__init__()
        ws = norm == "group"
        self.conv1 = conv(2, c_in, width, 3, stride=stride)
        self.norm1 = _norm(norm, width, groups)
        self.conv2 = conv(2, width, width, 3, ws=ws)
        self.norm2 = _norm(norm, width, groups)
        self.downsample = (_Downsample(c_in, width, stride, norm, groups)
                           if stride != 1 or c_in != width else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.relu(h + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: the stride sits on the 3×3 conv."""
    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int, norm: str, groups: int):
        super().__init__()
        ws = norm == "group"
        c_out = width * self.expansion
        self.conv1 = conv(2, c_in, width, 1)
        self.norm1 = _norm(norm, width, groups)
        self.conv2 = conv(2, width, width, 3, ws=ws, stride=stride)
        self.norm2 = _norm(norm, width, groups)
        self.conv3 = conv(2, width, c_out, 1, ws=ws)
        self.norm3 = _norm(norm, c_out, groups)
        self.downsample = (_Downsample(c_in, c_out, stride, norm, groups)
                           if stride != 1 or c_in != c_out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        h = F.relu(self.norm2(self.conv2(h)))
        h = self.norm3(self.conv3(h))
        return F.relu(h + (x if self.downsample is None else self.downsample(x)))


class ResNetTrunk(nn.Module):
    """conv 7×7/2 → norm → ReLU → max-pool 3×3/2 → four stages; no pooling/classifier."""

    def __init__(self, layers, widths, *, bottleneck: bool, norm: str = "group", groups: int = 32):
        super().__init__()
        block = Bottleneck if bottleneck else BasicBlock
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
        self.norm1 = _norm(norm, widths[0], groups)
        c = widths[0]
        for i, (n, w) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(n):
                blocks.append(block(c, w, 2 if (j == 0 and i > 0) else 1, norm, groups))
                c = w * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.out_channels = c

    def forward(self, x: torch.Tensor, *, record=None) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.norm1(self.conv1(x))), 3, stride=2, padding=1)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            if record is not None:
                record(f"layer{i}", x)
        return x


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB → ImageNet-normalised input of the GroupNorm ResNet trunks."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std
