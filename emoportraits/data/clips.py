"""Random access to the clips of a prepared (WebDataset) folder, for small data sets and tools.

    store = ClipStore("data/hdtf")           # or open_prepared("data/hdtf")
    clip = store.read_clip(3)                # frames, masks, poses, landmarks, info

Training on large sets streams the shards instead (`emoportraits.data.stream`); this reader is for
what needs clip i by number — the speech and pose windows, the head-pose network, the mouth PCA,
benchmarks. It scans the tar headers of every shard once (no member data is read) to find each
clip's byte range, then reads a clip with one seek. The API is that of the old ``ShardDataset``.
"""
from __future__ import annotations

import collections
import json
import os
import tarfile
import threading
from pathlib import Path

import numpy as np

from .parts import read_dataset
from .shards import ClipInfo
from .wds import Clip, read_clip_at, split_member

__all__ = ["ClipStore", "open_prepared", "scan_shard"]


def scan_shard(path) -> list[tuple[str, int, int, int, str]]:
    """(clip key, start, end, n_frames, identity) of every clip in a shard, from its headers (and
    the first frame's json of each clip)."""
    clips: list[list] = []
    with tarfile.open(path, mode="r:") as tar:
        for m in tar:
            parts = split_member(m.name)
            if parts is None or not m.isfile():
                continue
            key, _, field = parts
            end = m.offset_data + -(-m.size // 512) * 512
            if not clips or clips[-1][0] != key:
                clips.append([key, m.offset, end, 0, None])
            clips[-1][2] = end
            if field == "json":
                clips[-1][3] += 1
                if clips[-1][4] is None:
                    clips[-1][4] = json.loads(tar.extractfile(m).read())["identity"]
    return [tuple(c) for c in clips]


class ClipStore:
    """Clip ``i`` of a prepared folder by number (clips sorted by key, like the old index)."""

    def __init__(self, root, *, template=None, cache_clips: int = 8):
        self.root = Path(root)
        self.info = read_dataset(self.root)
        self.dataset: str = self.info["dataset"]
        self.resolution: int = int(self.info["resolution"])
        self.identities: list[str] = list(self.info["identities"])
        self.shards: list[str] = [s["path"] for s in self.info["shards"]]
        rows = sorted((key, s, start, end, n, who) for s, path in enumerate(self.shards)
                      for key, start, end, n, who in scan_shard(self.root / path))
        self.keys = [r[0] for r in rows]
        self.shard_ids = np.asarray([r[1] for r in rows], np.int64)
        self.spans = np.asarray([(r[2], r[3]) for r in rows], np.int64).reshape(-1, 2)
        self.n_frames = np.asarray([r[4] for r in rows], np.int64)
        ident = {name: i for i, name in enumerate(self.identities)}
        self.identity_ids = np.asarray([ident.get(r[5], -1) for r in rows], np.int64)
        self.template = np.asarray(self.info["template"], np.float64)
        self._relabel = None
        if template is not None:
            from .pose_labels import load_template
            t = load_template(template) if isinstance(template, (str, os.PathLike)) \
                else np.asarray(template, np.float64)
            if t.shape != self.template.shape:
                raise ValueError(f"template must be (468, 3), got {t.shape}")
            if not np.allclose(t, self.template, atol=1e-6):
                self._relabel = t
        self._cache: collections.OrderedDict[int, Clip] = collections.OrderedDict()
        self._cache_size = int(cache_clips)
        self._lock = threading.Lock()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"], state["_lock"] = collections.OrderedDict(), None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return (f"ClipStore({str(self.root)!r}: {self.dataset}, {len(self)} clips, {self.total_frames} frames, "
                f"{len(self.identities)} identities, {self.resolution}²)")

    @property
    def total_frames(self) -> int:
        return int(self.n_frames.sum())

    def _check(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"clip {i} out of range (0 … {n - 1})")
        return int(i) % n

    def clip(self, i: int) -> Clip:
        """Clip ``i``'s samples (a few recent clips are kept in memory)."""
        i = self._check(i)
        c = self._cache.get(i)
        if c is None:
            start, end = (int(v) for v in self.spans[i])
            c = read_clip_at(self.root / self.shards[int(self.shard_ids[i])], start, end)
            with self._lock:
                self._cache[i] = c
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return c

    def header(self, i: int) -> dict:
        """Clip-level metadata: frame 0's json with frame_indices, boxes and ``audio`` (present or not)."""
        return self.clip(i).meta

    def clip_info(self, i: int) -> ClipInfo:
        i = self._check(i)
        h = self.header(i)
        return ClipInfo(index=i, key=self.keys[i], dataset=h["dataset"], identity=h["identity"],
                        identity_id=int(self.identity_ids[i]), video=h["video"], clip=self.keys[i].rsplit("/", 1)[-1],
                        n_frames=int(self.n_frames[i]), fps=float(h["fps"]), frame_indices=list(h["frame_indices"]))

    def read_frames(self, i: int, which=None) -> np.ndarray:
        """uint8 (k, R, R, 3) crops of clip ``i`` (all, or the frame numbers in ``which``)."""
        return self.clip(i).frames(which)

    def read_masks(self, i: int, which=None) -> np.ndarray:
        return self.clip(i).masks(which)

    def read_landmarks(self, i: int, which=None) -> np.ndarray:
        return self.clip(i).landmarks(which)

    def read_poses(self, i: int, which=None) -> np.ndarray:
        """float32 (k, 9) raw9 labels (relabelled from the landmarks if another template was given)."""
        if self._relabel is not None:
            from .pose_labels import fit_pose
            return fit_pose(self.read_landmarks(i, which), self._relabel)
        return self.clip(i).poses(which)

    def read_audio(self, i: int) -> np.ndarray:
        """The clip's video audio, float32 in [-1, 1] (16 kHz mono)."""
        pcm = self.clip(i).audio()
        if pcm is None:
            raise ValueError(f"{self.keys[i]}: no audio stored (prepare with --with-audio)")
        return pcm.astype(np.float32) / 32767.0

    def read_clip(self, i: int, which=None) -> dict:
        return {"frames": self.read_frames(i, which), "masks": self.read_masks(i, which),
                "poses": self.read_poses(i, which), "landmarks": self.read_landmarks(i, which),
                "info": self.clip_info(i)}


def open_prepared(root, **kwargs) -> ClipStore:
    """A prepared folder for random access; an old-layout folder is refused with the conversion command."""
    return root if isinstance(root, ClipStore) else ClipStore(root, **kwargs)
