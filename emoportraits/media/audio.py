"""Audio files ↔ samples: the audio track of an audio or video file, decoded by ffmpeg (``media.ffmpeg``).

``load_audio`` decodes any audio file, or the audio track of a video (downmixed to mono with ffmpeg's
rematrix normalised to gain ≤ 1: stereo → (L + R) / 2, never clipping; resampled by ffmpeg's resampler)
into float32 samples in [-1, 1]; ``extract_audio`` writes it as a wav; ``has_audio`` says whether a file
has an audio track.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import MediaError
from . import ffmpeg
from .files import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS, display_name, existing_file, temp_path, unlink

__all__ = ["AUDIO_EXTENSIONS", "has_audio", "extract_audio", "load_audio", "resample"]



def _media_file(path) -> Path:
    return existing_file(path, VIDEO_EXTENSIONS + AUDIO_EXTENSIONS, "video or audio")


def has_audio(path) -> bool:
    """Whether a video or audio file has an audio stream."""
    p = _media_file(path)
    _, _, err = ffmpeg.run(["-i", ffmpeg.url(p)])       # no output given: ffmpeg prints the header and exits
    streams = ffmpeg.input_streams(p, err, "a video or audio file", "pass a video or audio file")
    return any(kind == "Audio" for kind, _ in streams)


def extract_audio(path, out_wav, sample_rate: int = 16000) -> Path:
    """The first audio stream of ``path`` as a mono 16-bit PCM wav at ``sample_rate`` (atomic write)."""
    p = _media_file(path)
    dest = Path(out_wav)
    if dest.suffix.lower() != ".wav":
        raise MediaError(f"{display_name(dest)}: audio is extracted as wav; give the output a .wav extension")
    _check_rate(sample_rate)
    if not has_audio(p):
        raise MediaError(f"{display_name(p)}: the file has no audio track; pass a video or audio file with sound")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dest)
    try:
        rc, _, err = ffmpeg.run(["-loglevel", "error", "-i", ffmpeg.url(p), "-map", "0:a:0", "-vn", "-ac", "1",
                                 "-ar", str(int(sample_rate)), "-c:a", "pcm_s16le", "-map_metadata", "-1",
                                 "-fflags", "+bitexact", "-flags:a", "+bitexact", "-f", "wav", "-y",
                                 ffmpeg.url(tmp)])
        if rc != 0:
            raise MediaError(f"{display_name(p)}: the audio could not be extracted ({ffmpeg.reason(err)}); "
                             f"re-encode the file (e.g. to wav)")
        os.replace(tmp, dest)
    finally:
        unlink(tmp)
    return dest


def load_audio(path, sample_rate: int = 16000) -> np.ndarray:
    """The first audio stream of an audio or video file as float32 mono samples in [-1, 1] at
    ``sample_rate`` (decoded, downmixed and resampled by ffmpeg). Raises ``MediaError`` when the
    file does not exist, cannot be read as audio, or has no audio track."""
    _check_rate(sample_rate)
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{path}: no such file; check the path")
    if p.is_dir():
        raise MediaError(f"{path}: is a folder, not an audio or video file; pass the path of a file")
    # Default log level: the input's header (its streams) is on stderr, the samples on stdout.
    rc, out, err = ffmpeg.run(["-i", ffmpeg.url(p), "-map", "0:a:0", "-vn", "-sn", "-dn",
                               "-rematrix_maxval", "1.0", "-ac", "1",
                               "-ar", str(int(sample_rate)), "-f", "f32le", "-c:a", "pcm_f32le", "pipe:1"])
    streams = ffmpeg.input_streams(p, err, "audio", "pass an audio file (wav, mp3, m4a, flac, ogg …) or a "
                                                    "video with sound")
    if not any(kind == "Audio" for kind, _ in streams):
        raise MediaError(f"{display_name(p)}: has no audio track; pass a video or audio file with sound")
    if rc != 0:
        raise MediaError(f"{display_name(p)}: could not be read as audio ({ffmpeg.reason(err)}); "
                         f"re-encode the file (e.g. to wav)")
    audio = np.frombuffer(out, dtype="<f4").astype(np.float32)
    if audio.size == 0:
        raise MediaError(f"{display_name(p)}: could not be read as audio (the audio track is empty)")
    return np.clip(audio, -1.0, 1.0)


def resample(audio: np.ndarray, sample_rate: int, target: int = 16000) -> np.ndarray:
    """Resample mono float32 samples with ffmpeg's resampler (the one ``load_audio`` uses)."""
    audio = np.ascontiguousarray(audio, dtype="<f4")
    if int(sample_rate) == int(target):
        return audio.astype(np.float32)
    rc, out, err = ffmpeg.run(["-f", "f32le", "-ar", str(int(sample_rate)), "-ac", "1", "-i", "pipe:0",
                               "-ar", str(int(target)), "-f", "f32le", "-c:a", "pcm_f32le", "pipe:1"],
                              data=audio.tobytes())
    if rc != 0:
        raise RuntimeError(f"resampling {sample_rate} Hz → {target} Hz failed: {ffmpeg.reason(err)}")
    return np.frombuffer(out, dtype="<f4").astype(np.float32)


def _check_rate(sample_rate) -> None:
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate}")
