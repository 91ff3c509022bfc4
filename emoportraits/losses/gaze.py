"""Gaze loss L_gaze: feature L1 of a gaze network on eye crops (seed §1.3, SPEC §3).

Paper: a "gaze direction [network] based on VGG16" (RT-GENE, Fischer et al. 2018), with
"the L1 distance between the feature maps of both the predicted and ground truth images":

    L_gaze = Σ_l w_l · mean|ψ_l(eyes(x̂)) − sg[ψ_l(eyes(x))]|

eyes(·) are crops around the two eye centres (B, 2, 2) given in the normalised [-1, 1] frame; a
crop is ``crop_fraction`` × the face size wide with the aspect of ``crop_size`` (RT-GENE eye
patches are 36×60, h×w). The face size defaults to the whole image (inputs are face crops).

``GazeVGG16Features`` is torchvision's ``vgg16().features`` layout (keys ``features.{i}.*``),
returning relu1_1, relu2_1, relu3_1, relu4_1, relu5_1; RT-GENE feeds RGB [0, 1] with ImageNet
normalisation (``normalize="imagenet"``). RT-GENE's ``GazeEstimationModelVGG`` holds two such
trunks (``left_features.*``, ``right_features.*``) plus fc heads: load one trunk with
``GazeVGG16Features.from_file(path, prefix="left_features.", ignore_prefixes=RT_GENE_IGNORED_PREFIXES)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..models.feature_trunks import VGG16, TapTrunk
from ..state_dict import load_strict
from .perceptual import PerceptualLoss, crop_regions

__all__ = ["GazeFeatureLoss", "GazeVGG16Features", "RT_GENE_IGNORED_PREFIXES"]

# everything of RT-GENE's VGG gaze model that is not the left VGG-16 trunk (31 = its appended layer)
RT_GENE_IGNORED_PREFIXES = ("right_features.", "left_features.31.", "xl.", "xr.", "concat.", "fc.")


class GazeVGG16Features(TapTrunk):
    """VGG-16 conv trunk (torchvision layout); returns [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1]."""

    def __init__(self):
        super().__init__(VGG16, taps=(1, 6, 11, 18, 25))

    @classmethod
    def from_file(cls, path: str | Path, prefix: str = "features.",
                  ignore_prefixes: Sequence[str] = ("classifier.",)) -> "GazeVGG16Features":
        """Keys ``{prefix}{i}.weight|bias`` for the 13 convs; keys under ``ignore_prefixes`` are skipped."""
        def rename(key: str) -> str:
            return "features." + key[len(prefix):] if key.startswith(prefix) else key
        return load_strict(cls(), path, f"GazeVGG16Features file {path}", ignored_prefixes=tuple(ignore_prefixes),
                           rename=rename, layout=f"VGG-16 trunk: {prefix}{{0,2,5,...,28}}.weight/bias").eval()


class GazeFeatureLoss(nn.Module):
    """``forward(pred, target, eye_centers (B, 2, 2), face_size=None)`` → scalar L_gaze.

    ``network`` is any module mapping eye crops (N, 3, h, w) to a list of feature maps; it is frozen.
    ``face_size`` (B,) is the face width in normalised units (default 2: the whole image).
    """

    def __init__(self, network: nn.Module, crop_fraction: float = 0.25, crop_size: tuple[int, int] = (36, 60),
                 layer_weights: Sequence[float] | None = None, normalize: str | None = "imagenet"):
        super().__init__()
        self.crop_fraction, self.crop_size = crop_fraction, tuple(crop_size)
        self.loss = PerceptualLoss(network, layer_weights, num_scales=1, normalize=normalize)

    def eye_crops(self, images: torch.Tensor, eye_centers: torch.Tensor,
                  face_size: torch.Tensor | None = None) -> torch.Tensor:
        b = images.shape[0]
        if eye_centers.shape != (b, 2, 2):
            raise ValueError(f"eye_centers must be (B, 2, 2) (x, y) in [-1, 1], got {tuple(eye_centers.shape)}")
        face = images.new_full((b,), 2.0) if face_size is None else face_size.to(images.dtype).reshape(b)
        width = self.crop_fraction * face
        height = width * self.crop_size[0] / self.crop_size[1]   # keep the network's patch aspect
        sizes = torch.stack([width, height], -1).unsqueeze(1).expand(b, 2, 2)
        return crop_regions(images, eye_centers.to(images.dtype).detach(), sizes, self.crop_size)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, eye_centers: torch.Tensor,
                face_size: torch.Tensor | None = None) -> torch.Tensor:
        return self.loss(self.eye_crops(pred, eye_centers, face_size), self.eye_crops(target, eye_centers, face_size))
