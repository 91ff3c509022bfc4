"""What an animation is made of besides the model: how motion is transferred and the result composed
(`ReenactOptions`), the portrait ready to animate (`PreparedSource`), and the checks on the frames that
come out (`MotionCheck`: the face must have moved; `even_sides` for H.264). ``pipelines`` puts them to work.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

from .errors import MediaError
from .media.crop import pixel_box
from .media.photo_warp import PhotoWarp
from .models import Avatar

Background = Union[str, tuple]     # "original" (paste back), "transparent", or an RGB tuple


@dataclass
class ReenactOptions:
    """How driver motion is transferred and how the result is composed."""
    relative: bool = True              # apply the driver's change from its first frame to the source
    expression_scale: float = 1.0      # multiplies the transferred expression change
    paste_back: bool = True            # composite into the original photo; else onto `background`
    background: Background = (255, 255, 255)
    smooth: float = 0.5                # temporal smoothing of crop box and head pose, 0 = off
    fixed_crop: bool = False           # one crop box for the whole video (static camera)
    face_index: int = 0                # which face of the photo (0 = largest)
    crop_scale: float = 2.2            # crop side / face-box side, as the authors cropped
    feather: int = 15                  # paste-back mask feathering, in output pixels
    max_frames: int | None = None
    # "photo": move the photo's own pixels along the model's warps and add the render's change
    # (`media.photo_warp`); "network": the model's render as is; "auto": photo below 256² models,
    # whose renders are too coarse to be the person
    render: str = "auto"
    residual: float = 1.0              # photo render: weight of the model's change beyond the warp
    # a video whose face changes by less than this (mean /255, largest over the frames) is refused:
    # it would look like the photo (0 = write whatever comes out)
    min_motion: float = 0.5

    def render_mode(self, image_size: int) -> str:
        return ("photo" if image_size < 256 else "network") if self.render == "auto" else self.render

    def validate(self) -> None:
        if not 0 <= self.smooth < 1:
            raise ValueError(f"smooth must be in [0, 1), got {self.smooth}")
        if self.expression_scale < 0:
            raise ValueError(f"expression_scale must be >= 0, got {self.expression_scale}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.face_index < 0:
            raise ValueError(f"face_index must be >= 0, got {self.face_index}")
        if self.render not in ("auto", "photo", "network"):
            raise ValueError(f"render must be 'auto', 'photo' or 'network', got {self.render!r}")
        if self.min_motion < 0:
            raise ValueError(f"min_motion must be >= 0, got {self.min_motion}")
        if not 0 <= self.residual <= 4:
            raise ValueError(f"residual must be in [0, 4], got {self.residual}")

    @classmethod
    def resolve(cls, options: "ReenactOptions | None", overrides: dict, caller: str) -> "ReenactOptions":
        """``options`` (default: the defaults) with keyword ``overrides`` of ``caller`` applied, validated."""
        opts = options or cls()
        for key, value in overrides.items():
            if not hasattr(opts, key):
                raise TypeError(f"{caller}() got an unknown option {key!r}")
            setattr(opts, key, value)
        opts.validate()
        return opts


@dataclass
class PreparedSource:
    """A portrait ready to animate: the photo, its crop box, the encoded avatar."""
    image: np.ndarray          # the original photo, uint8 H×W×3
    box: np.ndarray            # square crop box [x0, y0, side] in photo pixels
    crop: np.ndarray           # the model-resolution crop, uint8
    mask: np.ndarray           # what is animated: portrait mask ∪ face region of the crop, float [0, 1]
    avatar: Avatar
    reference_xy: torch.Tensor | None = None   # `drive_with_flow`'s map for the source's own θ_s, z_s
    photo: "PhotoWarp | None" = None           # the photo render's state (render="photo")
    landmarks: np.ndarray | None = None   # (468, 3) face mesh in crop coordinates, when the detector gave one


class MotionCheck:
    """Refuses a video whose face never moved: a result equal to the photo is a failure that must
    not be reported as success (e.g. a face the compositing mask missed).

    Tracks the largest mean change from the first frame inside the portrait's face box (sampled
    every 4th pixel) of the frames before encoding (no compression noise: an untouched face is exactly
    0); `finish` raises a MediaError when it stayed below ``threshold`` (in /255) over more than one frame.
    """

    def __init__(self, src: PreparedSource, name: str, threshold: float = 0.5):
        # 0.5/255: a change a viewer cannot see in a video, but far above rounding (0 when untouched)
        x0, y0, side = pixel_box(src.box)
        h, w = src.image.shape[:2]
        # the middle half of the crop box: the face, not the background the paste keeps
        q = side // 4
        self.region = (slice(max(0, y0 + q), min(h, y0 + side - q), 4), slice(max(0, x0 + q), min(w, x0 + side - q), 4))
        self.name, self.threshold = name, threshold
        self.first, self.largest, self.frames = None, 0.0, 0

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        patch = frame[self.region][..., :3].astype(np.float32)
        if self.first is None:
            self.first = patch
        else:
            self.largest = max(self.largest, float(np.abs(patch - self.first).mean()))
        self.frames += 1
        return frame

    def finish(self, hint: str) -> None:
        if self.threshold > 0 and self.frames > 1 and self.largest < self.threshold:
            raise MediaError(f"{self.name}: the portrait was not animated (its face changed by at most "
                             f"{self.largest:.2f}/255 over {self.frames} frames; {hint}); nothing was written")


def even_sides(image: np.ndarray) -> np.ndarray:
    """H.264 yuv420p needs even sides: drop a last odd row/column."""
    h, w = image.shape[:2]
    return image[: h - h % 2, : w - w % 2]
