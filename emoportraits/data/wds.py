"""Prepared training data as WebDataset tar shards (format ``emoportraits-wds`` v2).

A shard is a plain POSIX tar file. Every *frame* is one WebDataset sample whose key is
``CLIP/FFFFFF`` (the clip key — its video's path under the video folder, without extension — and
the frame's number in the clip), with the members::

    CLIP/000003.jpg            the crop, JPEG quality 95, RGB, resolution × resolution
    CLIP/000003.mask.png       its portrait mask, 8-bit grayscale PNG (probability × 255)
    CLIP/000003.landmarks.npy  (468, 3) float16 face mesh in crop coordinates
    CLIP/000003.audio.npy      (with --with-audio) int16 16 kHz mono: this frame's slice of the video's audio
    CLIP/000003.json           metadata: clip, frame, n_frames, frame_index (source frame), pose (raw9),
                               box, score, dataset, identity, video, source, fps, source_size, resolution,
                               crop_scale, skipped, template_digest (+ audio_start, audio_sample_rate)

Every sample has the same fields, so ``webdataset.WebDataset(urls)`` and Hugging Face
``datasets.load_dataset("webdataset", data_files=...)`` read the shards as they are (a row per frame).
The frames of a clip are consecutive samples of one shard, so a reader that streams a shard sees
whole clips (`iter_clips`). Audio slices partition the video's audio: frame 0's slice starts at
sample 0, frame i's at ``audio_start`` = round(frame_index / fps · rate), the last runs to the end —
concatenated in order they give the whole track back, bit for bit (`Clip.audio`).

Shards are written to a hidden temporary file, fsync'd and renamed into place, so a crash leaves
either a whole shard or none.
"""
from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np

from .shards import ShardWriter, decode_image, npy_bytes

__all__ = ["FORMAT", "VERSION", "SampleWriter", "Clip", "iter_clips", "read_clip_at", "split_member"]

FORMAT = "emoportraits-wds"
VERSION = 2
_BLOCK = 512
_MEMBER = re.compile(r"^(?P<clip>.+)/(?P<frame>\d{6})\.(?P<field>[^/]+)$")
FIELDS = ("jpg", "mask.png", "landmarks.npy", "audio.npy", "json")


def split_member(name: str):
    """``CLIP/000003.mask.png`` → (CLIP, 3, "mask.png"); None for a name of another layout."""
    m = _MEMBER.match(name)
    return None if m is None else (m["clip"], int(m["frame"]), m["field"])


# ---- writing ------------------------------------------------------------------------------------

class SampleWriter(ShardWriter):
    """Append whole clips (one sample per frame) to tar shards of about ``max_bytes`` each.

    A clip is durable once its shard is committed (when the shard grows past ``max_bytes``, on
    `commit` and on `close`); ``on_commit(shard, records)`` then receives the shard's path relative
    to ``root`` and a record per clip: key, shard, start/end (the byte range of the clip's members),
    n_frames, landmarks (offset/size of frame 0's landmarks), plus the ``extra`` given to `add_clip`.
    """

    def add_clip(self, key: str, frames: list[bytes], masks: list[bytes], poses: np.ndarray,
                 landmarks: np.ndarray, meta: dict, extra: dict | None = None,
                 audio: np.ndarray | None = None, audio_rate: int = 16000) -> dict:
        """Write one clip: JPEG frames, PNG masks, (n, 9) raw9 poses, (n, 468, 3) landmarks, clip
        metadata (``frame_indices``, ``boxes``, ``scores``, ``fps`` …) and optionally the video's
        whole int16 ``audio`` track, sliced over the frames (module docstring)."""
        n = len(frames)
        poses = np.asarray(poses, np.float32)
        landmarks = np.asarray(landmarks, np.float16)
        if n == 0 or len(masks) != n or len(poses) != n or len(landmarks) != n:
            raise ValueError(f"{key}: frames, masks, poses and landmarks must have the same length > 0")
        if self._tar is None:
            self._open()
        key = key.strip("/")
        meta = dict(meta or {})
        per_frame = {k: meta.pop(k) for k in ("frame_indices", "boxes", "scores") if k in meta}
        indices = per_frame.get("frame_indices", list(range(n)))
        starts = None
        if audio is not None:
            fps = float(meta.get("fps") or 0)
            if fps <= 0:
                raise ValueError(f"{key}: audio needs the video's frame rate")
            starts = [0] + [min(int(round(i / fps * audio_rate)), len(audio)) for i in indices[1:]] + [len(audio)]
            starts = np.maximum.accumulate(starts).tolist()      # never a negative slice
        start = self.size
        lm0 = None
        for i in range(n):
            name = f"{key}/{i:06d}"
            self._add(f"{name}.jpg", frames[i])
            self._add(f"{name}.mask.png", masks[i])
            at = self._add(f"{name}.landmarks.npy", npy_bytes(landmarks[i]))
            lm0 = lm0 or at
            info = dict(meta, clip=key, frame=i, n_frames=n, frame_index=int(indices[i]),
                        pose=[float(v) for v in poses[i]])
            if "boxes" in per_frame:
                info["box"] = per_frame["boxes"][i]
            if "scores" in per_frame:
                info["score"] = per_frame["scores"][i]
            if starts is not None:
                self._add(f"{name}.audio.npy", npy_bytes(np.asarray(audio[starts[i]:starts[i + 1]], np.int16)))
                info.update(audio_start=starts[i], audio_sample_rate=int(audio_rate))
            self._add(f"{name}.json", json.dumps(info, separators=(",", ":")).encode())
        record = dict(extra or {}, key=key, shard=f"shards/{self._name}", start=start, end=self.size,
                      n_frames=n, landmarks=lm0)
        self._records.append(record)
        if self.size >= self.max_bytes:
            self.commit()
        return record


class Clip:
    """One clip's samples in memory, undecoded: ``members[field][i]`` bytes, ``info[i]`` the frame
    jsons. Decoding happens only for the frames asked for."""

    __slots__ = ("key", "members", "info", "span", "ordinal", "shard")

    def __init__(self, key: str, members: dict, info: list, span=(0, 0), ordinal: int = 0, shard: int = -1):
        self.key, self.members, self.info, self.span, self.ordinal = key, members, info, tuple(span), ordinal
        self.shard = shard          # the shard's number in the data set's list, where the reader knows it

    @property
    def n_frames(self) -> int:
        return len(self.info)

    @property
    def meta(self) -> dict:
        """Clip-level metadata (frame 0's json) with the per-frame lists of the old header."""
        h = dict(self.info[0])
        h.update(key=self.key, frame_indices=[i["frame_index"] for i in self.info],
                 boxes=[i.get("box") for i in self.info], audio="audio.npy" in self.members)
        return h

    @property
    def nbytes(self) -> int:
        return sum(len(b) for v in self.members.values() for b in v)

    def _pick(self, field: str, which) -> list[bytes]:
        items = self.members[field]
        return items if which is None else [items[int(k)] for k in np.atleast_1d(which)]

    def frames(self, which=None) -> np.ndarray:
        return np.stack([decode_image(b) for b in self._pick("jpg", which)])

    def masks(self, which=None) -> np.ndarray:
        return np.stack([decode_image(b) for b in self._pick("mask.png", which)])

    def landmarks(self, which=None) -> np.ndarray:
        return np.stack([np.load(io.BytesIO(b)) for b in self._pick("landmarks.npy", which)]).astype(np.float32)

    def poses(self, which=None) -> np.ndarray:
        sel = range(self.n_frames) if which is None else np.atleast_1d(which)
        return np.asarray([self.info[int(k)]["pose"] for k in sel], np.float32)

    def audio(self) -> np.ndarray | None:
        """The video's whole int16 audio track (the frames' slices concatenated), or None."""
        if "audio.npy" not in self.members:
            return None
        return np.concatenate([np.load(io.BytesIO(b)) for b in self.members["audio.npy"]])


def _finish(key, members, info, start, end, ordinal) -> Clip:
    missing = [f for f in ("jpg", "mask.png", "landmarks.npy") if len(members.get(f, ())) != len(info)]
    if missing:
        raise ValueError(f"{key}: incomplete clip (fields {missing} do not match its {len(info)} frames)")
    return Clip(key, members, info, (start, end), ordinal)


def iter_clips(fileobj, base: int = 0, *, keep=None, first_ordinal: int = 0):
    """Stream a shard (any readable file object positioned at a member header, ``base`` bytes
    into the shard) and yield its clips as `Clip`s, with ``span`` the byte range in the shard and
    ``ordinal`` the clip's number in the shard (counting from ``first_ordinal`` where reading began).
    ``keep(ordinal)`` — when given — says which clips to read (others are skipped undecoded)."""
    tar = tarfile.open(fileobj=fileobj, mode="r|")
    key, members, info, start, end, ordinal, wanted = None, {}, [], 0, 0, first_ordinal - 1, True
    for m in tar:
        parts = split_member(m.name)
        if parts is None or not m.isfile():
            continue
        clip, _, field = parts
        if clip != key:
            if key is not None and wanted:
                yield _finish(key, members, info, start, end, ordinal)
            key, members, info, start, ordinal = clip, {}, [], base + m.offset, ordinal + 1
            wanted = keep is None or keep(ordinal)
        end = base + m.offset_data + -(-m.size // _BLOCK) * _BLOCK
        if not wanted:
            continue
        data = tar.extractfile(m).read()
        if field == "json":
            info.append(json.loads(data))
        else:
            members.setdefault(field, []).append(data)
    if key is not None and wanted:
        yield _finish(key, members, info, start, end, ordinal)


def read_clip_at(path, start: int, end: int) -> Clip:
    """The clip stored in bytes [start, end) of shard ``path`` (a `Clip.span`)."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    if len(data) != end - start:
        raise OSError(f"{path}: truncated shard (wanted bytes {start}…{end})")
    clips = list(iter_clips(io.BytesIO(data + b"\0" * (2 * _BLOCK)), start))
    if len(clips) != 1:
        raise ValueError(f"{path}: bytes {start}…{end} are not one clip")
    return clips[0]
