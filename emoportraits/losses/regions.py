"""Head-region loss L_head = w_eyes·L_eyes + w_mouth·L_mouth + w_ears·L_ears (seed §1.3, SPEC §3).

Paper: face-parsing masks of the eyes, mouth and ears "match mentioned head regions on the
predicted and the ground truth images using L1 loss between pixel[s] corresponding to a specific
region". Here, with M_r the region mask of the TARGET (argmax of the parser, no gradient):

    L_r = Σ_{b,c,p} M_r·|x̂ − x| / (C · Σ_{b,p} M_r)     (mean L1 over the region's pixels; 0 if empty)

The parser is pluggable: any callable mapping images (B, 3, H, W) RGB in [0, 1] to class logits
(B, C, H', W') (resized to H×W if needed). Default class ids are those of the common 19-class
CelebAMask-HQ BiSeNet face parser: 0 background, 1 skin, 2/3 brows, 4/5 eyes (l/r), 6 eyeglasses,
7/8 ears (l/r), 9 earring, 10 nose, 11 mouth (inner), 12/13 upper/lower lip, 14 neck, 15 necklace,
16 cloth, 17 hair, 18 hat.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RegionL1Loss", "CELEBAMASK_REGIONS"]

CELEBAMASK_REGIONS: dict[str, tuple[int, ...]] = {"eyes": (4, 5), "mouth": (11, 12, 13), "ears": (7, 8)}


class RegionL1Loss(nn.Module):
    """``forward(pred, target)`` → ``{region: L1 inside the target's region mask}``."""

    def __init__(self, parser: Callable[[torch.Tensor], torch.Tensor],
                 regions: Mapping[str, Sequence[int]] = CELEBAMASK_REGIONS):
        super().__init__()
        if isinstance(parser, nn.Module):
            parser.requires_grad_(False).eval()
        self.parser = parser
        self.regions = {name: tuple(ids) for name, ids in regions.items()}

    def train(self, mode: bool = True) -> "RegionL1Loss":
        super().train(mode)
        if isinstance(self.parser, nn.Module):
            self.parser.eval()   # a pretrained parser's BatchNorm must stay in inference mode
        return self

    @torch.no_grad()
    def masks(self, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-region float masks (B, 1, H, W) from the parser's argmax on ``target``."""
        logits = self.parser(target)
        if logits.ndim != 4 or logits.shape[0] != target.shape[0]:
            raise ValueError(f"parser must return logits (B, C, H, W), got {tuple(logits.shape)}")
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        labels = logits.argmax(1, keepdim=True)
        ids = {n: torch.tensor(v, device=labels.device) for n, v in self.regions.items()}
        return {n: torch.isin(labels, v).to(target.dtype) for n, v in ids.items()}

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        target = target.detach()
        diff = (pred - target).abs()
        out = {}
        for name, mask in self.masks(target).items():
            # normalise by the region's area so small regions (eyes) count as much as large ones;
            # clamp keeps an absent region (e.g. hidden ears) at exactly 0 instead of NaN
            area = mask.sum() * pred.shape[1]
            out[name] = (diff * mask).sum() / area.clamp_min(1.0)
        return out
