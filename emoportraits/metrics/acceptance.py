"""Figures for "output a person accepts": simple, model-free checks of an animated portrait video.

Every function here works on plain arrays, so each figure can be tested on synthetic data with a
known answer; `emoportraits.metrics.acceptance_report` runs them on real pipeline outputs.

Units: pixel changes are mean absolute differences of uint8 values, i.e. in /255 units (a value
of 1.0 means one grey level). Regions are square boxes ``[x0, y0, side]`` in frame pixels, cut out
and resized to a common side (`REGION_SIDE`) so faces of different sizes are compared alike.

* identity   — dlib face distance (Euclidean distance of 128-D descriptors; ``face_recognition``
               calls two faces the same person below 0.6): fraction of frames under 0.6, median.
* detection  — fraction of frames in which a face is found.
* motion     — mean frame-to-frame change in the face region; ratio output / driver.
* mouth sync — Pearson r between the mouth region's frame-to-frame change and the audio's
               per-frame loudness (log RMS), at the best lag within ±3 frames.
* seam       — discontinuity along the crop-box edge in the output beyond the one in the photo.
* no-op      — the output never leaves its first frame (max change from frame 0 below 0.5/255).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..media.crop import crop
from .landmarks import MOUTH
from .sequences import frame_energy, pearson

REGION_SIDE = 128            # face / mouth regions are compared at this resolution
SAME_PERSON = 0.6            # dlib / face_recognition distance threshold
NOOP_THRESHOLD = 0.5         # /255: below this the output is the photo up to compression noise
MAX_LAG = 3                  # frames searched either way for the mouth–loudness correlation
LOUDNESS_FLOOR = 1e-4        # RMS floor before the log: digital silence must not give −∞

# targets of issue 15: the figure, whether higher is better, the bound
TARGETS = {"identity_ok": (True, 0.80), "detection_rate": (True, 0.95), "motion_ratio": (True, 0.5),
           "mouth_r": (True, 0.3)}


# ---- regions ------------------------------------------------------------------------------------

def expand_box(box, scale: float) -> np.ndarray:
    """A face box ``[x0, y0, x1, y1]`` → the square ``[x0, y0, side]`` with side = ``scale`` ·
    max(width, height), on the same centre. It may reach outside the frame: `region` pads."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, np.float64)[:4])
    side = scale * max(x1 - x0, y1 - y0)
    return np.array([(x0 + x1 - side) / 2, (y0 + y1 - side) / 2, side])


def region(frame: np.ndarray, square, side: int = REGION_SIDE) -> np.ndarray:
    """The square ``[x0, y0, side]`` of ``frame`` resized to side², uint8 (outside parts repeat the edge)."""
    return crop(frame, square, side)


def mouth_box(landmarks: np.ndarray | None, face_box, scale: float = 1.5) -> np.ndarray:
    """Square ``[x0, y0, side]`` around the mouth: centred on the 40 lip points of the face mesh, side
    ``scale`` × the lip width (room for an open jaw). Without a mesh: below the face-box centre,
    side 0.6 × the face width (where a frontal mouth sits)."""
    if landmarks is not None:
        lips = np.asarray(landmarks)[list(MOUTH), :2]
        (x0, y0), (x1, y1) = lips.min(0), lips.max(0)
        return expand_box([x0, y0, x1, y1], scale * (x1 - x0) / max(x1 - x0, y1 - y0))
    x0, y0, x1, y1 = np.asarray(face_box, np.float64)[:4]
    side = 0.6 * (x1 - x0)
    cx, cy = (x0 + x1) / 2, y0 + 0.75 * (y1 - y0)
    return np.array([cx - side / 2, cy - side / 2, side])


# ---- change over time ---------------------------------------------------------------------------

def frame_changes(regions: np.ndarray) -> np.ndarray:
    """Mean |R_t − R_{t−1}| per step (T−1,), /255 units, of regions (T, h, w[, c]) uint8."""
    r = np.asarray(regions, np.float32)
    return np.abs(np.diff(r, axis=0)).reshape(len(r) - 1, -1).mean(1)


def changes_from_first(regions: np.ndarray) -> np.ndarray:
    """Mean |R_t − R_0| per frame (T,), /255 units (0 at t = 0)."""
    r = np.asarray(regions, np.float32)
    return np.abs(r - r[:1]).reshape(len(r), -1).mean(1)


def mean_motion(regions: np.ndarray) -> float:
    """Mean frame-to-frame change of a region sequence, /255 units (NaN for fewer than 2 frames)."""
    return float(frame_changes(regions).mean()) if len(regions) > 1 else float("nan")


def motion_ratio(output_motion: float, driver_motion: float) -> float:
    """Output motion / driver motion; NaN when the driver does not move (nothing to transfer)."""
    if not np.isfinite(driver_motion) or driver_motion < 1e-6:
        return float("nan")
    return float(output_motion / driver_motion)


def is_noop(regions: np.ndarray, threshold: float = NOOP_THRESHOLD) -> tuple[bool, float]:
    """(whether the video is a still of its first frame, the largest change from frame 0 in /255)."""
    largest = float(changes_from_first(regions).max())
    return largest < threshold, largest


# ---- mouth and loudness -------------------------------------------------------------------------

def frame_loudness(samples: np.ndarray, n_frames: int, fps: float, sample_rate: int = 16000) -> np.ndarray:
    """log RMS of the audio samples in each video frame's window (n_frames,)."""
    rms = frame_energy(samples, n_frames, fps, sample_rate)
    return np.log(np.maximum(rms, LOUDNESS_FLOOR))


def lagged_correlation(follower, leader, max_lag: int = MAX_LAG) -> tuple[float, int]:
    """(best Pearson r, its lag) of ``follower[t]`` against ``leader[t − lag]`` for |lag| ≤ max_lag:
    a positive lag means the follower (the mouth) comes that many frames after the leader (the
    sound). NaN r (lag 0) when no lag leaves 3 overlapping values or a signal is constant."""
    a, b = np.asarray(follower, np.float64), np.asarray(leader, np.float64)
    n = min(len(a), len(b))
    best = (float("nan"), 0)
    for lag in range(-max_lag, max_lag + 1):
        x, y = (a[lag:n], b[:n - lag]) if lag >= 0 else (a[:n + lag], b[-lag:n])
        r = pearson(x, y)
        if np.isfinite(r) and not r <= best[0]:      # `not <=` so that the first finite r wins over NaN
            best = (r, lag)
    return best


def mouth_sync(mouth_regions: np.ndarray, loudness: np.ndarray, max_lag: int = MAX_LAG) -> dict:
    """The mouth's frame-to-frame change (frames 1…) against the loudness of the same frames: best r,
    its lag, and the largest change of the mouth from the first frame (/255). A mouth that never
    moves by `NOOP_THRESHOLD` gets r = 0: its changes are compression noise, whose chance
    correlation with a short clip's loudness can be large."""
    change = frame_changes(mouth_regions)
    largest = float(changes_from_first(mouth_regions).max())
    if largest < NOOP_THRESHOLD:
        return {"mouth_r": 0.0, "mouth_lag": 0, "mouth_max_change": largest}
    r, lag = lagged_correlation(change, np.asarray(loudness)[1:len(change) + 1], max_lag)
    return {"mouth_r": r, "mouth_lag": lag, "mouth_max_change": largest}


# ---- seam along the crop box ---------------------------------------------------------------------

def _edge_jumps(lines: np.ndarray) -> np.ndarray:
    """``lines`` (4, n, c): the two pixel lines before an edge and the two after, along n positions.
    Jump = |step across the edge − mean of the steps beside it| (0 on any linear ramp, h on a step
    of height h), max over channels → (n,)."""
    a, b, c, d = np.asarray(lines, np.float32)
    return np.abs((c - b) - ((b - a) + (d - c)) / 2).max(-1)


def seam_jumps(image: np.ndarray, square) -> np.ndarray:
    """Jumps (see `_edge_jumps`) at every pixel of the crop box's four edges that lie inside the
    image with two pixel lines on both sides (an edge on the image border is no seam). Empty when
    the box has no such edge. ``square`` = ``[x0, y0, side]`` rounded as the pipeline rounds it."""
    img = np.asarray(image)
    img = img[..., None] if img.ndim == 2 else img
    H, W = img.shape[:2]
    x0, y0, s = (int(round(float(v))) for v in np.asarray(square, np.float64)[:3])
    ys = slice(max(y0, 0), min(y0 + s, H))
    xs = slice(max(x0, 0), min(x0 + s, W))
    out = []
    for e in (x0, x0 + s):                        # vertical edges: boundary between columns e−1 and e
        if 2 <= e <= W - 2:
            out.append(_edge_jumps(img[ys, e - 2:e + 2].transpose(1, 0, 2)))
    for e in (y0, y0 + s):                        # horizontal edges: boundary between rows e−1 and e
        if 2 <= e <= H - 2:
            out.append(_edge_jumps(img[e - 2:e + 2, xs]))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def seam_score(frame: np.ndarray, photo: np.ndarray, square, q: float = 99.0) -> float:
    """99th percentile of the output's edge jumps minus that of the photo at the same pixels (/255);
    the photo's own edges (hair, collar) crossing the box cancel out. NaN when the box has no edge
    inside the image (it fills the photo: nothing to see)."""
    h, w = frame.shape[:2]
    out, ref = seam_jumps(frame, square), seam_jumps(photo[:h, :w], square)
    if out.size == 0:
        return float("nan")
    return float(np.percentile(out, q) - np.percentile(ref, q))


# ---- identity and detection ----------------------------------------------------------------------

def face_distances(embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Euclidean distances (N,) of descriptors (N, D) to one reference descriptor (D,)."""
    return np.linalg.norm(np.asarray(embeddings, np.float64) - np.asarray(reference, np.float64).reshape(1, -1), axis=1)


@dataclass
class IdentityFigures:
    identity_ok: float          # fraction of frames with a detected face at distance < SAME_PERSON
    identity_median: float      # median distance over all frames
    detection_rate: float       # fraction of frames with a detected face


def identity_figures(distances: np.ndarray, detected: np.ndarray, threshold: float = SAME_PERSON) -> IdentityFigures:
    """Per-frame distances (measured at the detected face, or where the photo's face is when none was
    found) and detection flags → the identity and detection figures. A frame without a detected face
    never counts as the same person."""
    d, found = np.asarray(distances, np.float64), np.asarray(detected, bool)
    ok = found & (d < threshold)
    return IdentityFigures(identity_ok=float(ok.mean()), identity_median=float(np.median(d)),
                           detection_rate=float(found.mean()))


def meets_target(name: str, value) -> bool | None:
    """Whether ``value`` meets the target of figure ``name``; None without a target or a value."""
    if name not in TARGETS or value is None or not np.isfinite(value):
        return None
    higher, bound = TARGETS[name]
    return bool(value >= bound) if higher else bool(value <= bound)
