"""Statistics of head-pose sequences (generated from speech, or measured on real videos).

Inputs are head rotations (T, 3, 3) (any reference frame: only motion counts) at ``fps`` and,
for the audio correlation, the speech's per-frame RMS energy. Reported per sequence:

* ``std_deg``   — diversity: the std over time of the rotation away from the mean pose (°).
* ``speed``     — mean angular speed (°/s); ``jerk`` — mean |third difference| of the rotation
                  angle vector (°/s³): smoothness, lower = smoother.
* ``energy_corr`` — Pearson correlation of angular speed with audio energy (real talkers move
                  more while speaking loudly).
* ``seed_div``  — across noise draws for the same audio: mean geodesic angle between the samples'
                  poses at the same frame (°) — 0 means the generator ignores its noise.
"""
from __future__ import annotations

import itertools

import numpy as np

from .pose import rotation_angle


def _rotvec(r: np.ndarray) -> np.ndarray:
    """Rotation matrices (T, 3, 3) → axis·angle vectors (T, 3) in degrees (relative to the mean-ish
    first frame is not needed: differences of small motions are what the stats use)."""
    angle = np.radians(rotation_angle(r, np.broadcast_to(np.eye(3), r.shape)))
    axis = np.stack([r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]], 1)
    norm = np.linalg.norm(axis, axis=1, keepdims=True)
    axis = np.where(norm > 1e-12, axis / norm.clip(1e-12), 0.0)
    return np.degrees(angle)[:, None] * axis


def frame_energy(samples: np.ndarray, n_frames: int, fps: float, sample_rate: int = 16000) -> np.ndarray:
    """RMS of the audio samples of each video frame (n_frames,)."""
    edges = (np.arange(n_frames + 1) / fps * sample_rate).round().astype(int)
    return np.array([np.sqrt(np.mean(samples[a:b].astype(np.float64) ** 2)) if b > a else 0.0
                     for a, b in zip(edges[:-1], edges[1:])])


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 3 or a.std() < 1e-12 or b.std() < 1e-12:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def pose_statistics(rotations: np.ndarray, fps: float, energy: np.ndarray | None = None) -> dict[str, float]:
    """Diversity, smoothness and audio correlation of one sequence (see the module docstring)."""
    r = np.asarray(rotations, np.float64)
    rel = np.swapaxes(r[:1], -1, -2) @ r                     # motion since frame 0: small angles, no wrap
    v = _rotvec(rel)
    step = rotation_angle(r[1:], r[:-1]) * fps               # °/s between consecutive frames
    out = {"std_deg": float(np.sqrt(((v - v.mean(0)) ** 2).sum(1).mean())),
           "speed": float(step.mean()) if len(step) else float("nan"),
           "jerk": float(np.linalg.norm(np.diff(v, 3, axis=0), axis=1).mean() * fps ** 3)
           if len(v) > 3 else float("nan")}
    if energy is not None:
        out["energy_corr"] = pearson(step, np.asarray(energy)[1:len(step) + 1])
    return out


def seed_diversity(samples: list[np.ndarray]) -> float:
    """Mean over pairs of samples (each (T, 3, 3)) and frames of the angle between their poses (°)."""
    pairs = list(itertools.combinations(range(len(samples)), 2))
    if not pairs:
        return float("nan")
    n = min(len(s) for s in samples)
    return float(np.mean([rotation_angle(samples[i][:n], samples[j][:n]).mean() for i, j in pairs]))
