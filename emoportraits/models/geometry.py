"""Every geometric convention of the model, defined once.

* θ is the authors' 4×4 pose matrix S·R·T (batch shape (B, 4, 4)). It maps a point of the posed
  head, in the image's normalised coordinates (x, y, z, 1), to the canonical (frontal) head, so
  inv(θ) places the canonical head in the image. R = Rz(yaw)·Ry(pitch)·Rx(roll), angles in
  radians, each clamped to [-π/2, π] as the released head-pose code does.
* Grids follow ``F.grid_sample``: coordinates in [-1, 1], last-dim order (x, y[, z]) with x along
  W, y along H, z along D, align_corners=False, zero padding, (tri)linear interpolation.
* Identity grids use float32 ``torch.linspace(-1, 1, n)`` values, exactly as the released code.
* Geometry is computed in float32 whatever the model dtype (matrix inverses have no half kernels,
  and the grids need the precision); the resulting grid is cast to the volume's dtype to sample.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ANGLE_MIN, ANGLE_MAX = -math.pi / 2, math.pi


def rotation_matrix(rotation: torch.Tensor) -> torch.Tensor:
    """(…, 3) yaw, pitch, roll in radians → (…, 3, 3) R = Rz(yaw)·Ry(pitch)·Rx(roll)."""
    yaw, pitch, roll = rotation.clamp(ANGLE_MIN, ANGLE_MAX).unbind(-1)
    cy, sy, cp, sp, cr, sr = yaw.cos(), yaw.sin(), pitch.cos(), pitch.sin(), roll.cos(), roll.sin()
    rows = [
        cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr,
        sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr,
        -sp, cp * sr, cp * cr,
    ]
    return torch.stack(rows, dim=-1).unflatten(-1, (3, 3))


def pose_to_theta(scale: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """(B, 3) scale, (B, 3) yaw/pitch/roll, (B, 3) translation → θ = S·R·T, (B, 4, 4) float32."""
    scale, rotation, translation = (t.float() for t in (scale, rotation, translation))
    b = scale.shape[0]
    eye = torch.eye(4, device=scale.device).expand(b, 4, 4)
    s = torch.diag_embed(torch.cat([scale, scale.new_ones(b, 1)], dim=1))
    r = eye.clone()
    r[:, :3, :3] = rotation_matrix(rotation)
    t = eye.clone()
    t[:, :3, 3] = translation
    return s @ r @ t


def theta_from_raw9(raw9: torch.Tensor) -> torch.Tensor:
    """The head-pose network's 9 outputs (scale 3, yaw/pitch/roll 3, translation 3) → θ."""
    raw9 = raw9.float()
    return pose_to_theta(raw9[:, 0:3], raw9[:, 3:6], raw9[:, 6:9])


def _lin(n: int, device) -> torch.Tensor:
    return torch.linspace(-1, 1, n, dtype=torch.float32, device=device)


def identity_grid_3d(shape: tuple[int, int, int], device=None) -> torch.Tensor:
    """(D, H, W) → (1, D, H, W, 3) identity sampling grid, last dim (x, y, z)."""
    d, h, w = shape
    z, y, x = torch.meshgrid(_lin(d, device), _lin(h, device), _lin(w, device), indexing="ij")
    return torch.stack([x, y, z], dim=-1).unsqueeze(0)


def identity_grid_2d(size: int, device=None) -> torch.Tensor:
    """size → (1, size, size, 2) identity sampling grid, last dim (x, y)."""
    y, x = torch.meshgrid(_lin(size, device), _lin(size, device), indexing="ij")
    return torch.stack([x, y], dim=-1).unsqueeze(0)


def _homogeneous(grid: torch.Tensor) -> torch.Tensor:
    return torch.cat([grid, torch.ones_like(grid[..., :1])], dim=-1)


def rigid_grid(theta: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Sampling grid (B, D, H, W, 3) that moves a volume by the rigid/similarity transform.

    Each output voxel p samples the input at θ·p. Driver side: θ_d, so driver-posed voxels read
    the canonical volume. Source side: inv(θ_s), so canonical voxels read the source volume where
    the posed head has them.
    """
    theta = theta.float()
    g = _homogeneous(identity_grid_3d(shape, theta.device)).flatten(1, 3)     # (1, N, 4)
    out = torch.matmul(g, theta[:, :3, :].transpose(1, 2))                     # (B, N, 3)
    return out.unflatten(1, shape)


def expression_crop_grid(theta: torch.Tensor, size: int, zoom: float = 0.5) -> torch.Tensor:
    """Grid (B, size, size, 2) cropping the face aligned with pose θ for E_motion.

    Uses the 2-D part (rows/columns x, y, translation) of inv(θ) — canonical → image — with a
    ``zoom`` on x and y: the crop follows the head's in-plane position, scale and roll.
    """
    inv = torch.linalg.inv(theta.float())
    idx = torch.tensor([0, 1, 3], device=theta.device)
    a = inv.index_select(1, idx).index_select(2, idx)
    a = a @ torch.diag(torch.tensor([zoom, zoom, 1.0], device=theta.device))
    g = _homogeneous(identity_grid_2d(size, theta.device)).flatten(1, 2)       # (1, N, 3)
    out = torch.matmul(g, a[:, :2, :].transpose(1, 2))                         # (B, N, 2)
    return out.unflatten(1, (size, size))


def sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """grid_sample with the model's conventions (bilinear/trilinear, zeros, align_corners=False)."""
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def rotation_6d_to_matrix(x6: torch.Tensor) -> torch.Tensor:
    """(…, 6) first two columns of R → (…, 3, 3) via Gram–Schmidt (b1, b2, b1 × b2 as columns)."""
    a1, a2 = x6[..., :3], x6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(r: torch.Tensor) -> torch.Tensor:
    """(…, 3, 3) → (…, 6): the first two columns, concatenated."""
    return torch.cat([r[..., :, 0], r[..., :, 1]], dim=-1)
