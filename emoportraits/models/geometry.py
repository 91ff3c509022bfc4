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


def apply_affine(theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """θ (B, 4, 4) applied to points (B, …, 3): θ[:3]·(p, 1), the same map `rigid_grid` samples with."""
    b = points.shape[0]
    flat = _homogeneous(points.float()).reshape(b, -1, 4)
    return torch.matmul(flat, theta.float()[:, :3, :].transpose(1, 2)).reshape(points.shape)


def sample_field(field: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """A coordinate field (B, D, H, W, 3) read at ``grid`` (B, D', H', W', 3), trilinear, with the
    conventions of `sample`, but the border value outside (a coordinate field has no 'empty')."""
    out = F.grid_sample(field.permute(0, 4, 1, 2, 3), grid.to(field.dtype), mode="bilinear",
                        padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 4, 1)


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


# ---- head-pose sequences (SPEC §5) ------------------------------------------------------------------
#
# A pose sequence X is (…, T, 9): the 6D rotation (first two columns of R) and a translation τ, the
# rigid part R·T(τ) of θ = S·R·T in the convention above (raw9 without its scale). The pose generator
# predicts X relative to a reference frame (the clip's first): X_t is the motion inv(P_0)·P_t, where
# P = R·T(τ) is a frame's rigid pose, so the reference frame itself is (identity, 0). At inference the
# motion is composed onto the source's own pose: θ_t = θ_s · M_t, exactly as the relative reenactment
# mode composes a driver's motion (``EmoPortraitsPipeline.transfer``).

IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def matrix_to_angles(r: torch.Tensor) -> torch.Tensor:
    """(…, 3, 3) rotation → (…, 3) yaw, pitch, roll (radians) with R = Rz(yaw)·Ry(pitch)·Rx(roll).

    Torch twin of ``data.pose_labels.rotation_to_angles``: the principal solution (|pitch| ≤ π/2),
    unless only the other one, (yaw + π, π − pitch, roll + π), lies in the range [−π/2, π] that
    `rotation_matrix` clamps to; at gimbal lock yaw = 0.
    """
    r = r.float()
    cos_p = torch.hypot(r[..., 0, 0], r[..., 1, 0])
    pitch = torch.atan2(-r[..., 2, 0], cos_p)
    locked = cos_p < 1e-6
    yaw = torch.where(locked, torch.zeros_like(pitch), torch.atan2(r[..., 1, 0], r[..., 0, 0]))
    roll = torch.where(locked, torch.atan2(torch.sign(-r[..., 2, 0]) * r[..., 0, 1], r[..., 1, 1]),
                       torch.atan2(r[..., 2, 1], r[..., 2, 2]))
    principal = torch.stack([yaw, pitch, roll], -1)
    other = torch.stack([yaw + math.pi, math.pi - pitch, roll + math.pi], -1)
    other = math.pi - torch.remainder(math.pi - other, 2 * math.pi)         # wrap into (−π, π]

    def ok(a):
        return ((a >= ANGLE_MIN - 1e-6) & (a <= ANGLE_MAX + 1e-6)).all(-1)

    use_other = ~ok(principal) & ok(other)
    return torch.where(use_other[..., None], other, principal)


def pose9_to_rigid(x9: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(…, 9) pose → (R (…, 3, 3) via Gram–Schmidt, τ (…, 3))."""
    return rotation_6d_to_matrix(x9[..., :6]), x9[..., 6:9]


def rigid_to_pose9(r: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """R (…, 3, 3), τ (…, 3) → (…, 9) pose."""
    return torch.cat([matrix_to_rotation_6d(r), tau], dim=-1)


def project_pose9(x9: torch.Tensor) -> torch.Tensor:
    """Any (…, 9) → the same pose with an exactly orthonormal 6D part (Gram–Schmidt, then back):
    what a critic compares with real poses, whose 6D part is orthonormal by construction."""
    return rigid_to_pose9(*pose9_to_rigid(x9))


def pose9_from_raw9(raw9: torch.Tensor) -> torch.Tensor:
    """(…, 9) raw9 head-pose labels (scale 3, yaw/pitch/roll, τ) → (…, 9) pose (the scale is dropped)."""
    raw9 = raw9.float()
    return rigid_to_pose9(rotation_matrix(raw9[..., 3:6]), raw9[..., 6:9])


def pose9_to_raw9(x9: torch.Tensor, scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    """(…, 9) pose → (…, 9) raw9 with isotropic ``scale`` (a number or (…,) tensor); angles by
    `matrix_to_angles`, so ``theta_from_raw9`` of the result equals ``pose9_to_theta`` (in range)."""
    r, tau = pose9_to_rigid(x9.float())
    s = torch.as_tensor(scale, dtype=tau.dtype, device=tau.device).expand(tau.shape[:-1])[..., None]
    return torch.cat([s.expand(*tau.shape[:-1], 3), matrix_to_angles(r), tau], dim=-1)


def pose9_to_matrix(x9: torch.Tensor) -> torch.Tensor:
    """(…, 9) pose → (…, 4, 4) rigid matrix P = R·T(τ) = [[R, R·τ], [0, 1]]."""
    r, tau = pose9_to_rigid(x9.float())
    m = torch.zeros(*x9.shape[:-1], 4, 4, dtype=r.dtype, device=r.device)
    m[..., :3, :3] = r
    m[..., :3, 3] = (r @ tau[..., None])[..., 0]
    m[..., 3, 3] = 1.0
    return m


def matrix_to_pose9(m: torch.Tensor) -> torch.Tensor:
    """(…, 4, 4) rigid matrix [[R, t], [0, 1]] → (…, 9) pose with τ = Rᵀ·t (inverse of `pose9_to_matrix`)."""
    r, t = m[..., :3, :3], m[..., :3, 3]
    return rigid_to_pose9(r, (r.transpose(-1, -2) @ t[..., None])[..., 0])


def relative_pose9(x9: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """(…, T, 9) poses → the motion since ``reference`` ((…, 9); default: the first frame),
    inv(P_ref)·P_t, as (…, T, 9): the reference frame itself becomes (identity, 0)."""
    reference = x9[..., 0, :] if reference is None else reference
    p_ref = pose9_to_matrix(reference)[..., None, :, :]
    return matrix_to_pose9(torch.linalg.inv(p_ref) @ pose9_to_matrix(x9))


def pose9_to_theta(x9: torch.Tensor, scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    """(…, 9) pose → θ = S·R·T(τ), (…, 4, 4) float32, with isotropic ``scale`` (the raw9 scale)."""
    m = pose9_to_matrix(x9)
    s = torch.as_tensor(scale, dtype=m.dtype, device=m.device).expand(x9.shape[:-1])
    return torch.cat([m[..., :3, :] * s[..., None, None], m[..., 3:, :]], dim=-2)


def apply_motion(theta_source: torch.Tensor, motion9: torch.Tensor) -> torch.Tensor:
    """The source's pose θ_s (B, 4, 4) moved by pose-sequence motion (B, T, 9) or (T, 9):
    θ_t = θ_s · M_t, (B, T, 4, 4) — the relative reenactment rule θ_s · inv(θ_d0) · θ_d with the
    motion already relative to its first frame."""
    if motion9.ndim == 2:
        motion9 = motion9[None]
    return theta_source.float()[:, None] @ pose9_to_matrix(motion9.to(theta_source.device))
