"""Head-pose pseudo-labels from the 468-point MediaPipe face mesh, in the model's θ convention.

Conventions (all arrays float64 unless said otherwise):

* **Crop coordinates.** Landmarks of a frame are expressed in the normalised coordinates of the
  model's input crop — the very crop `emoportraits.media.crop.crop` cuts (integer box, as
  `pixel_box` rounds it): x and y in [-1, 1] from the crop's left/top edge to its right/bottom
  edge (``grid_sample`` with align_corners=False), z = the mesh's relative depth scaled like x
  (pixels · 2 / crop side; MediaPipe's z grows away from the camera, so (x, y, z) is right-handed).
* **θ.** A similarity transform fitted (Umeyama, least squares) from the frame's landmarks p to a
  canonical template c: c ≈ s·R·p + t'. The model's θ = S·R·T (R = Rz(yaw)·Ry(pitch)·Rx(roll),
  T applied first) maps the posed head to canonical, θ·p = s·R·(p + τ), so τ = (sR)⁻¹·t' and the
  label is raw9 = (s, s, s, yaw, pitch, roll, τx, τy, τz) with
  ``geometry.theta_from_raw9(raw9) = θ``.
* **Template.** (468, 3) in crop coordinates, estimated by generalised Procrustes analysis over
  faces in inference crops, then put in a fixed gauge: mirror-symmetric about x = 0 (its left/right
  landmark pairs found by mirroring), pitch (rotation about x) = the sample's mean, size = the
  sample's mean RMS size, centroid x = 0 and y, z = the sample's mean. A centred frontal face in an
  inference crop thus gets θ ≈ identity. The package ships one estimated from the shared test
  portraits (``emoportraits/weights/face_template.npy``, see the weights README).

Command line (regenerate the shipped template, or fit one over a prepared data set)::

    python -m emoportraits.data.pose_labels template --images PORTRAIT.jpg ... --out face_template.npy
    python -m emoportraits.data.pose_labels fit-template --data PREPARED_DIR --out template.npy
"""
from __future__ import annotations

import argparse
import hashlib
import math
import sys
from pathlib import Path

import numpy as np

__all__ = ["N_LANDMARKS", "TEMPLATE_PATH", "EYE_CORNERS", "eye_centers", "landmarks_to_crop", "umeyama", "rotation_to_angles",
           "angles_to_rotation", "similarity_to_raw9", "raw9_to_similarity", "fit_pose", "estimate_template",
           "mirror_pairs", "default_template", "load_template", "template_digest", "template_from_images"]

N_LANDMARKS = 468
TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "weights" / "face_template.npy"
ANGLE_MIN, ANGLE_MAX = -math.pi / 2, math.pi      # geometry.rotation_matrix clamps to this range


# ---- coordinates ---------------------------------------------------------------------------------

def landmarks_to_crop(landmarks: np.ndarray, box) -> np.ndarray:
    """(…, 468, 3) mesh in image pixels (``Face.landmarks``) → crop coordinates of ``box`` [x0, y0, side].

    Uses the integer box `crop` cuts, so the coordinates refer to the pixels the model sees.
    """
    from ..media.crop import pixel_box

    x0, y0, side = pixel_box(box)
    lm = np.asarray(landmarks, dtype=np.float64)
    out = np.empty_like(lm)
    out[..., 0] = (lm[..., 0] - x0) * (2.0 / side) - 1.0
    out[..., 1] = (lm[..., 1] - y0) * (2.0 / side) - 1.0
    out[..., 2] = lm[..., 2] * (2.0 / side)
    return out


# image-left eye (the subject's right) and image-right eye: outer and inner corner of each
EYE_CORNERS = ((33, 133), (362, 263))


def eye_centers(landmarks: np.ndarray) -> np.ndarray:
    """(…, 468, 3) mesh → (…, 2, 2) eye centres (x, y), image-left eye first (corner midpoints)."""
    lm = np.asarray(landmarks)
    return np.stack([(lm[..., a, :2] + lm[..., b, :2]) / 2 for a, b in EYE_CORNERS], -2)


# ---- similarity fit ------------------------------------------------------------------------------

def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares similarity dst ≈ s·R·src + t (Umeyama 1991), batched over leading axes.

    ``src``, ``dst``: (…, N, 3) (broadcast against each other); ``weights``: (N,) ≥ 0 or None.
    Returns s (…), R (…, 3, 3) with det R = +1, t (…, 3).
    """
    src, dst = np.broadcast_arrays(np.asarray(src, np.float64), np.asarray(dst, np.float64))
    n = src.shape[-2]
    w = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, np.float64) / np.sum(weights)
    mu_s = np.einsum("n,...nd->...d", w, src)
    mu_d = np.einsum("n,...nd->...d", w, dst)
    xs, xd = src - mu_s[..., None, :], dst - mu_d[..., None, :]
    cov = np.einsum("n,...ni,...nj->...ij", w, xd, xs)            # Σ w · dst_c · src_cᵀ
    u, sig, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    d = np.where(d == 0, 1.0, d)
    corr = np.ones(sig.shape)
    corr[..., 2] = d
    r = np.einsum("...ij,...j,...jk->...ik", u, corr, vt)
    var_s = np.einsum("n,...nd,...nd->...", w, xs, xs)
    s = np.einsum("...j,...j->...", sig, corr) / np.maximum(var_s, 1e-300)
    t = mu_d - s[..., None] * np.einsum("...ij,...j->...i", r, mu_s)
    return s, r, t


def _kabsch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Rotation R (det +1) minimising ‖R·src_c − dst_c‖ over centred (N, 3) point sets."""
    _, r, _ = umeyama(src, dst)
    return r


# ---- angles --------------------------------------------------------------------------------------

def angles_to_rotation(angles: np.ndarray) -> np.ndarray:
    """(…, 3) yaw, pitch, roll → (…, 3, 3) R = Rz(yaw)·Ry(pitch)·Rx(roll) (numpy twin of
    ``geometry.rotation_matrix``, without its clamp)."""
    a = np.asarray(angles, np.float64)
    cy, sy = np.cos(a[..., 0]), np.sin(a[..., 0])
    cp, sp = np.cos(a[..., 1]), np.sin(a[..., 1])
    cr, sr = np.cos(a[..., 2]), np.sin(a[..., 2])
    rows = [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr,
            sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr,
            -sp, cp * sr, cp * cr]
    return np.stack(rows, -1).reshape(a.shape[:-1] + (3, 3))


def _wrap(a: np.ndarray) -> np.ndarray:
    """Angles into (−π, π]."""
    return np.pi - np.mod(np.pi - a, 2 * np.pi)


def rotation_to_angles(r: np.ndarray) -> np.ndarray:
    """(…, 3, 3) rotation → (…, 3) (yaw, pitch, roll) with R = Rz(yaw)·Ry(pitch)·Rx(roll).

    R[2,0] = −sin(pitch), R[1,0]/R[0,0] = tan(yaw), R[2,1]/R[2,2] = tan(roll). Of the two
    solutions (yaw, pitch, roll) and (yaw + π, π − pitch, roll + π) the principal one (|pitch| ≤ π/2)
    is returned unless only the other lies in the range [−π/2, π] that ``geometry.rotation_matrix``
    clamps to. At gimbal lock (|pitch| = π/2) yaw is set to 0.
    """
    r = np.asarray(r, np.float64)
    cos_p = np.hypot(r[..., 0, 0], r[..., 1, 0])
    pitch = np.arctan2(-r[..., 2, 0], cos_p)
    locked = cos_p < 1e-9
    yaw = np.where(locked, 0.0, np.arctan2(r[..., 1, 0], r[..., 0, 0]))
    roll = np.where(locked, np.arctan2(np.sign(-r[..., 2, 0]) * r[..., 0, 1], r[..., 1, 1]),
                    np.arctan2(r[..., 2, 1], r[..., 2, 2]))
    principal = np.stack([yaw, pitch, roll], -1)
    other = _wrap(np.stack([yaw + np.pi, np.pi - pitch, roll + np.pi], -1))

    def ok(a):
        return np.all((a >= ANGLE_MIN - 1e-12) & (a <= ANGLE_MAX + 1e-12), axis=-1)

    use_other = ~ok(principal) & ok(other)
    return np.where(use_other[..., None], other, principal)


# ---- raw9 ----------------------------------------------------------------------------------------

def similarity_to_raw9(s, r, t) -> np.ndarray:
    """c ≈ s·R·p + t'  →  raw9 = (s, s, s, yaw, pitch, roll, τ) with τ = (sR)⁻¹·t' (float64)."""
    s, r, t = np.asarray(s, np.float64), np.asarray(r, np.float64), np.asarray(t, np.float64)
    tau = np.einsum("...ji,...j->...i", r, t) / s[..., None]          # Rᵀ t / s
    angles = rotation_to_angles(r)
    return np.concatenate([np.repeat(s[..., None], 3, -1), angles, tau], -1)


def raw9_to_similarity(raw9: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of `similarity_to_raw9` (isotropic scale = the mean of the three): (s, R, t')."""
    raw9 = np.asarray(raw9, np.float64)
    s = raw9[..., 0:3].mean(-1)
    r = angles_to_rotation(raw9[..., 3:6])
    t = s[..., None] * np.einsum("...ij,...j->...i", r, raw9[..., 6:9])
    return s, r, t


def fit_pose(landmarks: np.ndarray, template: np.ndarray | None = None, weights: np.ndarray | None = None
             ) -> np.ndarray:
    """(…, 468, 3) landmarks in crop coordinates → (…, 9) raw9 pose labels (float32).

    ``template`` defaults to the shipped one; ``weights`` (468,) weight the landmarks in the fit.
    """
    template = default_template() if template is None else np.asarray(template, np.float64)
    s, r, t = umeyama(landmarks, template, weights)
    return similarity_to_raw9(s, r, t).astype(np.float32)


# ---- template ------------------------------------------------------------------------------------

_FLIP = np.array([-1.0, 1.0, 1.0])


def mirror_pairs(shape: np.ndarray, max_dist: float = 1.0) -> np.ndarray:
    """Left/right correspondence of a roughly frontal (468, 3) mesh: pairs[i] = the landmark
    nearest to i mirrored about the shape's x centroid. Kept only where it is mutual and the match
    is closer than ``max_dist`` × the median nearest-neighbour spacing; other points map to
    themselves (as midline points do anyway)."""
    x = np.asarray(shape, np.float64)
    x = x - x.mean(0)
    mirrored = x * _FLIP
    d = np.linalg.norm(mirrored[:, None, :] - x[None, :, :], axis=-1)          # (i mirrored, j)
    pairs = d.argmin(1)
    dd = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
    np.fill_diagonal(dd, np.inf)
    spacing = np.median(dd.min(1))
    idx = np.arange(len(x))
    good = (pairs[pairs] == idx) & (d[idx, pairs] < max_dist * spacing)
    return np.where(good, pairs, idx)


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector a to unit vector b (Rodrigues)."""
    v, c = np.cross(a, b), float(np.dot(a, b))
    if np.linalg.norm(v) < 1e-12:
        return np.eye(3) if c > 0 else np.diag([-1.0, -1.0, 1.0])
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1 + c)


def _rms(x: np.ndarray) -> np.ndarray:
    """RMS distance of each (…, N, 3) shape's points from its centroid."""
    xc = x - x.mean(-2, keepdims=True)
    return np.sqrt((xc ** 2).sum(-1).mean(-1))


def estimate_template(shapes: np.ndarray, *, iterations: int = 50, tol: float = 1e-10,
                      symmetric: bool = True) -> np.ndarray:
    """Generalised Procrustes mean of (M, 468, 3) landmark sets in crop coordinates, in the gauge
    described in the module docstring (float64 (468, 3))."""
    x = np.asarray(shapes, np.float64)
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[2] != 3:
        raise ValueError(f"expected landmark sets of shape (M, N, 3), got {x.shape}")
    raw_mean = x.mean(0)
    raw_mean_c = raw_mean - raw_mean.mean(0)
    mean = raw_mean_c / _rms(raw_mean_c)
    for _ in range(iterations):
        s, r, t = umeyama(x, mean[None])
        aligned = s[:, None, None] * np.einsum("mij,mnj->mni", r, x) + t[:, None, :]
        new = aligned.mean(0)
        new = new - new.mean(0)
        new = new / _rms(new)
        done = np.abs(new - mean).max() < tol
        mean = new
        if done:
            break
    mean = mean @ _kabsch(mean, raw_mean_c).T                        # the sample's mean orientation
    if symmetric:
        for _ in range(3):                                           # symmetry plane → x = 0
            pairs = mirror_pairs(mean)
            sel = pairs != np.arange(len(mean))
            if sel.sum() < 6:
                break
            diff = mean[sel] - mean[pairs[sel]]
            w, v = np.linalg.eigh(diff.T @ diff)
            n = v[:, -1] * np.sign(v[0, -1] or 1.0)
            mean = mean @ _rotation_between(n, np.array([1.0, 0.0, 0.0])).T
        # pitch gauge: the rotation about x that best aligns with the sample's mean shape
        y, z, ay, az = mean[:, 1], mean[:, 2], raw_mean_c[:, 1], raw_mean_c[:, 2]
        phi = math.atan2(float(np.sum(az * y - ay * z)), float(np.sum(ay * y + az * z)))
        c, s_ = math.cos(phi), math.sin(phi)
        mean = mean @ np.array([[1, 0, 0], [0, c, -s_], [0, s_, c]]).T
        pairs = mirror_pairs(mean)
        mean = (mean + mean[pairs] * _FLIP) / 2                      # midline points get x = 0
    mean = mean - mean.mean(0)
    mean = mean * _rms(x).mean()
    centre = x.mean((0, 1))
    if symmetric:
        centre[0] = 0.0
    return mean + centre


_DEFAULT: np.ndarray | None = None


def load_template(path) -> np.ndarray:
    """A (468, 3) template from a .npy file (float64), or ValueError/FileNotFoundError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such template file (a (468, 3) .npy)")
    t = np.load(path, allow_pickle=False).astype(np.float64)
    if t.shape != (N_LANDMARKS, 3) or not np.isfinite(t).all():
        raise ValueError(f"{path}: a face template must be a finite (468, 3) array, got {t.shape}")
    return t


def default_template() -> np.ndarray:
    """The shipped template (``emoportraits/weights/face_template.npy``), a read-only copy."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_template(TEMPLATE_PATH)
        _DEFAULT.setflags(write=False)
    return _DEFAULT


def template_digest(template: np.ndarray) -> str:
    """A short stable id of a template (sha256 of its float32 bytes, 16 hex digits)."""
    return hashlib.sha256(np.ascontiguousarray(template, dtype="<f4").tobytes()).hexdigest()[:16]


def template_from_images(paths, crop_scale: float = 2.2, detector=None) -> tuple[np.ndarray, list[str]]:
    """Estimate a template from portraits: largest face of each image, the inference crop box
    (``square_crop_box`` with ``crop_scale``) before it is shifted to fit inside the image — the
    face centred as in a crop of a video frame with room around the head — mesh in crop
    coordinates, GPA. Returns the template and the names of the images used (images without a
    face are skipped)."""
    from ..media.faces import FaceDetector
    from ..media.image import load_image

    detector = detector or FaceDetector()
    shapes, used = [], []
    for p in paths:
        image = load_image(p)
        faces = detector.detect(image)
        if not faces or faces[0].landmarks is None:
            continue
        # the inference box before it is shifted to fit inside the image: a centred face
        x0, y0, x1, y1 = faces[0].box
        side = crop_scale * max(x1 - x0, y1 - y0)                    # as square_crop_box, unclipped
        box = np.array([(x0 + x1 - side) / 2, (y0 + y1 - side) / 2, side])
        shapes.append(landmarks_to_crop(faces[0].landmarks, box))
        used.append(Path(p).name)
    if len(shapes) < 2:
        raise ValueError("need at least two images with a detected face to estimate a template")
    return estimate_template(np.stack(shapes)), used


# ---- command line --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emoportraits.data.pose_labels",
                                     description="Estimate the canonical face template used for head-pose labels.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("template", help="estimate a template from portrait images")
    p.add_argument("--images", nargs="+", required=True, metavar="IMG")
    p.add_argument("--out", required=True, metavar="FILE.npy")
    p = sub.add_parser("fit-template", help="estimate a template over a prepared data set's frames")
    p.add_argument("--data", required=True, metavar="DIR", help="a folder written by `emoportraits prepare-data`")
    p.add_argument("--out", required=True, metavar="FILE.npy")
    p.add_argument("--sample", type=int, default=2000, metavar="N", help="frames to use (default: 2000)")
    args = parser.parse_args(argv)
    try:
        if args.command == "template":
            template, used = template_from_images(args.images)
            print(f"template from {len(used)} image(s): {', '.join(used)}")
        else:
            from .shards import ShardDataset
            template = ShardDataset(args.data).estimate_template(args.sample)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, template.astype(np.float32))
        print(f"wrote {out} ({template_digest(template)}); centroid {np.round(template.mean(0), 4).tolist()}, "
              f"RMS size {_rms(template):.4f}")
    except (ValueError, OSError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
