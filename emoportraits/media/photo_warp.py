"""Render with the source photo's own pixels, moved by the model's warp fields.

A low-resolution model (the bundled 64² demo) paints a face a person does not recognise, yet its
warps — head pose θ and the expression warp from z — move the right parts the right way. Here the
model only says *where each output pixel comes from* (`EmoPortraits.drive_with_flow`), and the
photo's crop, at its own resolution, is resampled along that map: the person stays the person, at
full detail, and moves as the model moves the head. What a warp cannot make (a mouth opening onto
teeth, closing eyes) the model's render adds as a residual: ``render_t − warp(render_0)`` is the
change the network draws beyond the motion, at its own (low) resolution, enlarged smoothly.

The map is taken relative to the source's own reconstruction (``source_xy − reference_xy``), so an
unchanged pose and expression give exactly the photo, whatever the model's reconstruction error.
The displacement is faded out beyond the portrait (its mask, widened by 6 % of the crop) and
towards the crop's edges: the background near the head stretches a little, as a rubber sheet,
and everything further out is the photo itself. So the whole crop can be pasted back: there is no
mask edge where the old head would show through as a ghost outline, and no seam at the crop box.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PhotoWarp", "warp_mask"]


def _centres(n: int, device=None) -> torch.Tensor:
    """grid_sample (align_corners=False) coordinates of n pixel centres."""
    return (torch.arange(n, dtype=torch.float32, device=device) * 2 + 1) / n - 1


def _as_float(image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(image)).float()
    return (x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]) / (255.0 if image.dtype == np.uint8 else 1.0)


def _upsampled_grid(delta_xy: torch.Tensor, size: int, reach: torch.Tensor | None = None) -> torch.Tensor:
    """Identity grid (1, S, S, 2) at pixel centres plus a (1, h, w, 2) displacement enlarged to S²
    (times ``reach`` (1, 1, S, S) when given); bilinear: the map is smooth at the volume's
    resolution and must stay monotone between voxels."""
    delta = F.interpolate(delta_xy.float().cpu().permute(0, 3, 1, 2), size=(size, size), mode="bilinear",
                          align_corners=False)
    if reach is not None:
        delta = delta * reach
    return _identity(size) + delta.permute(0, 2, 3, 1)


@functools.lru_cache(maxsize=8)
def _identity(size: int) -> torch.Tensor:
    """The identity grid (1, S, S, 2) at pixel centres (made once per size: it is every frame's base)."""
    c = _centres(size)
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x, y], -1)[None]


def _reach(mask: torch.Tensor, grow: float = 0.06, work: int = 128) -> torch.Tensor:
    """Where the photo may move, (1, 1, S, S) in [0, 1]: the mask widened by ``grow`` of the side and
    softened, times a raised-cosine fade to 0 over the outer 8 % of the crop. Computed at ``work``²
    (a smooth field needs no more) and enlarged."""
    size = mask.shape[-1]
    small = F.interpolate(mask, size=(work, work), mode="area")
    r = max(1, round(grow * work))
    small = _blur(F.max_pool2d(small, 2 * r + 1, stride=1, padding=r), r / 2)
    big = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
    i = torch.arange(size, dtype=torch.float32)
    edge = 0.5 - 0.5 * torch.cos(torch.pi * (torch.minimum(i, size - 1 - i) / (0.08 * size)).clamp(0, 1))
    return big * edge[None, None, :, None] * edge[None, None, None, :]      # exactly 0 on the crop's rim


def _despill(image: torch.Tensor) -> torch.Tensor:
    """Green capped at max(red, blue): a render's green training background must not tint the face
    where the two meet (the classic despill, as `media.crop.green_key` does for the network render)."""
    r, g, b = image.unbind(1)
    return torch.stack([r, torch.minimum(g, torch.maximum(r, b)), b], 1)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (1, C, H, W), edges replicated."""
    r = max(1, int(np.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def warp_mask(mask: np.ndarray, delta_xy: torch.Tensor) -> np.ndarray:
    """A float (S, S) mask moved by the displacement ``delta_xy`` (1, h, w, 2) (source_xy − reference)."""
    grid = _upsampled_grid(delta_xy, mask.shape[0])
    out = F.grid_sample(_as_float(np.asarray(mask, np.float32)), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out[0, 0].clamp(0, 1).numpy()


class PhotoWarp:
    """Per-source state: the photo's crop and mask at output resolution and the reference map.

    ``crop``: uint8 (S, S, 3) — the source crop at the resolution the result is pasted at;
    ``mask``: float (S, S) — what to animate (portrait mask ∪ face hull);
    ``reference_xy``: (1, h, w, 2) — `drive_with_flow`'s map for the source's own θ_s and z_s;
    ``reference_render``: float (1, 3, s, s) in [0, 1] — the model's render for θ_s, z_s
    (None: no residual); ``face``: float (s, s) — where the residual may act (the face region at
    the render's resolution: the render's hair edge and background are not the person's);
    ``residual``: its weight (0 = photo only).
    """

    def __init__(self, crop: np.ndarray, mask: np.ndarray, reference_xy: torch.Tensor,
                 reference_render: torch.Tensor | None = None, face: np.ndarray | None = None,
                 residual: float = 1.0):
        self.size = int(crop.shape[0])
        self.mask = _as_float(np.asarray(mask, np.float32))
        # photo and mask as one 4-channel image: one resampling pass moves both (the mask only
        # when asked for: pasted back, the whole crop is used)
        self.photo = torch.cat([_as_float(crop), self.mask], 1)
        self.rgb = self.photo[:, :3].contiguous()
        self.reach = _reach(self.mask)
        self.reference_xy = reference_xy.float().cpu()
        self.residual = float(residual)
        self.reference_render = None
        if reference_render is not None and face is not None and self.residual > 0:
            self.reference_render = reference_render.float().cpu()
            # soft edge: the residual fades out over ~2 render pixels instead of stopping at the hull
            self.face = _blur(_as_float(np.asarray(face, np.float32)), 1.5)

    def _enlarge(self, image: torch.Tensor) -> torch.Tensor:
        """Smooth enlargement to the output size (bicubic; the render's pixels must not show)."""
        return F.interpolate(image, size=(self.size, self.size), mode="bicubic", align_corners=False).clamp_(0, 1)

    def _change(self, render: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """What the network draws beyond the warp, at its own resolution: render − warped reference,
        inside the (warped) face, low-passed so that the decoder's block pattern does not show."""
        grid = _upsampled_grid(delta, render.shape[-1])
        face = self.warp(self.face, grid)
        change = _despill(render) - _despill(self.warp(self.reference_render, grid))
        return _blur(change, 1.0) * face

    def warp(self, image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        # border padding: a pixel pulled from beyond the crop repeats its edge instead of turning black
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def render(self, source_xy: torch.Tensor, render: torch.Tensor | None = None, with_mask: bool = True
               ) -> tuple[np.ndarray, np.ndarray | None]:
        """One frame → (uint8 (S, S, 3) image of the whole crop, float (S, S) portrait mask, moved,
        or None without ``with_mask``).

        ``render``: the model's render of this frame (1, 3, s, s) in [0, 1], for the residual.
        The image is the photo outside the portrait's reach, so it can be pasted whole; the mask
        is for putting the portrait on another background.
        """
        delta = source_xy.float().cpu() - self.reference_xy
        grid = _upsampled_grid(delta, self.size, self.reach)
        moved = self.warp(self.photo if with_mask else self.rgb, grid)
        image, mask = moved[:, :3], (moved[:, 3:] if with_mask else None)
        if self.reference_render is not None and render is not None:
            image = image + self.residual * self._enlarge(self._change(render.float().cpu(), delta))
        out = image[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
        return out, None if mask is None else mask[0, 0].clamp(0, 1).numpy()
