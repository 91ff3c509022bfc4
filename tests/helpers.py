"""Small builders shared by the tests: where ../shared is, and media files made on the fly."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from emoportraits.media.video import VideoWriter

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOPORTRAITS_SHARED", REPO.parent / "shared"))
MEDIA = SHARED / "media"
P03 = "portraits/p03_man_east_asian_frontal_plain_bg.jpg"     # shared_media() names used by several tests
A01 = "audio/a01_en_grid_male_matches_d06.wav"               # 2.98 s of speech
ACCELERATE = Path(sys.executable).with_name("accelerate")
SPEECH_CLIPS = ("d05_man_talking_outdoors_with_speech.mp4", "d06_grid_man_talking_with_audio.mp4")


def shared_media(relative: str) -> Path:
    """A file of ../shared/media, or skip the test cleanly when it is absent."""
    path = MEDIA / relative
    if not path.exists():
        pytest.skip(f"shared media not found at {path} (set EMOPORTRAITS_SHARED)")
    return path


def ffmpeg(*args) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                    *map(str, args)], check=True, stdin=subprocess.DEVNULL)


def smooth_frames(n: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    """Smooth moving gradients: compress well, so a CRF-18 round trip is well above 30 dB."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return [np.stack([128 + 100 * np.sin((x + 2 * i) / 9), 128 + 100 * np.cos((y - i) / 7),
                      np.full_like(x, 60 + 3 * i)], -1).astype(np.uint8) for i in range(n)]


def write_wav(path: Path, seconds: float, rate: int = 16000, freq: float = 440.0) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes())
    return path


def write_video(path: Path, n: int = 10, fps: float = 25, frames: list[np.ndarray] | None = None,
                **kw) -> list[np.ndarray]:
    frames = frames if frames is not None else smooth_frames(n)
    with VideoWriter(path, fps, **kw) as w:
        for f in frames:
            w.write(f)
    return frames


def write_vfr_video(path: Path) -> Path:
    """1 s at 25 fps followed by 1 s at 10 fps, timestamps kept: a variable frame rate."""
    from emoportraits.media.ffmpeg import sync_flags
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x48:r=25:d=1", "-f", "lavfi", "-i", "testsrc=s=64x48:r=10:d=1",
           "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]", *sync_flags("vfr"),
           "-pix_fmt", "yuv420p", "-c:v", "libx264", path)
    return path


def write_audio_only_mp4(path: Path) -> Path:
    """An mp4 with an audio stream and no video frames."""
    wav = write_wav(path.with_suffix(".wav"), 0.5)
    ffmpeg("-i", wav, "-c:a", "aac", path)
    return path


def tiny_whisper():
    """A random tiny Whisper (d_model 32, windows of max_source_positions = 100 frames = 2 s): the real
    architecture without downloading weights."""
    from emoportraits.audio import random_whisper

    return random_whisper(d_model=32, layers=1, heads=2, window_frames=100, seed=0)


def save_speech_models(main: Path, speech: Path, whisper: Path | None = None) -> None:
    """A tiny random main model and speech encoder (and the tiny Whisper), as the speech CLI loads them."""
    from conftest import make_model
    from emoportraits.models import SpeechEncoder, SpeechEncoderConfig

    make_model("tiny").save_pretrained(main)
    SpeechEncoder(SpeechEncoderConfig.tiny()).save_pretrained(speech)
    if whisper is not None:
        tiny_whisper().save_pretrained(whisper)


# ---- real training runs through `accelerate launch` (train/train_speech.py, train/train_pose.py) ----

def prepare_speech_data(root: Path, resolution: int) -> Path:
    """The two shared talking clips prepared with audio (``prepare-data --with-audio --stride 1``) into
    ``root/data``; skips the test without the training extras or the shared media."""
    from emoportraits.cli import main as cli_main

    pytest.importorskip("accelerate", reason="the training extras are not installed (pip install -e .[train])")
    pytest.importorskip("transformers")
    sources = [shared_media(f"driving/{name}") for name in SPEECH_CLIPS]
    videos = root / "videos"
    videos.mkdir()
    for src in sources:
        (videos / src.name).symlink_to(src)
    assert cli_main(["prepare-data", "--videos", str(videos), "--out", str(root / "data"), "--dataset-name",
                     "voxceleb2", "--resolution", str(resolution), "--frames-per-clip", "60", "--stride", "1",
                     "--with-audio", "--workers", "2", "--quiet"]) == 0
    return root / "data"


def launch_command(script: str, config: str, *args) -> list[str]:
    """`accelerate launch` of train/<script> with train/configs/<config> on one CPU process."""
    return [str(ACCELERATE), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
            str(REPO / "train" / script), "--config", str(REPO / "train" / "configs" / config), *map(str, args)]


def start(command: list[str], env: dict | None = None) -> subprocess.Popen:
    """Started, not awaited: two runs side by side share the start-up time."""
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, cwd=REPO)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def metrics(out: Path, *keys: str) -> dict:
    """step → the values of ``keys`` in ``metrics.jsonl`` (a re-run step keeps its last line)."""
    rows = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows[r["step"]] = tuple(r[k] for k in keys)
    return rows


def two_speaker_clips(base: Path) -> Path:
    """Two 4-frame talking clips (d06 at 0.4 s and 1.6 s) as two VoxCeleb2-style speakers, prepared at
    32²: the smallest data set a training run can draw pairs of identities from. Returns the data folder."""
    from emoportraits.data.prepare import prepare_dataset

    src = shared_media("driving/d06_grid_man_talking_with_audio.mp4")
    for i, offset in enumerate(("0.4", "1.6")):
        (base / "videos" / f"spk{i}").mkdir(parents=True)
        ffmpeg("-ss", offset, "-i", src, "-frames:v", "4", "-an", "-vf", "scale=240:192", "-c:v", "libx264",
               "-pix_fmt", "yuv420p", base / "videos" / f"spk{i}" / "clip.mp4")
    summary = prepare_dataset(base / "videos", base / "data", "voxceleb2", resolution=32, frames_per_clip=4,
                              stride=1, progress=False)
    assert summary.ok == 2 and summary.frames == 8
    return base / "data"
