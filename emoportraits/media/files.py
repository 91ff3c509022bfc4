"""Files the media layer reads and writes: how they are named in messages, which ones are accepted, and
atomic writes through a hidden temp file beside the destination. Shared by images, video and audio."""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

import numpy as np

from ..errors import MediaError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")
AUDIO_EXTENSIONS = (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus")

def display_name(path) -> str:
    """How a file is named in messages: its file name."""
    return Path(path).name or str(path)


def existing_file(path, extensions: tuple[str, ...], kind: str) -> Path:
    """``path`` as a Path, or a MediaError when it is missing, a folder, or has the wrong extension.
    ``kind`` names the expected file: "image", "video", "video or audio"."""
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{path}: no such file; check the path")
    if p.is_dir():
        article = "an" if kind[0] in "aeiou" else "a"
        raise MediaError(f"{path}: is a folder, not {article} {kind} file; pass the path of a file")
    if p.suffix.lower() not in extensions:
        raise MediaError(f"{display_name(p)}: unsupported {kind} format '{p.suffix or '(no extension)'}'; "
                         f"use one of {', '.join(extensions)}")
    return p


def temp_path(dest: Path, suffix: str = "") -> Path:
    """A fresh hidden file name beside ``dest`` (same folder, so os.replace is atomic)."""
    return dest.with_name(f".{dest.stem}.{secrets.token_hex(4)}.tmp{suffix or dest.suffix}")


def unlink(*paths) -> None:
    for p in paths:
        if p is not None:
            with contextlib.suppress(OSError):
                os.unlink(p)


def check_frame(frame, name: str, what: str = "the image", channels: tuple = (3,)) -> np.ndarray:
    """The frame as a C-contiguous uint8 (H, W, 3) array, or a MediaError naming ``name``."""
    if (not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3
            or frame.shape[2] not in channels):
        desc = f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise MediaError(f"{name}: {what} is a {desc}; pass a uint8 RGB array of shape (H, W, 3)")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise MediaError(f"{name}: {what} is empty {frame.shape}; pass a uint8 RGB array of shape (H, W, 3)")
    return np.ascontiguousarray(frame)
