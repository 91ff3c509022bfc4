"""Training clips of the speech-driven mode (SPEC §4): windows of consecutive frames with the audio
features aligned to them.

    data = SpeechClipDataset("data/vox_audio", WhisperFeatures("openai/whisper-tiny"), clip_frames=(50, 200))
    item = data[0]          # or data[(0, draw_seed)]

The prepared set must come from ``emoportraits prepare-data --with-audio --stride 1`` (consecutive
frames, the clip's audio stored in its shard). Item ``i`` is a window of ``clip_frames`` (drawn in
[lo, hi], the whole clip when it is shorter than ``lo``; at least 2 frames) consecutive stored frames
of clip ``i`` at a random start; everything random is a function of (``seed``, ``i``, the sampler's
per-draw seed), so a resumed run sees the same windows.

Audio: the Whisper features of the clip's whole audio are computed once per clip (per process) and
cached in memory (on the CPU); frame j of the window — source video frame ``frame_indices[j]`` —
gets ``align_to_frames``' k feature vectors of that source frame at the clip's fps.
"""
from __future__ import annotations

import io
import threading

import numpy as np
import torch
from torch.utils.data import Dataset

from ..audio import align_to_frames
from ..models.geometry import theta_from_raw9
from .pairs import as_shards, split_key, frames_to_tensor

__all__ = ["SpeechClipDataset", "collate_clips"]


class SpeechClipDataset(Dataset):
    """Item: ``images`` (T, 3, R, R) float [0, 1], ``masks`` (T, 1, R, R), ``poses`` (T, 9) raw9,
    ``thetas`` (T, 4, 4), ``audio`` (T, k, D) aligned Whisper features, ``clip``, ``start`` (first
    stored frame of the window), ``frame_indices`` (T,) source video frame numbers, ``fps``.

    ``whisper``: a ``WhisperFeatures`` (or any callable: 16 kHz float samples → (N, D) at 50 Hz).
    ``frames_per_step``: k of ``align_to_frames`` (SpeechEncoderConfig.audio_frames_per_step).
    ``segment=(a, b)``: only the frames [a·n, b·n) of every clip of n frames are used — e.g. (0, 0.75)
    to train and (0.75, 1) to test on the held-out end of the same videos.
    Clips without stored audio, without a constant frame rate, or with fewer than 2 frames (in the
    segment) are left out.
    """

    def __init__(self, shards, whisper, clip_frames=(50, 200), resolution: int | None = None, seed: int = 0,
                 *, frames_per_step: int = 2, cache_size: int | None = None, segment=(0.0, 1.0)):
        self.shards = as_shards(shards)
        self.whisper = whisper
        lo, hi = (int(clip_frames), int(clip_frames)) if np.isscalar(clip_frames) else map(int, clip_frames)
        if lo < 2 or hi < lo:
            raise ValueError(f"clip_frames must be (lo, hi) with 2 <= lo <= hi, got {clip_frames!r}")
        self.clip_frames = (lo, hi)
        self.resolution = resolution
        self.seed = int(seed)
        self.k = int(frames_per_step)
        self.cache_size = cache_size
        self._cache: dict[int, torch.Tensor] = {}
        self._lock = threading.Lock()
        a, b = (float(v) for v in segment)
        if not 0.0 <= a < b <= 1.0:
            raise ValueError(f"segment must be (a, b) with 0 <= a < b <= 1, got {segment!r}")
        self.segment = (a, b)
        keep, dropped = [], 0
        for c in np.flatnonzero(self.shards.n_frames >= 2):
            h = self.shards.header(int(c))
            first, end = self.segment_range(int(c))
            if h.get("audio") and float(h.get("fps") or 0) > 0 and end - first >= 2:
                keep.append(int(c))
            else:
                dropped += 1
        self.clips = np.asarray(keep, np.int64)
        self.dropped = dropped
        if len(self.clips) == 0:
            raise ValueError(f"{self.shards.root}: no clip with audio, a constant frame rate and two or more "
                             f"frames in the segment {self.segment}; prepare it with "
                             f"`emoportraits prepare-data --with-audio --stride 1`")

    def segment_range(self, clip: int) -> tuple[int, int]:
        """[first, end) stored frames of ``clip`` inside the segment."""
        n = int(self.shards.n_frames[clip])
        return int(round(self.segment[0] * n)), int(round(self.segment[1] * n))

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"], state["_lock"] = {}, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.clips)

    def read_audio(self, clip: int) -> np.ndarray:
        """The clip's stored audio as float32 samples in [-1, 1] (16 kHz mono)."""
        if hasattr(self.shards, "read_audio"):
            return self.shards.read_audio(clip)
        h = self.shards.header(clip)             # an old-layout ShardDataset
        raw = self.shards._read(int(self.shards.shard_ids[clip]), *h["audio"])
        pcm = np.load(io.BytesIO(raw))
        return pcm.astype(np.float32) / 32767.0

    def features(self, clip: int) -> torch.Tensor:
        """(N, D) Whisper features of the clip's whole audio (computed once, cached on the CPU)."""
        feats = self._cache.get(clip)
        if feats is None:
            h = self.shards.header(clip)
            feats = self.whisper(self.read_audio(clip), int(h.get("audio_sample_rate", 16000)))
            feats = torch.as_tensor(feats).detach().float().cpu()
            with self._lock:
                if self.cache_size is not None and len(self._cache) >= self.cache_size:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[clip] = feats
        return feats

    def window(self, i: int, draw: int | None = None) -> tuple[int, int, int]:
        """(clip, start, length) of item ``i`` (with the sampler's per-draw seed ``draw``)."""
        clip = int(self.clips[i])
        first, end = self.segment_range(clip)
        n = end - first
        lo, hi = self.clip_frames
        rng = np.random.default_rng([self.seed, i] + ([draw] if draw is not None else []))
        length = n if n <= lo else int(rng.integers(lo, min(hi, n) + 1))
        start = first + int(rng.integers(n - length + 1))
        return clip, start, length

    def __getitem__(self, key) -> dict:
        i, draw = split_key(key)
        if not 0 <= i < len(self):
            raise IndexError(f"clip {i} out of range (0 … {len(self) - 1})")
        clip, start, length = self.window(i, draw)
        which = np.arange(start, start + length)
        h = self.shards.header(clip)
        fps = float(h["fps"])
        src = np.asarray(h["frame_indices"], np.int64)[which]
        feats = self.features(clip)
        audio = align_to_frames(feats, int(src.max()) + 1, fps, self.k)[torch.from_numpy(src)]
        images = frames_to_tensor(self.shards.read_frames(clip, which), self.resolution)
        masks = frames_to_tensor(self.shards.read_masks(clip, which), self.resolution)
        poses = torch.from_numpy(self.shards.read_poses(clip, which).astype(np.float32))
        return {"images": images, "masks": masks, "poses": poses, "thetas": theta_from_raw9(poses),
                "audio": audio.float(), "clip": clip, "start": start,
                "frame_indices": torch.from_numpy(src), "fps": fps}


def collate_clips(items: list[dict]) -> dict:
    """Batch windows of different lengths: every item is cut to the shortest one's T."""
    T = min(int(it["images"].shape[0]) for it in items)
    out = {}
    for name in ("images", "masks", "poses", "thetas", "audio", "frame_indices"):
        out[name] = torch.stack([it[name][:T] for it in items])
    for name in ("clip", "start"):
        out[name] = torch.tensor([it[name] for it in items])
    out["fps"] = torch.tensor([it["fps"] for it in items], dtype=torch.float64)
    return out
