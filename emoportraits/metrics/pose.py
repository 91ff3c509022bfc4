"""Head-pose errors from θ (B, 4, 4) = S·R·T (see `emoportraits.models.geometry.pose_to_theta`), as
predicted by the main model's head-pose network (`EmoPortraits.head_pose`)."""
from __future__ import annotations

import numpy as np
import torch


def rotation_from_theta(theta) -> np.ndarray:
    """The rotation R (B, 3, 3) of θ: θ[:3, :3] = diag(s)·R, so the rows of R are its rows normalised;
    an SVD then snaps the result onto SO(3) (numerical noise, negative scales)."""
    m = torch.as_tensor(theta).double()[..., :3, :3].cpu().numpy()
    m = m / np.linalg.norm(m, axis=-1, keepdims=True).clip(1e-12)
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    u[..., :, -1] *= d[..., None]           # a reflection is not a rotation: flip the last axis
    return u @ vt


def translation_from_theta(theta) -> np.ndarray:
    """T's translation t (B, 3) of θ = S·R·T: θ[:3, 3] = diag(s)·R·t."""
    th = torch.as_tensor(theta).double().cpu().numpy()
    return np.linalg.solve(th[..., :3, :3], th[..., :3, 3:])[..., 0]


def rotation_angle(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Geodesic angle in degrees between rotations (B, 3, 3): arccos((tr(R1ᵀR2) − 1) / 2)."""
    tr = np.einsum("...ij,...ij->...", r1, r2)
    return np.degrees(np.arccos(np.clip((tr - 1) / 2, -1.0, 1.0)))


def relative_rotations(rotations: np.ndarray) -> np.ndarray:
    """Motion since the first frame, R_0ᵀ·R_t (T, 3, 3): what relative reenactment transfers."""
    return np.swapaxes(rotations[:1], -1, -2) @ rotations


def pose_errors(theta_pred, theta_target, relative: bool = False) -> dict[str, np.ndarray]:
    """Per frame: ``rotation_deg`` between the two head rotations and ``translation`` (L2 of t).
    ``relative``: compare the motion since the first frame of each sequence instead (cross-reenactment
    moves the source's own head by the driver's motion, so absolute poses differ by design)."""
    rp, rt = rotation_from_theta(theta_pred), rotation_from_theta(theta_target)
    tp, tt = translation_from_theta(theta_pred), translation_from_theta(theta_target)
    if relative:
        rp, rt = relative_rotations(rp), relative_rotations(rt)
        tp, tt = tp - tp[:1], tt - tt[:1]
    return {"rotation_deg": rotation_angle(rp, rt), "translation": np.linalg.norm(tp - tt, axis=-1)}


@torch.inference_mode()
def head_poses(model, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """θ (N, 4, 4) of face crops (N, 3, S, S) in [0, 1] by ``model.head_pose`` (an EmoPortraits)."""
    out = [model.head_pose(images[i:i + batch_size].to(model.device, model.dtype)).float().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)
