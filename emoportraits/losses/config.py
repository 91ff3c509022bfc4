"""Loss weights and pretrained loss networks of the main model's training (SPEC §3, seed §1.3).

``LossWeights()`` holds the released code's weights (they produced the released model);
``LossWeights.paper()`` the paper's values where they differ (w_IN 20, w_CV 1, FEED sdm margin 0.25).

``build_loss_networks`` loads the pretrained networks a ``LossNetworks`` names. A loss whose network
is not given is switched off (weight 0) with one warning naming the field to set: training never
runs silently on a randomly initialised loss network. Tests pass random networks explicitly.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Union

import torch
from torch import nn

from .gaze import GazeVGG16Features
from .perceptual import VGG19Features, VGGFaceFeatures

__all__ = ["LossWeights", "LossNetworks", "build_loss_networks"]

NetworkSpec = Union[str, Path, nn.Module, Callable, None]


@dataclass
class LossWeights:
    vgg19: float = 18.0               # L_IN   [paper 20]
    vggface: float = 10.0             # L_face
    gaze: float = 10.0                # L_gaze
    eyes: float = 500.0               # L_head parts
    mouth: float = 500.0
    ears: float = 500.0
    regions_start_epoch: int = 10     # L_head is active from this epoch on
    adversarial: float = 1.0          # L_adv
    feature_matching: float = 40.0    # L_FM
    cosface: float = 2.0              # L_cos
    cosface_s: float = 5.0
    cosface_m: float = 0.2
    sdm: float = 1.0                  # L_sdm
    sdm_feed_multiplier: float = 10.0  # L_sdm weight ×10 for FEED pairs
    sdm_margin: float = 0.5           # VoxCeleb2 pairs
    sdm_margin_feed: float = 0.5      # FEED pairs [paper 0.25]
    canonical_volume: float = 0.5     # L_CV   [paper 1]
    l1: float = 0.0                   # plain pixel L1: not in the released run; for small runs without
                                      # pretrained loss networks (e.g. the CPU smoke configuration)

    @classmethod
    def paper(cls) -> "LossWeights":
        return cls(vgg19=20.0, sdm_margin_feed=0.25, canonical_volume=1.0)

    def regions_active(self, epoch: int) -> bool:
        return epoch >= self.regions_start_epoch


@dataclass
class LossNetworks:
    """Where the pretrained loss networks come from: a file path, an already-built module, or None.

    vgg19: torchvision ``vgg19-*.pth``. vggface: VGG-Face state dict (``conv1_1.weight`` …).
    gaze: VGG-16 trunk (``gaze_prefix`` + ``{i}.weight``; see ``losses.gaze`` for RT-GENE files).
    face_parser: a ``torch.export`` program file (``.pt2``) of a module mapping RGB [0, 1] images
    (B, 3, H, W) to class logits, or a callable (CelebAMask-HQ 19-class ids by default).
    """
    vgg19: NetworkSpec = None
    vggface: NetworkSpec = None
    gaze: NetworkSpec = None
    face_parser: NetworkSpec = None
    gaze_prefix: str = "features."
    gaze_ignore_prefixes: tuple[str, ...] = ("classifier.",)


class _Exported(nn.Module):
    """Holds an exported program's module: its train/eval mode was fixed at export time."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def train(self, mode: bool = True) -> "_Exported":
        self.training = mode   # exported modules refuse .train()/.eval(); nothing to switch anyway
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


# network field -> (loss name for the message, weight fields it feeds, loader of a file)
_SPECS: dict[str, tuple[str, tuple[str, ...], Callable[[Path, LossNetworks], Any]]] = {
    "vgg19": ("L_IN (VGG19 perceptual)", ("vgg19",), lambda p, n: VGG19Features.from_file(p)),
    "vggface": ("L_face (VGGFace perceptual)", ("vggface",), lambda p, n: VGGFaceFeatures.from_file(p)),
    "gaze": ("L_gaze (gaze-network features)", ("gaze",),
             lambda p, n: GazeVGG16Features.from_file(p, n.gaze_prefix, n.gaze_ignore_prefixes)),
    "face_parser": ("L_head (face-parsing region L1)", ("eyes", "mouth", "ears"),
                    lambda p, n: _Exported(torch.export.load(p).module())),
}


def build_loss_networks(networks: LossNetworks, weights: LossWeights) -> dict[str, Any]:
    """→ {"vgg19", "vggface", "gaze", "face_parser": network or None, "weights": LossWeights}.

    The returned weights are a copy with the weights of every loss without a network set to 0.
    """
    out: dict[str, Any] = {}
    for field, (loss, weight_fields, load) in _SPECS.items():
        spec = getattr(networks, field)
        if spec is None:
            out[field] = None
            active = [f for f in weight_fields if getattr(weights, f) != 0]
            if active:
                weights = replace(weights, **{f: 0.0 for f in weight_fields})
                warnings.warn(f"{loss} is switched off (weight {', '.join(active)} → 0): no network given. "
                              f"Set LossNetworks.{field} to its pretrained weights file to enable it.",
                              UserWarning, stacklevel=2)
        elif isinstance(spec, (str, Path)):
            out[field] = load(Path(spec), networks)
        else:
            out[field] = spec   # a module/callable the user built on purpose (e.g. random in tests)
    out["weights"] = weights
    return out
