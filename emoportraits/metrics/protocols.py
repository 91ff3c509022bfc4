"""The evaluation protocols of SPEC §6 on folders of files; the bench/eval_*.py scripts call these.

Everything is scored on model-resolution face crops (the model's own output, not pasted back):
drivers and ground-truth frames are cropped exactly as the pipeline crops drivers. Metrics whose
weights are not given (LPIPS, FID, an ArcFace embedder) or whose package is missing (dlib) are
reported as n/a with the reason in the notes, never silently skipped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import EmoPortraitsError, MediaError
from ..media import iter_frames, probe_video
from ..media.crop import BoxSmoother, crop, square_crop_box
from ..pipelines import ReenactOptions
from .fid import FeatureExtractor, FIDConfig, fid_from_features
from .identity import cosine_similarity, make_face_embedder
from .image import l1_error, psnr, ssim
from .landmarks import LandmarkDetector
from .lpips import LPIPS
from .report import mean


@dataclass
class EvalConfig:
    """Options shared by the protocols (the scripts' command-line flags)."""
    max_frames: int | None = 32           # frames read per driver / held-out video / speech clip
    frame_stride: int = 1                 # use every k-th frame (long clips on a small machine)
    batch_size: int = 8                   # frames rendered per model call
    device: str = "cpu"
    smooth: float = 0.5                   # crop-box smoothing over driver frames (as the pipeline)
    crop_scale: float = 2.2
    lpips_weights: str | None = None      # state dict file, see emoportraits.metrics.lpips
    lpips_backbone: str = "alex"
    face_embedder: str | None = "dlib"    # "dlib", a TorchScript file (ArcFace/VGGFace2 …), or None = off
    fid_extractor: str | None = None      # TorchScript file: images → features (Inception pool3)
    fid_input_size: int = 299
    landmarks: bool = True                # AKD and FP/FV/MP/MV with the shipped face mesh
    progress: bool = True

    def validate(self) -> None:
        if self.max_frames is not None and self.max_frames < 2:
            raise ValueError(f"max_frames must be >= 2 (a source frame and a target), got {self.max_frames}")
        if self.frame_stride < 1 or self.batch_size < 1:
            raise ValueError("frame_stride and batch_size must be >= 1")


class Scorers:
    """The metric networks, built once and only when enabled; ``notes`` says what is off and why."""

    def __init__(self, cfg: EvalConfig):
        self.cfg, self.notes = cfg, []
        self.lpips = self.embedder = self.fid = None
        if cfg.lpips_weights:
            self.lpips = LPIPS.from_file(cfg.lpips_weights, cfg.lpips_backbone).to(cfg.device)
        else:
            self.notes.append("LPIPS: n/a — pass --lpips-weights FILE (layout: emoportraits.metrics.lpips)")
        if cfg.face_embedder:
            try:
                self.embedder = make_face_embedder(cfg.face_embedder, cfg.device)
            except EmoPortraitsError as e:
                self.notes.append(f"CSIM: n/a — {e}")
        else:
            self.notes.append("CSIM: n/a — disabled (--face-embedder none)")
        if cfg.fid_extractor:
            self.fid = FeatureExtractor(cfg.fid_extractor, FIDConfig(input_size=cfg.fid_input_size), cfg.device)
        else:
            self.notes.append("FID: n/a — pass --fid-extractor FILE (a TorchScript Inception feature network)")
        self.landmarks = LandmarkDetector(crop_scale=cfg.crop_scale) if cfg.landmarks else None

    def csim(self, outputs: np.ndarray, reference: np.ndarray) -> float:
        """Mean CSIM of output crops (T, S, S, 3) against one reference crop (S, S, 3) or per-frame crops."""
        if self.embedder is None:
            return float("nan")
        ref = self.embedder(reference if reference.ndim == 4 else reference[None])
        return mean(cosine_similarity(self.embedder(outputs), ref))

    def features(self, crops: np.ndarray) -> np.ndarray | None:
        return None if self.fid is None else self.fid(to_tensor(crops))


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """uint8 (T, S, S, 3) → float (T, 3, S, S) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255


def list_files(folder: str | os.PathLike, extensions: tuple[str, ...], what: str,
               limit: int | None = None) -> list[Path]:
    """Sorted files of ``folder`` with one of ``extensions``; a clear error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaError(f"{folder}: no such folder of {what}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions)
    if not files:
        raise MediaError(f"{folder}: no {what} found (looked for {', '.join(extensions)})")
    return files[:limit] if limit else files


def video_crops(pipeline, path: Path, cfg: EvalConfig) -> tuple[np.ndarray, float]:
    """Face crops (T, S, S, 3) of a video's frames as the pipeline crops drivers, and the fps they have."""
    size = pipeline.model.config.image_size
    smoother, box, crops = BoxSmoother(cfg.smooth), None, []
    limit = None if cfg.max_frames is None else cfg.max_frames * cfg.frame_stride
    for i, frame in enumerate(iter_frames(path, max_frames=limit)):
        faces = pipeline.detector.detect(frame)
        if faces:                       # every frame updates the smoother, as in the pipeline
            box = smoother.update(square_crop_box(faces[0], (frame.shape[1], frame.shape[0]), cfg.crop_scale))
        elif box is None:
            raise MediaError(f"{path}: no face in frame {i}; evaluation videos must show a face from the start")
        if i % cfg.frame_stride == 0:
            crops.append(crop(frame, box, size))
    if len(crops) < 2:
        raise MediaError(f"{path}: fewer than 2 frames to evaluate")
    return np.stack(crops), probe_video(path).fps / cfg.frame_stride


@torch.inference_mode()
def motion(model, crops: np.ndarray, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """θ (T, 4, 4) and z (T, z_dim) of crops, by the model's head-pose net and expression encoder."""
    thetas, zs = [], []
    for i in range(0, len(crops), batch_size):
        x = to_tensor(crops[i:i + batch_size]).to(model.device, model.dtype)
        theta = model.head_pose(x)
        thetas.append(theta.float().cpu())
        zs.append(model.expression(x, theta).float().cpu())
    return torch.cat(thetas), torch.cat(zs)


@torch.inference_mode()
def render(pipeline, avatar, thetas: torch.Tensor, zs: torch.Tensor, batch_size: int) -> np.ndarray:
    """The avatar rendered with target poses (T, 4, 4) and expressions (T, z_dim) → uint8 (T, S, S, 3)."""
    model, out = pipeline.model, []
    for i in range(0, len(thetas), batch_size):
        images = model.drive(avatar, z=zs[i:i + batch_size].to(model.device, model.dtype),
                             theta=thetas[i:i + batch_size].to(model.device))
        out.append(pipeline._to_uint8(images))
    return np.concatenate(out)


def transfer(pipeline, avatar, thetas: torch.Tensor, zs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's relative motion transfer (driver motion since its first frame) for a whole clip."""
    dev = avatar.theta.device
    thetas, zs = thetas.to(dev), zs.to(dev, avatar.z.dtype)
    theta, z = pipeline.transfer(avatar, thetas, zs, (thetas[:1], zs[:1]), ReenactOptions(relative=True))
    return theta.float().cpu(), z.float().cpu()


@dataclass
class Accumulator:
    """Per-method metric values over clips/pairs (means at the end) and FID features."""
    values: dict = field(default_factory=dict)
    features: list = field(default_factory=list)

    def add(self, **metrics) -> None:
        for k, v in metrics.items():
            self.values.setdefault(k, []).append(v)

    def row(self, method: str) -> dict:
        return {"method": method, **{k: mean(v) for k, v in self.values.items()}}


def pixel_metrics(scorers: Scorers, outputs: np.ndarray, targets: np.ndarray, masks: np.ndarray) -> dict:
    """PSNR / SSIM / L1 / LPIPS raw and with the target's portrait mask (per-frame means)."""
    p, t = to_tensor(outputs).double(), to_tensor(targets).double()
    m = torch.from_numpy(masks).double()[:, None]
    out = {"psnr": mean(psnr(p, t)), "ssim": mean(ssim(p, t)), "l1": mean(l1_error(p, t)),
           "psnr_m": mean(psnr(p, t, m)), "ssim_m": mean(ssim(p, t, mask=m)), "l1_m": mean(l1_error(p, t, m))}
    if scorers.lpips is not None:
        with torch.inference_mode():
            dev = scorers.cfg.device
            out["lpips"] = mean(scorers.lpips(p.float().to(dev), t.float().to(dev)).cpu())
            out["lpips_m"] = mean(scorers.lpips((p * m).float().to(dev), (t * m).float().to(dev)).cpu())
    return out


def fid_of(acc: Accumulator, real: list) -> float:
    if not acc.features or not real:
        return float("nan")
    return fid_from_features(np.concatenate(acc.features), np.concatenate(real))


def progress(iterable, total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, disable=not enabled)
