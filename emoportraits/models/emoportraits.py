"""EmoPortraits: the stage-1 one-shot head-avatar model, a Hugging Face Hub model.

Data flow (SPEC §2). Source, once per avatar (``encode_source``):
    e_s = identity_encoder(x_s); v_s = appearance_encoder(x_s); θ_s = head_pose(x_s)
    z_s = expression_encoder(x_s, θ_s); W_s→ = warp_to_canonical(warp_embedding(z_s, e_s))
    V^C = canonical_unet( sample( sample(source_volume(v_s), rigid(inv θ_s)), W_s→ ) )
Driver, per frame (``drive``):
    θ_d, z_d from the driver image (or given); W_→d = warp_to_driver(warp_embedding(z_d, e_s))
    image = decoder( project( sample( sample(V^C, W_→d), rigid(θ_d) ) ) )
Images are float tensors (B, 3, S, S) in [0, 1], RGB; θ is (B, 4, 4) (see geometry.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ..config import EmoPortraitsConfig
from .appearance import AppearanceEncoder, IdentityEncoder
from .canonical import CanonicalUNet, SourceVolumeBlocks
from .decoder import Decoder, project
from .geometry import apply_affine, rigid_grid, sample, sample_field, theta_from_raw9
from .hub import HUB_MIXIN_KWARGS, load_pretrained, resolve_name, save_weights
from .motion import ExpressionEncoder, HeadPoseNet
from .tracing import record, scope
from .warping import WarpEmbedding, WarpGenerator

MODEL_CARD = """
---
{{ card_data }}
---

# EMOPortraits (emoportraits)

One-shot head avatar of *EMOPortraits: Emotion-enhanced Multimodal One-shot Head Avatars*
(Drobyshev et al., CVPR 2024, [arXiv:2404.19110]({{ paper_url }})), packaged with
[emoportraits]({{ repo_url }}).

```python
from emoportraits import EmoPortraits
model = EmoPortraits.from_pretrained("{{ model_id | default("path/to/this/folder", true) }}")
avatar = model.encode_source(source)          # (B, 3, S, S) in [0, 1]
frame = model.drive(avatar, driver)           # (B, 3, S, S) in [0, 1]
```

- Architecture preset: {{ preset | default("custom", true) }}, {{ image_size }}² images,
  {{ n_params }} parameters (generator + head-pose network).
- Weights: {{ weights_note | default("trained with emoportraits.", true) }}
"""


@dataclass
class Avatar:
    """Everything that depends only on the source image: computed once, reused for every frame."""
    canonical: torch.Tensor    # V^C (B, C, D, H, W)
    e_s: torch.Tensor          # identity descriptor (B, E, s, s)
    theta: torch.Tensor        # θ_s (B, 4, 4), float32
    z: torch.Tensor            # z_s (B, z_dim)
    # where each canonical voxel was read in the source volume, (B, D, H, W, 3) float32: lets
    # `drive_with_flow` trace an output pixel back to the source photo (None: not traced)
    to_source: torch.Tensor | None = None

    def to(self, device=None, dtype=None) -> "Avatar":
        """Move to a device and/or cast the feature tensors (θ and the source grid stay float32)."""
        return Avatar(self.canonical.to(device, dtype), self.e_s.to(device, dtype),
                      self.theta.to(device), self.z.to(device, dtype),
                      None if self.to_source is None else self.to_source.to(device))

    @property
    def batch_size(self) -> int:
        return self.canonical.shape[0]


class EmoPortraits(
    nn.Module,
    PyTorchModelHubMixin,
    **HUB_MIXIN_KWARGS,
    pipeline_tag="image-to-video",
    tags=["emoportraits", "talking-head", "face-reenactment", "one-shot-avatar"],
    model_card_template=MODEL_CARD,
):
    """The EMOPortraits stage-1 model. See the module docstring for the data flow."""

    def __init__(self, config: EmoPortraitsConfig | None = None):
        super().__init__()
        self.config = config = config or EmoPortraitsConfig()
        self.identity_encoder = IdentityEncoder(config)
        self.appearance_encoder = AppearanceEncoder(config)
        self.expression_encoder = ExpressionEncoder(config)
        self.head_pose_net = HeadPoseNet(config)
        self.warp_embedding = WarpEmbedding(config)
        self.warp_to_canonical = WarpGenerator(config, trace_name="xy_gen")   # W_s→
        self.warp_to_driver = WarpGenerator(config, trace_name="uv_gen")      # W_→d
        self.source_volume = SourceVolumeBlocks(config)
        self.canonical_unet = CanonicalUNet(config)                           # G3D
        self.decoder = Decoder(config)                                        # G2D
        # the head-pose regressor is a frozen, pretrained measuring device (SPEC §3)
        self.head_pose_net.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "EmoPortraits":
        """Like nn.Module.train, but the frozen head-pose network always stays in eval mode
        (its BatchNorm must keep the pretrained running statistics)."""
        super().train(mode)
        self.head_pose_net.eval()
        return self

    # ---- properties ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def generator_parameters(self) -> int:
        """Parameters of everything but the (separately distributed) head-pose network."""
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("head_pose_net."))

    # ---- input checks --------------------------------------------------------------------------
    def _check_image(self, image, name: str) -> None:
        s = self.config.image_size
        if not isinstance(image, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (B, 3, {s}, {s}), got {type(image).__name__}")
        if image.dim() != 4 or image.shape[1] != 3 or tuple(image.shape[2:]) != (s, s):
            raise ValueError(f"{name} must have shape (B, 3, {s}, {s}) (RGB, this model's resolution), "
                             f"got {tuple(image.shape)}; crop/resize it first (the pipeline does this)")
        if not image.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor in [0, 1], got {image.dtype}; "
                             f"for 8-bit images use image.float() / 255")
        if image.dtype != self.dtype:
            raise ValueError(f"{name} has dtype {image.dtype} but the model is {self.dtype}; "
                             f"use {name}.to({self.dtype})")
        if image.device != self.device:
            raise ValueError(f"{name} is on {image.device} but the model is on {self.device}; "
                             f"use {name}.to('{self.device}')")
        lo, hi = torch.aminmax(image.detach().float())
        if not (lo >= -1e-3 and hi <= 1 + 1e-3):   # also catches NaN
            raise ValueError(f"{name} values must lie in [0, 1], got [{lo.item():.3g}, {hi.item():.3g}]")

    def _check_latent(self, t, name: str, trailing: tuple, what: str, batch: int | None) -> torch.Tensor:
        """θ (B, 4, 4) and z (B, z_dim): shape, device, and a batch of 1 or the drivers' batch."""
        if not isinstance(t, torch.Tensor) or t.dim() != len(trailing) + 1 or tuple(t.shape[1:]) != trailing:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a (B, {', '.join(map(str, trailing))}) {what} tensor, got {shape}")
        if t.device != self.device:
            raise ValueError(f"{name} is on {t.device} but the model is on {self.device}")
        if batch is not None and t.shape[0] not in (1, batch):
            raise ValueError(f"{name} has batch {t.shape[0]}, expected 1 or {batch}")
        return t

    def _check_theta(self, theta, batch: int | None, name: str = "theta") -> torch.Tensor:
        return self._check_latent(theta, name, (4, 4), "pose matrix", batch).float()

    def _check_z(self, z, batch: int | None) -> torch.Tensor:
        return self._check_latent(z, "z", (self.config.z_dim,), "expression latent", batch).to(self.dtype)

    # ---- motion descriptors ----------------------------------------------------------------------
    def head_pose(self, image: torch.Tensor) -> torch.Tensor:
        """θ (B, 4, 4) float32 of a face image (B, 3, S, S) in [0, 1]."""
        self._check_image(image, "image")
        return self.head_pose_net(image)

    def head_pose_raw(self, image: torch.Tensor) -> torch.Tensor:
        """The head-pose network's 9 numbers (B, 9) float32 of a face image: scale (3), yaw/pitch/roll (3)
        and translation (3), what θ is built from (``geometry.theta_from_raw9``). Smoothing a pose over
        time works on these (`motion`'s ``pose_filter``); ``geometry.pose9_from_raw9`` gives the 9-number
        pose of the pose generator."""
        self._check_image(image, "image")
        return self.head_pose_net.raw(image).float()

    def expression(self, image: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Expression latent z (B, z_dim) of a face image; θ is predicted when not given."""
        self._check_image(image, "image")
        theta = self.head_pose_net(image) if theta is None else self._check_theta(theta, image.shape[0], "theta")
        return self.expression_encoder(image, theta)

    def motion(self, image: torch.Tensor, *, pose_filter: Callable[[torch.Tensor], torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """A driver image's (θ (B, 4, 4) float32, z (B, z_dim)). ``pose_filter`` maps the head-pose numbers
        (B, 9) (`head_pose_raw`) before θ is built from them (e.g. temporal smoothing over a video's
        frames); z is read from the image aligned with that θ."""
        raw = self.head_pose_raw(image)
        if pose_filter is not None:
            raw = pose_filter(raw).float()
        theta = theta_from_raw9(raw)
        return theta, self.expression_encoder(image, theta)

    # ---- source and driver ---------------------------------------------------------------------
    def encode_source(self, image: torch.Tensor, theta: torch.Tensor | None = None,
                      mask: torch.Tensor | None = None) -> Avatar:
        """Everything the source contributes: canonical volume V^C, e_s, θ_s and z_s.

        ``mask`` (B, 1, S, S) in [0, 1] multiplies the source first (the released model was trained
        on sources with the background removed); ``theta`` overrides the predicted source pose.
        """
        self._check_image(image, "source image")
        if mask is not None:
            image = image * mask.to(image.dtype)
        if theta is None:
            with scope("hpr.src"):
                theta = self.head_pose_net(image)
        else:
            theta = self._check_theta(theta, image.shape[0], "theta")
        with scope("src"):
            record("image_in", image)
            e_s = self.identity_encoder(image)
            v_s = self.appearance_encoder(image)
            z_s = self.expression_encoder(image, theta)
            w_xy = self.warp_to_canonical(self.warp_embedding(z_s, e_s))
            rot = record("rot_grid", rigid_grid(torch.linalg.inv(theta), self.config.volume_shape))
            v = record("vol_source_out", self.source_volume(v_s))
            v = record("after_rot_warp", sample(v, rot))
            v = record("after_xy_warp", sample(v, w_xy))
            canonical = record("canonical", self.canonical_unet(v))
        # canonical voxel c read v at w_xy(c), which read the source volume at inv(θ_s)·w_xy(c)
        to_source = apply_affine(torch.linalg.inv(theta), w_xy.float())
        return Avatar(canonical=canonical, e_s=e_s, theta=theta, z=z_s, to_source=to_source)

    def drive(self, avatar: Avatar, driver_image: torch.Tensor | None = None, *,
              z: torch.Tensor | None = None, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Render the avatar with a driver's expression z and head pose θ → image (B, 3, S, S).

        z and θ come from ``driver_image`` unless given; without a driver image both are required
        (speech mode gives z, pose generation gives θ). A batch-1 avatar is broadcast over a
        batch of drivers.
        """
        return self._drive(avatar, driver_image, z, theta)[0]

    def drive_with_flow(self, avatar: Avatar, driver_image: torch.Tensor | None = None, *,
                        z: torch.Tensor | None = None, theta: torch.Tensor | None = None, render: bool = True
                        ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """`drive`, plus where each output pixel came from in the source image.

        Returns (image, source_xy); image is None with ``render=False``, which skips the decoder G2D
        (most of a frame's cost) when only the map is wanted. ``source_xy`` (B, h, w, 2) float32 has
        one point per voxel column of the volume (h × w), in grid_sample coordinates (x, y) of the
        source crop. It follows the model's own warps back — driver voxel → θ_d → W_→d → canonical →
        W_s→ → inv(θ_s) → source volume — and averages the depth slices weighted by how much content
        the driver volume has there (the head, not empty space).
        """
        image, v, grid = self._drive(avatar, driver_image, z, theta, trace=True, render=render)
        if avatar.to_source is None:
            raise ValueError("this avatar has no source grid; encode it with encode_source")
        src = avatar.to_source.expand(grid.shape[0], *avatar.to_source.shape[1:])
        xyz = sample_field(src, grid)                                        # (B, D, H, W, 3)
        weight = v.float().norm(dim=1)                                       # (B, D, H, W)
        weight = weight / weight.sum(1, keepdim=True).clamp_min(1e-8)
        return image, (xyz[..., :2] * weight[..., None]).sum(1)

    def _drive(self, avatar: Avatar, driver_image, z, theta, trace: bool = False, render: bool = True):
        batch = None
        if driver_image is not None:
            self._check_image(driver_image, "driver image")
            batch = driver_image.shape[0]
        elif z is None or theta is None:
            raise ValueError("drive() needs a driver image, or both z and theta")
        if theta is not None:
            theta = self._check_theta(theta, batch, "theta")
        if z is not None:
            z = self._check_z(z, batch)
        if theta is None:
            with scope("hpr.drv"):
                theta = self.head_pose_net(driver_image)
        batch = max(batch or 1, theta.shape[0], z.shape[0] if z is not None else 1, avatar.batch_size)
        with scope("drv"):
            if z is None:
                z = self.expression_encoder(driver_image, theta)
            record("z", z)
            e_s = avatar.e_s.expand(batch, *avatar.e_s.shape[1:])
            z, theta = z.expand(batch, -1), theta.expand(batch, 4, 4)
            w_uv = self.warp_to_driver(self.warp_embedding(z, e_s))
            rot = record("rot_grid", rigid_grid(theta, self.config.volume_shape))
            canonical = avatar.canonical.expand(batch, *avatar.canonical.shape[1:])
            v = record("after_uv_warp", sample(canonical, w_uv))
            v = record("after_rot_warp", sample(v, rot))
            image = self.decoder(record("decoder_in", project(v))) if render else None
        if not trace:
            return (image,)
        # driver voxel p read the uv-warped volume at rot(p), which read V^C at w_uv(rot(p))
        return image, v, sample_field(w_uv.float(), rot)

    def forward(self, source: torch.Tensor, driver: torch.Tensor) -> torch.Tensor:
        """Source image + driver image → image with the source's identity and the driver's motion."""
        return self.drive(self.encode_source(source), driver)

    # ---- Hub integration ---------------------------------------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        save_weights(self, save_directory)

    def generate_model_card(self, *args, **kwargs):
        info = self.config.extra
        kwargs.setdefault("preset", info.get("preset"))
        kwargs.setdefault("weights_note", info.get("weights_note"))
        kwargs.setdefault("image_size", self.config.image_size)
        kwargs.setdefault("n_params", f"{sum(p.numel() for p in self.parameters()):,}")
        card = super().generate_model_card(*args, **kwargs)
        if info.get("license"):
            card.data.license = info["license"]
        return card

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> "EmoPortraits":
        """A folder, a Hub repo, or ``"official"``: the authors' released model, downloaded and converted
        once by ``emoportraits download`` (see ``emoportraits.bundle.resolve_model``)."""
        return super().from_pretrained(resolve_name(pretrained_model_name_or_path), *args, **kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, **kwargs):
        return load_pretrained(cls, EmoPortraitsConfig.from_dict, model_id=model_id, **kwargs)
