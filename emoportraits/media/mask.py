"""Portrait (foreground) masks: MediaPipe selfie segmentation by default, or your own model.

The released EMOPortraits model was trained on sources multiplied by a *binarised*
foreground mask (the authors' code thresholds the soft mask at 0.6), so feed it
``source * binarize(mask)``; keep the soft mask for compositing and paste-back.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import EmoPortraitsError
from .crop import pixel_box, resize
from .faces import WEIGHTS_DIR, as_rgb, load_tflite

__all__ = ["PortraitMasker", "binarize", "face_region_mask", "convex_hull", "MASK_THRESHOLD"]

MASK_THRESHOLD = 0.6  # the authors' binarisation threshold


def binarize(mask: np.ndarray, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """1.0 where ``mask`` > threshold, else 0.0 (float32, same shape)."""
    return (np.asarray(mask) > threshold).astype(np.float32)


def _turn(o, a, b) -> float:
    """z of the cross product (a − o) × (b − o): > 0 for a left turn."""
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Counter-clockwise (in x-right, y-down pixels: clockwise on screen) hull of (N, 2) points,
    by Andrew's monotone chain; (K, 2), no repeated end point."""
    pts = np.unique(np.asarray(points, np.float64).reshape(-1, 2), axis=0)
    if len(pts) < 3:
        return pts

    def half(seq):
        chain = []
        for p in seq:
            while len(chain) >= 2 and _turn(chain[-2], chain[-1], p) <= 0:
                chain.pop()
            chain.append(p)
        return chain[:-1]
    return np.array(half(pts) + half(pts[::-1]))


def _polygon_mask(hull: np.ndarray, size: int) -> np.ndarray:
    """1 inside the convex polygon ``hull`` (pixel coordinates, pixel centres at +0.5)."""
    c = np.arange(size, dtype=np.float64) + 0.5
    xx, yy = np.meshgrid(c, c)
    inside = np.ones((size, size), bool)
    for a, b in zip(hull, np.roll(hull, -1, axis=0)):
        inside &= (b[0] - a[0]) * (yy - a[1]) - (b[1] - a[1]) * (xx - a[0]) >= 0
    return inside.astype(np.float32)


def face_region_mask(face, box, size: int) -> np.ndarray:
    """Where the face is in a crop: float32 (size, size), 1 inside.

    The hull of the face mesh (forehead to chin, cheek to cheek) when ``face.landmarks`` is there,
    else an ellipse filling the detection box. ``box`` = the crop box [x0, y0, side] in the photo.
    A segmenter can miss a face (dark skin in low light, a turned head); this region cannot, so the
    animated region is never empty.
    """
    ox, oy, side = pixel_box(box)                 # the integer box `crop.crop` cuts
    k = size / side
    if getattr(face, "landmarks", None) is not None:
        pts = (np.asarray(face.landmarks)[:, :2] - [ox, oy]) * k
        hull = convex_hull(pts)
        if len(hull) >= 3:
            return _polygon_mask(hull, size)
    fb = np.asarray(getattr(face, "box", face), np.float64)[:4]
    cx, cy = ((fb[0] + fb[2]) / 2 - ox) * k, ((fb[1] + fb[3]) / 2 - oy) * k
    rx, ry = max(1.0, (fb[2] - fb[0]) / 2 * k), max(1.0, (fb[3] - fb[1]) / 2 * k)
    c = np.arange(size, dtype=np.float64) + 0.5
    xx, yy = np.meshgrid(c, c)
    return (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0).astype(np.float32)


class PortraitMasker:
    """``masker(image)`` → float32 (H, W) foreground probability in [0, 1] for an RGB uint8 image.

    Default: ``selfie_segmentation.tflite`` (whole image stretched to 256×256, RGB in
    [0, 1], output already a probability, resized back bilinearly). Other models via
    `from_file`.
    """

    def __init__(self, model_path=None, num_threads: int | None = None):
        self.model_path = Path(model_path or WEIGHTS_DIR / "selfie_segmentation.tflite")
        self.num_threads = num_threads
        self._run = None

    @classmethod
    def from_file(cls, path, input_size: int = 512, foreground_classes=None,
                  mean=None, std=None) -> "PortraitMasker":
        """A masker backed by a ``.tflite`` or TorchScript (``.pt``/``.ts``/``.pth``) model.

        TFLite: same contract as the default (RGB [0, 1] at the model's own input size,
        one-channel probability out). TorchScript: input (1, 3, input_size, input_size)
        float RGB in [0, 1] (or ``(x - mean) / std`` when given, e.g. ImageNet statistics
        for BiSeNet face parsing); output (1, 1, h, w) probability — treated as logits if
        any value leaves [0, 1] — or (1, C, h, w) logits, softmaxed and summed over
        ``foreground_classes``. A tuple/list output uses its first element (BiSeNet's
        main head). Raises EmoPortraitsError for a missing or unloadable file.
        """
        path = Path(path)
        if not path.is_file():
            raise EmoPortraitsError(f"mask model not found: {path}")
        self = cls(path)
        suffix = path.suffix.lower()
        if suffix == ".tflite":
            self._load_tflite()  # now, so that a bad file fails here and not mid-video
        elif suffix in (".pt", ".ts", ".pth", ".jit"):
            try:
                module = torch.jit.load(str(path), map_location="cpu").eval()
            except Exception as e:  # torch raises RuntimeError/ValueError/pickle errors alike
                raise EmoPortraitsError(f"{path} is not a TorchScript model (export it with "
                                        f"torch.jit.script or torch.jit.trace): {e}") from e
            self._run = self._torch_runner(module, int(input_size), foreground_classes, mean, std)
        else:
            raise EmoPortraitsError(f"{path}: unknown mask model type '{suffix}'; "
                                    "use .tflite or TorchScript .pt/.ts")
        return self

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = as_rgb(image)
        if self._run is None:
            self._load_tflite()
        small = np.asarray(self._run(image), dtype=np.float32)
        return np.clip(resize(small, image.shape[:2]), 0.0, 1.0)

    def _load_tflite(self) -> None:
        it = load_tflite(self.model_path, self.num_threads)
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        _, h, w, _ = (int(v) for v in inp["shape"])

        def run(image):
            x = resize(image, (h, w)).astype(np.float32)[None] / 255.0
            it.set_tensor(inp["index"], x)
            it.invoke()
            y = it.get_tensor(out["index"])[0]
            return y[..., 0] if y.ndim == 3 else y
        self._run = run

    @staticmethod
    def _torch_runner(module, size, foreground_classes, mean, std):
        m = torch.tensor(mean if mean is not None else (0.0, 0.0, 0.0), dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std if std is not None else (1.0, 1.0, 1.0), dtype=torch.float32).view(1, -1, 1, 1)

        def run(image):
            x = torch.from_numpy(resize(image, (size, size))).permute(2, 0, 1)[None].float() / 255.0
            x = (x - m) / s
            with torch.inference_mode():
                y = module(x)
            if isinstance(y, (tuple, list)):
                y = y[0]
            if y.ndim != 4 or y.shape[0] != 1:
                raise EmoPortraitsError(f"mask model returned shape {tuple(y.shape)}; expected (1, C, H, W)")
            y = y.float()
            if foreground_classes is not None:
                y = torch.softmax(y, dim=1)[0, list(foreground_classes)].sum(0)
            elif y.shape[1] == 1:
                y = y[0, 0]
                if y.min() < 0 or y.max() > 1:
                    y = torch.sigmoid(y)
            else:
                raise EmoPortraitsError(f"mask model outputs {y.shape[1]} classes: pass foreground_classes")
            return y.numpy()
        return run
