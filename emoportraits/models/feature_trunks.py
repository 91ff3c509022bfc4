"""Pretrained feature networks in torchvision's layout (``features.{i}.weight|bias``), built by one function:
the VGG-19 of L_IN and the VGG-16 of the gaze loss (``losses``), the AlexNet and VGG-16 trunks of LPIPS
(``metrics.lpips``). Their weights come from files (``state_dict.load_strict``); the trunks do not
normalise their input, so they reproduce the original networks exactly.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["VGG16", "VGG19", "ALEXNET", "conv_relu_layers", "TapTrunk"]

# a number: 3×3 conv (padding 1) to that many channels; (channels, kernel, stride, padding): another conv;
# "M": max pool. Each conv is followed by a ReLU.
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
ALEXNET = ((64, 11, 4, 2), "M", (192, 5, 1, 2), "M", (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))   # 3×3/2 pools


def conv_relu_layers(spec: Sequence[int | tuple | str], pool: tuple[int, int] = (2, 2),
                     in_channels: int = 3) -> nn.Sequential:
    """torchvision's ``features`` of a VGG / AlexNet from ``spec`` (see ``VGG16``); "M" is a max pool of
    ``pool`` = (kernel, stride). The ReLUs are not in place: their outputs may be returned."""
    layers, cin = [], in_channels
    for item in spec:
        if item == "M":
            layers.append(nn.MaxPool2d(*pool))
            continue
        cout, kernel, stride, padding = (item, 3, 1, 1) if isinstance(item, int) else item
        layers += [nn.Conv2d(cin, cout, kernel, stride, padding), nn.ReLU()]
        cin = cout
    return nn.Sequential(*layers)


class TapTrunk(nn.Module):
    """``features`` (`conv_relu_layers`) returning the outputs of the layers whose indices are in ``taps``;
    it stops after the last tap (deeper layers are in the weight files but never needed)."""

    def __init__(self, spec: Sequence[int | tuple | str], taps: Sequence[int] = (), pool: tuple[int, int] = (2, 2)):
        super().__init__()
        self.features = conv_relu_layers(spec, pool)
        self.taps = tuple(taps)

    def relu_after_conv(self, conv_numbers: Sequence[int]) -> tuple[int, ...]:
        """Layer indices of the ReLUs after the given convs (0 = the first conv)."""
        convs = [i for i, layer in enumerate(self.features) if isinstance(layer, nn.Conv2d)]
        return tuple(convs[c] + 1 for c in conv_numbers)

    def tap_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
                if len(out) == len(self.taps):
                    break
        return out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.tap_outputs(x)
