"""Offline face detection: MediaPipe BlazeFace (short range) run by the ai-edge-litert runtime.

The model files ship in ``emoportraits/weights/`` (see its README.md for their origin).
Everything around the network — letterboxing, SSD anchors, box decoding, weighted NMS,
and the optional face-mesh check that rejects false detections — is written here.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import EmoPortraitsError, MediaError
from .crop import resize

__all__ = ["Face", "FaceDetector", "select_face", "blazeface_anchors", "WEIGHTS_DIR"]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
_INPUT = 128              # BlazeFace short-range input side
_NMS_IOU = 0.3            # MediaPipe face_detection_short_range.pbtxt
_MESH_INPUT = 192         # face_landmark.tflite input side
_KEYPOINTS = ("left_eye", "right_eye", "nose_tip", "mouth", "left_ear", "right_ear")  # image left/right


@dataclass(eq=False)  # array fields: compare faces by identity, not element-wise
class Face:
    """One detected face, in pixels of the image it was found in.

    ``box`` = [x0, y0, x1, y1]; ``keypoints`` (6, 2) = image-left eye, image-right eye,
    nose tip, mouth centre, image-left ear, image-right ear; ``landmarks`` (468, 3) = the
    MediaPipe face mesh (x, y in pixels, z relative) when the detector verified the face.
    """

    box: np.ndarray
    score: float
    keypoints: np.ndarray
    landmarks: np.ndarray | None = None

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])


def blazeface_anchors() -> np.ndarray:
    """(896, 2) anchor centres in [0, 1] of the short-range model (MediaPipe SsdAnchors).

    Strides [8, 16, 16, 16] with one extra 'interpolated' anchor per layer: consecutive
    layers of equal stride share one grid, giving 2 anchors per cell on the 16×16 grid
    and 6 on the 8×8 grid. Anchors have fixed size 1, so only centres are needed.
    """
    out = []
    for fm, per_cell in ((_INPUT // 8, 2), (_INPUT // 16, 6)):
        c = (np.arange(fm, dtype=np.float32) + 0.5) / fm
        yy, xx = np.meshgrid(c, c, indexing="ij")   # row-major: x varies fastest
        out.append(np.repeat(np.stack([xx.ravel(), yy.ravel()], 1), per_cell, axis=0))
    return np.concatenate(out)


@contextlib.contextmanager
def _quiet_stderr():
    """Hide the C++ runtime's 'Created TensorFlow Lite XNNPACK delegate' line (written to fd 2)."""
    try:
        saved = os.dup(2)
    except OSError:       # no real stderr (some embedded hosts): nothing to hide
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_tflite(path, num_threads: int | None = None):
    """A ready litert Interpreter for ``path``; EmoPortraitsError when it cannot be had."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise EmoPortraitsError("face detection and masking need the LiteRT runtime: "
                                "install ai-edge-litert (pip install ai-edge-litert)") from e
    path = Path(path)
    if not path.is_file():
        raise EmoPortraitsError(f"model file not found: {path}")
    threads = num_threads or min(4, os.cpu_count() or 1)
    try:
        with _quiet_stderr():
            it = Interpreter(model_path=str(path), num_threads=threads)
            it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise EmoPortraitsError(f"{path} is not a usable TFLite model: {e}") from e
    return it


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A uint8 (H, W, 3) RGB view of a grey, RGB or RGBA uint8 image; MediaError for anything else."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise MediaError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    return image[..., :3]


def _weighted_nms(dets: np.ndarray, iou_thr: float) -> np.ndarray:
    """MediaPipe's WEIGHTED non-max suppression on rows [x0, y0, x1, y1, 12 keypoint coords, score]:
    each cluster (IoU > iou_thr with its best box) becomes the score-weighted mean of its
    members, with the best member's score."""
    dets = dets[np.argsort(-dets[:, -1])]
    area = (dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])
    left = np.ones(len(dets), bool)
    out = []
    for i in range(len(dets)):
        if not left[i]:
            continue
        ix0 = np.maximum(dets[i, 0], dets[:, 0])
        iy0 = np.maximum(dets[i, 1], dets[:, 1])
        ix1 = np.minimum(dets[i, 2], dets[:, 2])
        iy1 = np.minimum(dets[i, 3], dets[:, 3])
        inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
        iou = inter / (area[i] + area - inter + 1e-9)
        group = left & (iou > iou_thr)
        group[i] = True
        w = dets[group, -1:]
        out.append(np.append((dets[group, :-1] * w).sum(0) / w.sum(), dets[i, -1]))
        left &= ~group
    return np.asarray(out).reshape(-1, dets.shape[1])


class FaceDetector:
    """Find faces in RGB images with BlazeFace short range (works best for faces filling
    more than ~1/8 of the longer image side, i.e. portraits and talking-head videos).

    ``verify`` (default on) runs the MediaPipe face mesh on every detection and drops
    those it does not see a face in (presence < 0.5) — e.g. a textured background patch
    the detector scored 0.6; it also fills ``Face.landmarks``. ``min_face`` drops
    detections whose larger box side is below that many pixels. Models load on first use.
    """

    def __init__(self, model_path=None, score_threshold: float = 0.5, min_face: int = 16,
                 verify: bool = True, landmark_path=None, num_threads: int | None = None):
        self.model_path = Path(model_path or WEIGHTS_DIR / "face_detection_short_range.tflite")
        self.landmark_path = Path(landmark_path or WEIGHTS_DIR / "face_landmark.tflite")
        self.score_threshold, self.min_face, self.verify = float(score_threshold), int(min_face), verify
        self.num_threads = num_threads
        self._det = self._mesh = None
        self.anchors = blazeface_anchors()

    def _io(self, it):
        inp = it.get_input_details()[0]["index"]
        outs = sorted(it.get_output_details(), key=lambda d: -int(d["shape"][-1]))  # big output first
        return inp, outs[0]["index"], outs[1]["index"]

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces in ``image`` (uint8 H×W×3 RGB), largest box first."""
        image = as_rgb(image)
        if self._det is None:
            self._det = load_tflite(self.model_path, self.num_threads)
        H, W = image.shape[:2]
        # Letterbox: keep the aspect ratio, centre, pad black (-1 after scaling to [-1, 1]).
        s = _INPUT / max(W, H)
        nw, nh = max(1, round(W * s)), max(1, round(H * s))
        px, py = (_INPUT - nw) // 2, (_INPUT - nh) // 2
        x = np.full((_INPUT, _INPUT, 3), -1.0, np.float32)
        x[py:py + nh, px:px + nw] = resize(image, (nh, nw)).astype(np.float32) / 127.5 - 1.0
        inp, reg_i, cls_i = self._io(self._det)
        self._det.set_tensor(inp, x[None])
        self._det.invoke()
        reg = self._det.get_tensor(reg_i)[0]
        logit = self._det.get_tensor(cls_i)[0, :, 0].astype(np.float64)
        score = 1.0 / (1.0 + np.exp(-np.clip(logit, -80, 80)))
        keep = score >= self.score_threshold
        if not keep.any():
            return []
        # Decode: offsets are in input pixels relative to the anchor centre.
        reg, anc = reg[keep] / _INPUT, self.anchors[keep]
        cx, cy, w, h = reg[:, 0] + anc[:, 0], reg[:, 1] + anc[:, 1], reg[:, 2], reg[:, 3]
        kps = reg[:, 4:16].reshape(-1, 6, 2) + anc[:, None, :]
        dets = np.concatenate([np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1),
                               kps.reshape(-1, 12), score[keep][:, None]], 1)
        dets = _weighted_nms(dets, _NMS_IOU)
        # Undo the letterbox: normalised input coordinates → image pixels.
        pts = dets[:, :16].reshape(-1, 8, 2)
        pts = (pts * _INPUT - [px, py]) / [nw, nh] * [W, H]
        faces = []
        for p, sc in zip(pts, dets[:, 16]):
            face = Face(box=p[:2].reshape(4).astype(np.float64), score=float(sc),
                        keypoints=p[2:].astype(np.float64))
            if max(face.width, face.height) < self.min_face:
                continue
            if self.verify:
                presence, face.landmarks = self._face_mesh(image, face)
                if presence < 0.5:
                    continue
            faces.append(face)
        return sorted(faces, key=lambda f: -f.area)

    def _face_mesh(self, image: np.ndarray, face: Face) -> tuple[float, np.ndarray]:
        """Run face_landmark.tflite on MediaPipe's ROI: the box centre, side 1.5·max(w, h),
        rotated so the eyes are level. Returns (presence probability, (468, 3) landmarks)."""
        if self._mesh is None:
            self._mesh = load_tflite(self.landmark_path, self.num_threads)
        H, W = image.shape[:2]
        (lx, ly), (rx, ry) = face.keypoints[0], face.keypoints[1]
        angle = math.atan2(ry - ly, rx - lx)
        c, s = math.cos(angle), math.sin(angle)
        k = 1.5 * max(face.width, face.height) / _MESH_INPUT       # image px per ROI px
        cx, cy = face.center
        # ROI pixel (u, v) → image (x, y): rotate by the eye angle, scale by k, about the centre.
        t = (np.arange(_MESH_INPUT, dtype=np.float64) + 0.5) - _MESH_INPUT / 2
        uu, vv = np.meshgrid(t, t, indexing="xy")
        xs = cx + k * (c * uu - s * vv)
        ys = cy + k * (s * uu + c * vv)
        # grid_sample(align_corners=False) maps -1..1 to the image edges, pixel j spanning [j, j+1].
        grid = torch.from_numpy(np.stack([xs / W * 2 - 1, ys / H * 2 - 1], -1)).float()
        img = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        roi = F.grid_sample(img, grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)
        inp, lm_i, pr_i = self._io(self._mesh)
        self._mesh.set_tensor(inp, roi[0].permute(1, 2, 0)[None].contiguous().numpy())
        self._mesh.invoke()
        lm = self._mesh.get_tensor(lm_i).reshape(468, 3).astype(np.float64)
        presence = 1.0 / (1.0 + math.exp(-float(np.clip(self._mesh.get_tensor(pr_i).ravel()[0], -80, 80))))
        u, v = lm[:, 0] - _MESH_INPUT / 2, lm[:, 1] - _MESH_INPUT / 2
        landmarks = np.stack([cx + k * (c * u - s * v), cy + k * (s * u + c * v), lm[:, 2] * k], 1)
        return presence, landmarks


def select_face(faces: list[Face], index: int = 0, source_name: str = "image") -> Face:
    """The ``index``-th face (0 = largest) or a one-line MediaError saying what to do."""
    if not faces:
        raise MediaError(f"{source_name}: no face found; use a photo where the face is clearly visible")
    if not 0 <= index < len(faces):
        raise MediaError(f"{source_name}: --face-index {index} but only {len(faces)} face(s) found "
                         "(0 = largest)")
    return faces[index]
