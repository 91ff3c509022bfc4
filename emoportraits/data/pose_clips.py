"""Training clips of the head-pose generator (SPEC §5): windows of consecutive head-pose labels with
the audio features aligned to them — no images.

    data = PoseClipDataset("data/vox_audio", WhisperFeatures("openai/whisper-tiny"), clip_frames=(50, 100))
    item = data[0]          # or data[(0, draw_seed)]

Same prepared sets, windows and audio as `SpeechClipDataset` (``prepare-data --with-audio --stride
1``; random windows a function of (seed, index, draw); Whisper features cached per clip), plus:

* ``segment=(a, b)`` (of `SpeechClipDataset`): only the frames [a·n, b·n) of every clip are used.
* ``pose9`` (T, 9): the raw9 labels as poses (``geometry.pose9_from_raw9``, the scale dropped): the
  head's transformation from the canonical frame of the labels (a frontal, centred head is the
  identity) — the generator's target with ``reference="canonical"``.
* ``motion`` (T, 9): the same poses relative to the window's first frame (``geometry.relative_pose9``),
  so every window starts at (identity, 0) — the target with ``reference="first"``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..audio import align_to_frames
from ..models.geometry import pose9_from_raw9, relative_pose9
from .speech import SpeechClipDataset

__all__ = ["PoseClipDataset", "collate_pose_clips"]


class PoseClipDataset(SpeechClipDataset):
    """Item: ``poses`` (T, 9) raw9 labels, ``pose9`` (T, 9) poses, ``motion`` (T, 9) poses relative to the first frame,
    ``audio`` (T, k, D) aligned Whisper features, ``clip``, ``start``, ``frame_indices`` (T,), ``fps``."""

    def __init__(self, shards, whisper, clip_frames=(50, 100), seed: int = 0, *, frames_per_step: int = 2,
                 segment=(0.0, 1.0), cache_size: int | None = None):
        super().__init__(shards, whisper, clip_frames, None, seed, frames_per_step=frames_per_step,
                         cache_size=cache_size, segment=segment)

    def __getitem__(self, key) -> dict:
        i, draw = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), None)
        if not 0 <= i < len(self):
            raise IndexError(f"clip {i} out of range (0 … {len(self) - 1})")
        return self.read(*self.window(i, draw))

    def read(self, clip: int, start: int, length: int) -> dict:
        """The item of ``length`` stored frames of ``clip`` from ``start`` (a clip number of the shards)."""
        which = np.arange(start, start + length)
        h = self.shards.header(clip)
        fps = float(h["fps"])
        src = np.asarray(h["frame_indices"], np.int64)[which]
        audio = align_to_frames(self.features(clip), int(src.max()) + 1, fps, self.k)[torch.from_numpy(src)]
        poses = torch.from_numpy(self.shards.read_poses(clip, which).astype(np.float32))
        pose9 = pose9_from_raw9(poses)
        return {"poses": poses, "pose9": pose9, "motion": relative_pose9(pose9), "audio": audio.float(),
                "clip": clip, "start": start, "frame_indices": torch.from_numpy(src), "fps": fps}


def collate_pose_clips(items: list[dict]) -> dict:
    """Batch windows of different lengths: every item is cut to the shortest one's T."""
    T = min(int(it["poses"].shape[0]) for it in items)
    out = {name: torch.stack([it[name][:T] for it in items]) for name in ("poses", "pose9", "motion", "audio",
                                                                             "frame_indices")}
    for name in ("clip", "start"):
        out[name] = torch.tensor([it[name] for it in items])
    out["fps"] = torch.tensor([it["fps"] for it in items], dtype=torch.float64)
    return out
