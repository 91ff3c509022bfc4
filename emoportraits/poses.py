"""Head poses from speech: audio → `PoseGenerator` → a `PoseSequence` (what ``emoportraits poses``,
``speak --pose generated`` and the app use).

    seq = generate_poses(PoseGenerator.from_pretrained("MODEL/pose"), "MODEL/whisper", "speech.wav", seed=0)
    seq.save("poses.json"); seq.plot("poses.png")

A sequence is the head's motion since its first frame (frame 0 is the identity), in the main model's
θ convention (``emoportraits.models.geometry``): ``rotation`` R_t and ``translation`` τ_t of the rigid
part R·T(τ) of θ; ``theta(theta_source)`` puts the motion onto a portrait's own pose, θ_s·M_t.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .audio import SAMPLE_RATE, WhisperFeatures, align_to_frames, load_audio, n_frames_for
from .errors import EmoPortraitsError, MediaError
from .models.geometry import (apply_motion, matrix_to_angles, pose9_to_rigid, project_pose9, relative_pose9,
                              rigid_to_pose9)

__all__ = ["PoseSequence", "generate_poses", "SUFFIXES"]

SUFFIXES = (".json", ".npy")


@dataclass
class PoseSequence:
    """T frames of head motion: ``rotation`` (T, 3, 3), ``translation`` (T, 3) (crop units: the
    image's [-1, 1]), ``angles`` (T, 3) yaw/pitch/roll in degrees (R = Rz(yaw)·Ry(pitch)·Rx(roll)),
    ``fps``."""
    rotation: np.ndarray
    translation: np.ndarray
    angles: np.ndarray
    fps: float

    @classmethod
    def from_pose9(cls, x9, fps: float) -> "PoseSequence":
        """From (T, 9) poses (6D rotation + translation; the 6D part need not be orthonormal)."""
        x9 = torch.as_tensor(np.asarray(x9, np.float32))
        r, tau = pose9_to_rigid(x9)
        return cls(rotation=r.numpy(), translation=tau.numpy().copy(),
                   angles=np.degrees(matrix_to_angles(r).numpy()), fps=float(fps))

    def __len__(self) -> int:
        return len(self.rotation)

    @property
    def pose9(self) -> np.ndarray:
        """(T, 9) float32: 6D rotation (first two columns of R) + translation."""
        return rigid_to_pose9(torch.from_numpy(self.rotation), torch.from_numpy(self.translation)).numpy()

    @property
    def times(self) -> np.ndarray:
        """(T,) seconds of each frame."""
        return np.arange(len(self)) / self.fps

    def theta(self, theta_source: torch.Tensor) -> torch.Tensor:
        """The portrait's pose θ_s (1, 4, 4) moved by this motion: (T, 4, 4), θ_t = θ_s · M_t."""
        return apply_motion(theta_source, torch.from_numpy(self.pose9))[0]

    # ---- files --------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write .json (fps, per-frame yaw/pitch/roll in degrees, translation, rotation matrices and the
        (T, 9) poses) or .npy (the (T, 9) float32 poses; the frame rate is not stored)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in SUFFIXES:
            raise EmoPortraitsError(f"{path}: unsupported pose file type {suffix or '(none)'!r}; use .json or .npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npy":
            np.save(path, self.pose9.astype(np.float32), allow_pickle=False)
            return path
        data = {"format": "emoportraits-poses", "version": 1, "fps": self.fps, "frames": len(self),
                "convention": "motion since frame 0 in the θ convention: R = Rz(yaw)·Ry(pitch)·Rx(roll), "
                              "pose = R·T(translation); angles in degrees",
                "yaw_pitch_roll_deg": np.round(self.angles, 4).tolist(),
                "translation": np.round(self.translation, 6).tolist(),
                "rotation": np.round(self.rotation, 6).tolist(),
                "pose9": np.round(self.pose9, 6).tolist()}
        path.write_text(json.dumps(data))
        return path

    @classmethod
    def load(cls, path, fps: float = 25.0) -> "PoseSequence":
        """Read a file written by `save` (``fps`` is used for .npy files, which do not store it)."""
        path = Path(path)
        if not path.is_file():
            raise MediaError(f"{path}: no such pose file")
        if path.suffix.lower() == ".npy":
            x9 = np.load(path, allow_pickle=False)
        elif path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            x9, fps = np.asarray(data["pose9"], np.float32), float(data["fps"])
        else:
            raise EmoPortraitsError(f"{path}: unsupported pose file type; use .json or .npy")
        if x9.ndim != 2 or x9.shape[1] != 9:
            raise MediaError(f"{path}: expected (T, 9) poses, got shape {x9.shape}")
        return cls.from_pose9(x9, fps)

    def plot(self, path) -> Path:
        """A PNG of yaw/pitch/roll (degrees) and translation over time."""
        import matplotlib
        matplotlib.use("Agg", force=False)        # no display needed
        from matplotlib.figure import Figure

        path = Path(path)
        fig = Figure(figsize=(8, 5), dpi=100)
        top, bottom = fig.subplots(2, 1, sharex=True)
        t = self.times
        for i, name in enumerate(("yaw", "pitch", "roll")):
            top.plot(t, self.angles[:, i], label=name)
        top.set_ylabel("rotation (degrees)")
        for i, name in enumerate("xyz"):
            bottom.plot(t, self.translation[:, i], label=name)
        bottom.set_ylabel("translation (crop units)")
        bottom.set_xlabel("time (s)")
        for ax in (top, bottom):
            ax.legend(loc="upper right", fontsize=8)
            ax.grid(alpha=0.3)
        fig.suptitle(f"generated head motion: {len(self)} frames at {self.fps:g} fps")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
        return path


@torch.inference_mode()
def generate_poses(pose_model, whisper, audio, fps: float = 25.0, seed: int | None = None,
                   temperature: float = 1.0, n_frames: int | None = None, initial_pose=None, *,
                   features: torch.Tensor | None = None) -> PoseSequence:
    """Head motion for ``audio`` at ``fps``: one pose per video frame, round(seconds · fps) frames
    (or ``n_frames``), the first one the identity.

    ``pose_model``: a `PoseGenerator`. ``whisper``: a `WhisperFeatures`, or a Hub id / folder of the
    Whisper model it was trained with (any callable samples → (N, D) features with a ``dim``). ``audio``: a file (audio, or a video with sound) or 16 kHz mono
    float samples. ``seed``: the noise draw (None: a random one); ``temperature``: its scale (0 = the
    deterministic, most likely motion; larger = livelier). ``initial_pose``: the portrait's absolute
    head pose (9,) (6D rotation + translation in the labels' canonical frame:
    ``EmoPortraitsPipeline.source_pose9`` of the prepared portrait, or ``initial_pose_for``, which gives
    None to a model without that input) for a model trained with it (``config.initial_pose``); None: a
    frontal, centred head. ``features``: the Whisper features (N, D) of ``audio`` when they are already
    computed (``speak`` shares one Whisper pass between the speech and the pose model); ``whisper`` is
    then not used and may be None.
    """
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    samples = np.asarray(audio, np.float32) if isinstance(audio, (np.ndarray, torch.Tensor)) else load_audio(audio)
    n = n_frames_for(len(samples) / SAMPLE_RATE, fps) if n_frames is None else int(n_frames)
    if n < 1:
        raise MediaError(f"{audio if isinstance(audio, (str, Path)) else 'the audio'}: shorter than one video frame")
    if features is None:
        if whisper is None:
            raise ValueError("generate_poses needs a Whisper model (whisper=) or its features of the audio (features=)")
        if isinstance(whisper, (str, os.PathLike)):
            whisper = WhisperFeatures(whisper)
    dim = whisper.dim if features is None else features.shape[-1]
    cfg = pose_model.config
    if dim != cfg.audio_dim:
        raise ValueError(f"the Whisper model gives {dim}-d features but the pose model expects "
                         f"{cfg.audio_dim}; pass the Whisper model it was trained with")
    device = next(pose_model.parameters()).device
    features = whisper(samples) if features is None else features
    aligned = align_to_frames(features, n, fps, k=cfg.audio_frames_per_step)[None].to(device)
    gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    noise = pose_model.make_noise(1, n, temperature, gen, device)
    init = None if initial_pose is None else torch.as_tensor(np.asarray(initial_pose, np.float32)).reshape(1, 9)
    x9 = pose_model.eval()(aligned.float(), noise, initial_pose=init)
    motion = relative_pose9(project_pose9(x9.float()))[0]           # frame 0 exactly the identity
    return PoseSequence.from_pose9(motion.cpu().numpy(), fps)
