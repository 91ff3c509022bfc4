"""Perceptual losses L_IN (VGG19, ImageNet) and L_face (VGGFace on face crops) (seed §1.3, SPEC §3).

Paper: "the L1 distance between the feature maps of both the predicted and ground truth images".
Here, for a feature network φ returning maps φ_1..φ_L and an image pyramid of K levels
(level k = bilinear ×0.5^k):

    L = 1/K Σ_k Σ_l w_l · mean|φ_l(x̂^k) − sg[φ_l(x^k)]|

Networks (all frozen by the loss; random weights only when a user constructs them explicitly):

* ``VGG19Features`` — torchvision's ``vgg19().features`` layout (keys ``features.{i}.weight|bias``),
  returns relu1_1, relu2_1, relu3_1, relu4_1, relu5_1. Input: RGB [0, 1] with ImageNet
  normalisation, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) → ``normalize="imagenet"``.
* ``VGGFaceFeatures`` — VGG-16 of Oxford VGG-Face (Parkhi et al. 2015) converted to PyTorch with
  keys ``conv{b}_{i}.weight|bias`` (conv1_1 … conv5_3); ``fc6``/``fc7``/``fc8`` keys are ignored.
  Returns relu1_1 … relu5_1. Input: RGB in 0..255 minus the VGG-Face mean (129.1863, 104.7624,
  93.5940), no std → ``normalize="vggface"`` (from RGB [0, 1]). Files converted from Caffe may be
  BGR-ordered: convert the first conv's input channels before use.

The networks themselves do not normalise, so they reproduce the original models exactly.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsMismatchError
from ..models.feature_trunks import VGG19, TapTrunk
from ..state_dict import load_strict

__all__ = ["VGG19Features", "VGGFaceFeatures", "PerceptualLoss", "FacePerceptualLoss", "crop_regions",
           "normalize_input", "LossNetworkWeightsError", "VGG19_CLASSIFIER_KEYS",
           "VGGFACE_FC_KEYS"]

_NORMS = {  # (mean, std) applied to RGB in [0, 1]
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "vggface": ((129.1863 / 255, 104.7624 / 255, 93.5940 / 255), (1 / 255,) * 3),
}


def normalize_input(x: torch.Tensor, mode: str | None) -> torch.Tensor:
    """RGB [0, 1] → the input a pretrained net expects: "imagenet", "vggface", or None (as is)."""
    if mode is None or mode == "none":
        return x
    if mode not in _NORMS:
        raise ValueError(f"normalize must be one of {sorted(_NORMS)} or None, got {mode!r}")
    mean, std = (torch.tensor(v, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) for v in _NORMS[mode])
    return (x - mean) / std


# --------------------------------------------------------------------------------- networks
# One error for every weight file that does not fit its network (`state_dict.load_strict`); the losses'
# name for it, kept for their callers.
LossNetworkWeightsError = WeightsMismatchError


class VGG19Features(TapTrunk):
    """torchvision ``vgg19().features``; returns [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1]."""

    def __init__(self):
        super().__init__(VGG19, taps=(1, 6, 11, 20, 29))

    @classmethod
    def from_file(cls, path: str | Path) -> "VGG19Features":
        """A torchvision ``vgg19-*.pth`` (full, classifier keys ignored) or a ``features.*``-only dict."""
        return load_strict(cls(), path, f"VGG19Features file {path}", ignored=VGG19_CLASSIFIER_KEYS,
                           layout="torchvision vgg19: features.{0,2,5,...,34}.weight/bias "
                                  "(+ optional classifier.{0,3,6}.weight/bias)").eval()


# the ImageNet classifier head of the torchvision file: not used by a perceptual loss
VGG19_CLASSIFIER_KEYS = tuple(f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias"))

VGGFACE_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
VGGFACE_FC_KEYS = tuple(f"{n}.{p}" for n in ("fc6", "fc7", "fc8") for p in ("weight", "bias"))


class VGGFaceFeatures(nn.Module):
    """Oxford VGG-Face VGG-16 convs ``conv1_1`` … ``conv5_3``; returns [relu1_1, …, relu5_1]."""

    def __init__(self):
        super().__init__()
        cin = 3
        for b, (cout, n) in enumerate(VGGFACE_BLOCKS, start=1):
            for i in range(1, n + 1):
                self.add_module(f"conv{b}_{i}", nn.Conv2d(cin, cout, 3, padding=1))
                cin = cout

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for b, (_, n) in enumerate(VGGFACE_BLOCKS, start=1):
            if b > 1:
                x = F.max_pool2d(x, 2, 2)
            x = F.relu(getattr(self, f"conv{b}_1")(x))
            out.append(x)
            if b == len(VGGFACE_BLOCKS):
                break   # conv5_2/5_3 are part of the file but do not feed relu5_1
            for i in range(2, n + 1):
                x = F.relu(getattr(self, f"conv{b}_{i}")(x))
        return out

    @classmethod
    def from_file(cls, path: str | Path) -> "VGGFaceFeatures":
        """State dict with keys conv{1..5}_{i}.weight/bias; fc6/fc7/fc8.weight/bias are ignored."""
        return load_strict(cls(), path, f"VGGFaceFeatures file {path}", ignored=VGGFACE_FC_KEYS,
                           layout="VGG-Face: conv1_1 … conv5_3 .weight/.bias (+ optional fc6/fc7/fc8)").eval()


# --------------------------------------------------------------------------------- crops
def crop_regions(images: torch.Tensor, centers: torch.Tensor, sizes: torch.Tensor,
                 out_hw: tuple[int, int]) -> torch.Tensor:
    """Differentiable batched crops (bilinear ``grid_sample``): (B, C, H, W) → (B·K, C, h, w).

    ``centers`` (B, K, 2) are (x, y) and ``sizes`` (B, K, 2) are (width, height), both in the
    normalised [-1, 1] image frame (a size of 2 spans the whole image). Outside: zeros.
    """
    b, k = centers.shape[:2]
    h, w = out_hw
    zero = torch.zeros_like(centers[..., 0])
    theta = torch.stack([torch.stack([sizes[..., 0] / 2, zero, centers[..., 0]], -1),
                         torch.stack([zero, sizes[..., 1] / 2, centers[..., 1]], -1)], -2)  # (B, K, 2, 3)
    grid = F.affine_grid(theta.reshape(b * k, 2, 3).to(images.dtype), [b * k, 1, h, w], align_corners=False)
    # sample all K crops of an image in one call instead of copying the image K times
    crops = F.grid_sample(images, grid.reshape(b, k * h, w, 2), mode="bilinear", align_corners=False)
    return crops.reshape(b, images.shape[1], k, h, w).transpose(1, 2).reshape(b * k, images.shape[1], h, w)


# --------------------------------------------------------------------------------- losses
class PerceptualLoss(nn.Module):
    """Σ_l w_l·L1(φ_l(x̂), sg[φ_l(x)]), averaged over a ``num_scales`` bilinear ×0.5 pyramid.

    ``features`` is frozen (no grad, kept in eval mode); ``layer_weights=None`` weighs every map 1.
    Inputs are RGB in [0, 1], normalised per ``normalize`` before φ.
    """

    def __init__(self, features: nn.Module, layer_weights: Sequence[float] | None = (1, 1, 1, 1, 1),
                 num_scales: int = 4, normalize: str | None = "imagenet"):
        super().__init__()
        if num_scales < 1:
            raise ValueError("num_scales must be >= 1")
        normalize_input(torch.zeros(1, 3, 1, 1), normalize)   # validate the mode early
        self.features = features.requires_grad_(False).eval()
        self.layer_weights = None if layer_weights is None else tuple(layer_weights)  # None: 1 per map
        self.num_scales, self.normalize = num_scales, normalize

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.features.eval()   # a pretrained net's BN/dropout must never switch to training
        return self

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        pred, target = normalize_input(pred, self.normalize), normalize_input(target.detach(), self.normalize)
        total = pred.new_zeros(())
        for k in range(self.num_scales):
            if k > 0:
                pred = F.interpolate(pred, scale_factor=0.5, mode="bilinear", align_corners=False)
                target = F.interpolate(target, scale_factor=0.5, mode="bilinear", align_corners=False)
            fp = self.features(pred)
            with torch.no_grad():
                ft = self.features(target)
            weights = (1.0,) * len(fp) if self.layer_weights is None else self.layer_weights
            if len(fp) != len(weights):
                raise ValueError(f"feature net returned {len(fp)} maps but {len(weights)} layer_weights were given")
            for w, a, b in zip(weights, fp, ft):
                total = total + w * F.l1_loss(a, b)
        return total / self.num_scales


class FacePerceptualLoss(nn.Module):
    """Perceptual loss on face-aligned square crops of prediction and target (L_face).

    ``boxes`` (B, 3) = [x0, y0, side] in the normalised [-1, 1] frame: (x0, y0) is the top-left
    corner, ``side`` the side length (2 = the full image; square in pixels for square images).
    ``boxes=None`` uses the whole image. Crops are resampled to ``crop_size`` (VGG-Face: 224).
    """

    def __init__(self, features: nn.Module, crop_size: int = 224, layer_weights: Sequence[float] = (1, 1, 1, 1, 1),
                 num_scales: int = 1, normalize: str | None = "vggface"):
        super().__init__()
        self.crop_size = crop_size
        self.loss = PerceptualLoss(features, layer_weights, num_scales, normalize)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        if boxes is None:
            boxes = pred.new_tensor([-1.0, -1.0, 2.0]).expand(pred.shape[0], 3)
        if boxes.shape != (pred.shape[0], 3):
            raise ValueError(f"boxes must be (B, 3) [x0, y0, side], got {tuple(boxes.shape)}")
        boxes = boxes.to(pred.dtype).detach()
        centers = (boxes[:, :2] + boxes[:, 2:] / 2).unsqueeze(1)
        sizes = boxes[:, 2:].expand(-1, 2).unsqueeze(1)
        size = (self.crop_size, self.crop_size)
        return self.loss(crop_regions(pred, centers, sizes, size), crop_regions(target, centers, sizes, size))
