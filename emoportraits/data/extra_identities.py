"""More training identities from what a small data set already has: mirrored videos and still
portraits under a slow random motion.

On a few videos the appearance path memorises the faces it sees: on a new face the output does not
depend on the source at all. Each mirrored video and each moving still is one more identity for the
pair sampler; pairs from a still portrait differ only by a zoom, roll and shift, so they teach the
network to carry the source's appearance through instead of recalling it. The clips are ordinary
videos: `emoportraits prepare-data` crops them and computes their masks and pose labels as for any
other video (mirroring needs no label arithmetic).

    from emoportraits.data.extra_identities import extra_identity_videos
    clips = extra_identity_videos(videos, stills, "work/extra")   # then prepare-data on them
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from ..media.video import VideoWriter, iter_frames, probe_video

__all__ = ["mirror_video", "still_clip", "extra_identity_videos"]

STILL_SIZE = 512


def mirror_video(video: str | Path, out: str | Path) -> Path:
    """Stream the left-right mirror image of ``video`` (no audio) into ``out``."""
    with VideoWriter(out, probe_video(video).fps, crf=16) as writer:
        for frame in iter_frames(video):
            writer.write(np.ascontiguousarray(frame[:, ::-1]))
    return Path(out)


def still_motion(frames: int, fps: float = 25.0, seed: int = 0) -> np.ndarray:
    """(frames, 4) smooth random (zoom, roll in radians, shift x, shift y in pixels of a 512² frame).

    Roll within ±6°, shift within ±2 % of the side, and zoom in [1.15, 1.25]: at least
    cos 6° + sin 6° + 2·2 % ≈ 1.14, so the turned and shifted picture always covers the frame (no
    black corners for the crop to learn)."""
    rng = np.random.default_rng(seed)
    phase, speed = rng.uniform(0, 2 * np.pi, 4), rng.uniform(0.5, 1.5, 4)
    wave = np.sin(2 * np.pi * 0.4 * speed * (np.arange(frames)[:, None] / fps) + phase)
    return np.stack([1.2 + 0.05 * wave[:, 0], np.deg2rad(6.0) * wave[:, 1],
                     0.02 * STILL_SIZE * wave[:, 2], 0.02 * STILL_SIZE * wave[:, 3]], axis=1)


def still_clip(image: str | Path, out: str | Path, frames: int = 48, fps: float = 25.0, seed: int = 0,
               mirror: bool = False) -> Path:
    """Stream a ``frames``-long 512² clip of the still ``image`` under `still_motion` to ``out``."""
    from PIL import Image

    img = Image.open(image).convert("RGB")
    side = min(img.size)     # centre square, so faces keep their proportions
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((STILL_SIZE, STILL_SIZE), Image.BICUBIC)
    if mirror:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    c = STILL_SIZE / 2
    with VideoWriter(out, fps, crf=16) as writer:
        for zoom, roll, dx, dy in still_motion(frames, fps, seed):
            # PIL maps each output pixel p to the input pixel A·p + t: A = R(roll)/zoom about the centre
            a, b = np.cos(roll) / zoom, np.sin(roll) / zoom
            matrix = (a, b, c - a * c - b * c + dx, -b, a, c + b * c - a * c + dy)
            writer.write(np.asarray(img.transform(img.size, Image.AFFINE, matrix, Image.BICUBIC)))
    return Path(out)


def extra_identity_videos(videos: Iterable[str | Path], stills: Iterable[str | Path], folder: str | Path,
                          still_frames: int = 48) -> list[Path]:
    """The mirror of every video and a moving clip of every still (and of its mirror), made once
    under ``folder`` (files already there are kept). Returns the clips' paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for v in map(Path, videos):
        out = folder / f"{v.stem}_mirrored.mp4"
        made.append(out if out.exists() else mirror_video(v, out))
    for i, image in enumerate(map(Path, stills)):
        for mirror in (False, True):
            out = folder / f"{image.stem}{'_mirrored' if mirror else ''}_still.mp4"
            made.append(out if out.exists() else still_clip(image, out, still_frames, seed=2 * i + mirror,
                                                            mirror=mirror))
    return made
