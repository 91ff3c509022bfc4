"""Example inputs the app makes itself at start-up, so the Space ships no media files of its own.

* portrait: scikit-image's ``astronaut()`` (a NASA photo, public domain), bundled with scikit-image;
* driving video and image: a crop of that portrait moved by small smooth rotations, shifts and zooms;
* speech: espeak-ng when it is installed, else a vowel-like signal synthesised here (a glottal pulse
  train shaped by formants, with syllable-rate loudness and a falling-rising pitch).
"""
from __future__ import annotations

import logging
import math
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..media import VideoWriter

logger = logging.getLogger("emoportraits")

RATE = 16000
FPS = 25
# (F1, F2, F3) in Hz of a few vowels: /a/, /i/, /u/, /e/, /o/
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))


@dataclass
class ExampleFiles:
    portrait: Path
    driver_video: Path
    driver_image: Path
    speech: Path


def astronaut() -> np.ndarray:
    try:
        from skimage import data
    except ImportError as e:
        raise ImportError("the app's examples need scikit-image: pip install 'emoportraits[app]'") from e
    return np.ascontiguousarray(data.astronaut()[..., :3])


def _moved(image: Image.Image, t: float, centre: tuple[float, float], side: int) -> np.ndarray:
    """The square crop of ``side`` around ``centre`` at time ``t`` (s) of a small head-like motion."""
    angle = 6 * math.sin(2 * math.pi * 0.7 * t)                     # degrees, a gentle head roll
    dx, dy = 8 * math.sin(2 * math.pi * 0.5 * t), 4 * math.sin(2 * math.pi * 0.9 * t + 1)
    zoom = 1 + 0.04 * math.sin(2 * math.pi * 0.4 * t)
    cx, cy = centre[0] + dx, centre[1] + dy
    # PIL's affine maps output → input pixels: rotate and scale about the crop centre
    a, c = math.cos(math.radians(angle)) / zoom, math.sin(math.radians(angle)) / zoom
    half = side / 2
    coeffs = (a, c, cx - a * half - c * half, -c, a, cy + c * half - a * half)
    out = image.transform((side, side), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)
    return np.asarray(out)


def vowel_speech(seconds: float = 2.4, seed: int = 0) -> np.ndarray:
    """Speech-like float32 samples at 16 kHz: voiced syllables (~4 per second) with formants."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 125 + 20 * np.sin(2 * np.pi * 0.6 * t) - 15 * t / seconds      # pitch contour
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    syllable = np.floor(t * 4).astype(int)
    vowel = rng.integers(0, len(VOWELS), syllable.max() + 1)[syllable]
    signal = np.zeros_like(t)
    for k in range(1, 40):                              # harmonics of the glottal source, 1/k roll-off
        fk = k * f0
        gain = np.zeros_like(t)
        for j in range(3):                              # each formant a resonance of ~90 Hz bandwidth
            centre = np.array([v[j] for v in VOWELS])[vowel]
            gain += (1.0 / (j + 1)) / (1 + ((fk - centre) / 90) ** 2)
        signal += gain * np.sin(k * phase) / k * (fk < RATE / 2)
    envelope = np.sin(np.pi * ((t * 4) % 1)) ** 0.6                     # syllable loudness
    envelope *= np.clip(np.minimum(t, seconds - t) / 0.05, 0, 1)       # no clicks at the ends
    signal = signal * envelope + 0.003 * rng.standard_normal(t.size)
    return (0.5 * signal / np.abs(signal).max()).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def _espeak(path: Path, text: str) -> bool:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return False
    try:
        subprocess.run([exe, "-w", str(path), text], check=True, capture_output=True, timeout=30)
        return path.stat().st_size > 1000
    except (OSError, subprocess.SubprocessError):
        return False


def make_examples(folder: Path, *, use_espeak: bool = True) -> ExampleFiles:
    """Write the example files into ``folder`` (created); reuses files already there."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = ExampleFiles(folder / "astronaut.png", folder / "astronaut_moving.mp4", folder / "astronaut_tilted.png",
                         folder / "speech.wav")
    photo = astronaut()
    if not files.portrait.exists():
        Image.fromarray(photo).save(files.portrait)
    image = Image.fromarray(photo)
    centre, side = (225.0, 135.0), 256          # around the face found by the bundled detector
    if not files.driver_video.exists():
        tmp = folder / "tmp_driver.mp4"
        with VideoWriter(tmp, FPS) as writer:
            for i in range(2 * FPS):
                writer.write(_moved(image, i / FPS, centre, side))
        tmp.replace(files.driver_video)
    if not files.driver_image.exists():
        Image.fromarray(_moved(image, 0.35, centre, side)).save(files.driver_image)
    if not files.speech.exists():
        tmp = folder / "tmp_speech.wav"
        if not (use_espeak and _espeak(tmp, "Hello! This portrait is talking.")):
            write_wav(tmp, vowel_speech())
        tmp.replace(files.speech)
    return files
