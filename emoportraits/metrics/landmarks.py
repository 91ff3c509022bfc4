"""Landmark-based expression and motion errors with the MediaPipe face mesh we ship (468 points).

* AKD — average keypoint distance between two images' 2-D landmarks, in pixels of a 256² crop.
* FP / FV — face landmark position / velocity error; MP / MV — the same on the 40 lip points.
  Both sequences are first *frontalised*: every frame's 3-D mesh is fitted (similarity Procrustes,
  Umeyama 1991; fitted on all points but the lips) onto the canonical template
  `weights/face_template.npy`, which removes head pose and face size, so only the expression (and
  its motion) is compared. Units: % of the template's outer-eye-corner distance (IOD), so the
  numbers do not depend on image resolution.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..media.faces import WEIGHTS_DIR, Face, FaceDetector

# MediaPipe face mesh lip contours (outer + inner, FACEMESH_LIPS), 40 points
MOUTH = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409,
         78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415)
EYE_CORNERS = (33, 263)        # outer eye corners (image left, image right)


@lru_cache(maxsize=1)
def face_template() -> np.ndarray:
    t = np.load(WEIGHTS_DIR / "face_template.npy").astype(np.float64)
    return t / np.linalg.norm(t[EYE_CORNERS[0]] - t[EYE_CORNERS[1]]) * 100    # IOD = 100 → errors in % IOD


class LandmarkDetector:
    """(468, 3) mesh landmarks of aligned square face crops (uint8 H×W×3).

    Detects the face first; where no face is found (e.g. a garbled render) the mesh runs on the
    box where `square_crop_box` put the face (the middle 1/``crop_scale`` of the crop), so every
    frame gets landmarks and a failed render shows up as a large error, not a gap. ``fallbacks``
    counts those frames.
    """

    def __init__(self, detector: FaceDetector | None = None, crop_scale: float = 2.2):
        self.detector = detector or FaceDetector()
        self.crop_scale, self.fallbacks, self.calls = crop_scale, 0, 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        faces = self.detector.detect(image)
        if faces and faces[0].landmarks is not None:
            return faces[0].landmarks
        self.fallbacks += 1
        h, w = image.shape[:2]
        half = min(h, w) / (2 * self.crop_scale)
        cx, cy = w / 2, h / 2
        face = Face(box=np.array([cx - half, cy - half, cx + half, cy + half]), score=0.0,
                    keypoints=np.array([[cx - half / 2, cy], [cx + half / 2, cy]] + [[cx, cy]] * 4, float))
        # the mesh step of the detector, reused on the known face box (same package, private on purpose)
        return self.detector._face_mesh(image, face)[1]

    def batch(self, images) -> np.ndarray:
        return np.stack([self(np.ascontiguousarray(im)) for im in images])


def akd(landmarks_pred: np.ndarray, landmarks_target: np.ndarray, image_size: int) -> np.ndarray:
    """Average 2-D keypoint distance per frame (N,), in pixels of a 256-px crop."""
    d = np.linalg.norm(landmarks_pred[..., :2] - landmarks_target[..., :2], axis=-1).mean(-1)
    return d * 256.0 / image_size


def similarity_align(points: np.ndarray, reference: np.ndarray, fit: np.ndarray | None = None) -> np.ndarray:
    """``points`` (N, 3) mapped by the least-squares similarity s·R·p + t onto ``reference`` (Umeyama),
    fitted on the points selected by ``fit`` (a boolean mask; default all) and applied to all."""
    fit = np.ones(len(points), bool) if fit is None else fit
    mp, mr = points[fit].mean(0), reference[fit].mean(0)
    p, r = points[fit] - mp, reference[fit] - mr
    u, sv, vt = np.linalg.svd(r.T @ p / len(p))
    d = np.ones(3)
    d[-1] = np.sign(np.linalg.det(u @ vt))          # a rotation, never a mirror
    rot = (u * d) @ vt
    scale = (sv * d).sum() / (p ** 2).sum(1).mean()
    return scale * (points - mp) @ rot.T + mr


def frontalize(landmarks: np.ndarray) -> np.ndarray:
    """(T, 468, 3) → each frame similarity-aligned onto the template (pose and size removed)."""
    ref = face_template()
    rigid = np.ones(len(ref), bool)
    rigid[list(MOUTH)] = False           # the lips move on their own: they must not steer the pose fit
    return np.stack([similarity_align(f, ref, rigid) for f in np.asarray(landmarks, np.float64)])


def motion_errors(landmarks_pred: np.ndarray, landmarks_target: np.ndarray) -> dict[str, float]:
    """FP, FV, MP, MV (SPEC §6) of two landmark sequences (T, 468, 3) of the same length.

    Position error: mean distance of corresponding frontalised points; velocity error: mean distance
    of their frame-to-frame displacements (needs T ≥ 2, else NaN)."""
    if landmarks_pred.shape != landmarks_target.shape:
        raise ValueError(f"landmark sequences differ in shape: {landmarks_pred.shape} vs {landmarks_target.shape}")
    a, b = frontalize(landmarks_pred), frontalize(landmarks_target)
    out = {}
    for name, idx in (("F", slice(None)), ("M", list(MOUTH))):
        pa, pb = a[:, idx, :2], b[:, idx, :2]      # the image-plane coordinates: depth is the mesh's weakest
        out[f"{name}P"] = float(np.linalg.norm(pa - pb, axis=-1).mean())
        out[f"{name}V"] = float(np.linalg.norm(np.diff(pa, axis=0) - np.diff(pb, axis=0), axis=-1).mean()) \
            if len(pa) > 1 else float("nan")
    return out
