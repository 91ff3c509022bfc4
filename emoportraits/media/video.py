"""Video and audio files ↔ frames (uint8 (H, W, 3) RGB, the convention of ``image.py``).

Everything runs the ffmpeg binary bundled with imageio-ffmpeg as a subprocess (there is no ffprobe):
the container header comes from ffmpeg's stderr, frame counts and timestamps from a decode pass.

Constant-frame-rate rule (``probe_video``): the video is decoded once (the frames are not converted,
so this costs about as much as decoding) and ffmpeg lists every frame's presentation timestamp in
the stream's own time base. With n frames spanning t_0 … t_{n-1}, the average interval is
T = (t_{n-1} − t_0) / (n − 1); the video is *variable-frame-rate* when some frame lies more than
T/2 away from the constant-rate grid t_0 + i·T (i.e. played back at a constant rate, some frame would
show up at the wrong frame slot), or when timestamps repeat. Rounding of timestamps (e.g. the 33/34 ms
of 29.97 fps in Matroska) stays far below T/2; a dropped frame, a mid-clip rate change or a phone's
variable rate exceed it. fps = 1/T, snapped to a standard rate (24000/1001, 30000/1001, …, or a whole
or half number) when within the timestamps' precision; n_frames is the exact count of decoded frames,
which is exactly what ``iter_frames`` yields.
"""
from __future__ import annotations

import collections
import logging
import math
import numbers
import os
import re
import shlex
import subprocess
import threading
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import imageio_ffmpeg
import numpy as np

from ..errors import MediaError
from .image import _check_frame, _existing_file, _name, _temp_path, _unlink

logger = logging.getLogger("emoportraits")

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")
AUDIO_EXTENSIONS = (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus")
_WRITE_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}   # H.264 + AAC
_VIDEO_HINT = "pass an mp4, mov, mkv, avi, webm or mpeg video"


def is_video_path(path) -> bool:
    """True when ``path`` has a video extension (the content is not checked)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class VideoInfo:
    path: Path
    width: int          # of the frames iter_frames yields (after any rotation metadata is applied)
    height: int
    fps: float
    n_frames: int       # exact: decoded frames
    duration: float     # n_frames / fps, seconds
    has_audio: bool


# ---- ffmpeg plumbing ------------------------------------------------------------------------------

def _run(args: list[str]) -> tuple[int, str, str]:
    """Run ffmpeg to completion (subprocess.run kills it if we are interrupted): rc, stdout, stderr."""
    res = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", *args],
                         stdin=subprocess.DEVNULL, capture_output=True)
    return res.returncode, res.stdout.decode("utf-8", "replace"), res.stderr.decode("utf-8", "replace")


def _arg(path) -> str:
    """A path as an ffmpeg URL: the file: protocol, so that names like "-x.mp4" or "a:b.mp4" are files."""
    return "file:" + os.fspath(path)


@lru_cache(maxsize=None)
def _ffmpeg_major(exe: str) -> int:
    """Major version of the ffmpeg binary ("n9.0.2-…" → 9, "4.2.2-static" → 4; git builds → 99), cached
    per binary (IMAGEIO_FFMPEG_EXE may point to a system ffmpeg). Options changed across versions."""
    m = re.match(r"n?(\d+)\.", imageio_ffmpeg.get_ffmpeg_version())
    return int(m.group(1)) if m else 99


def _sync_flags(mode: str) -> list[str]:
    """Frame-rate mode option: ``-fps_mode`` (ffmpeg ≥ 5.1; recent ones dropped ``-vsync``) or ``-vsync``."""
    return ["-fps_mode", mode] if _ffmpeg_major(imageio_ffmpeg.get_ffmpeg_exe()) >= 6 else ["-vsync", mode]


def _demux_time_base() -> list[str]:
    """Encoder time base = the input stream's: ``demux`` in ffmpeg ≥ 7, ``-1`` before."""
    return ["-enc_time_base", "demux" if _ffmpeg_major(imageio_ffmpeg.get_ffmpeg_exe()) >= 7 else "-1"]


_GENERIC = ("Conversion failed", "Error opening input file ", "Error opening output file", "To ignore this",
            "Exiting normally", "frame=", "size=", "=== stderr", "Could not load meta", "Nothing was written")
_KNOWN = (("matches no streams", "no video stream"),
          ("moov atom not found", "no moov atom: incomplete, or not an mp4/mov file"),
          ("Invalid data found", "invalid data: not a video, or corrupt"))


def _reason(stderr: str) -> str:
    """A short, one-line reason from ffmpeg's stderr (never the raw dump)."""
    for needle, reason in _KNOWN:
        if needle in stderr:
            return reason
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", line).strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line and not line.startswith(_GENERIC)]
    text = lines[-1] if lines else "ffmpeg failed"
    text = re.sub(r"^Error (opening|while) [\w ]*?: ", "", text)
    return text if len(text) <= 120 else text[:117] + "…"


_STREAM = re.compile(r"^\s*Stream #\d+:\d+\S*: (Video|Audio|Subtitle|Data|Attachment): (.*)$", re.M)


def _input_streams(p: Path, stderr: str, kind: str) -> list[tuple[str, str]]:
    """(type, description) of each stream of input #0, or a MediaError when ffmpeg could not open it."""
    if "Input #0" not in stderr:
        raise MediaError(f"{_name(p)}: could not be read as {kind} ({_reason(stderr)}); "
                         f"{_VIDEO_HINT if kind == 'a video' else 'pass a video or audio file'}")
    section = re.split(r"\n(?:Stream mapping:|Output #0|At least one output)", stderr.split("Input #0", 1)[1])[0]
    return [(m.group(1), m.group(2)) for m in _STREAM.finditer(section)]


def _standard_rate(fps: float, rel_tol: float) -> Fraction:
    """``fps`` as an exact rate: 24000/1001, 30000/1001, … or a whole/half number when within rel_tol."""
    candidates = [Fraction(k * 1000, 1001) for k in (24, 30, 48, 60, 120)] + [Fraction(round(fps * 2), 2)]
    best = min(candidates, key=lambda c: abs(float(c) - fps))
    if best > 0 and abs(float(best) - fps) <= rel_tol * fps:
        return best
    return Fraction(fps).limit_denominator(100_000)


# ---- reading --------------------------------------------------------------------------------------

def probe_video(path) -> VideoInfo:
    """Size, exact frame count, fps and audio presence; MediaError for unusable or variable-rate videos."""
    p = _existing_file(path, VIDEO_EXTENSIONS, "video")
    name = _name(p)
    # Decode the first real video stream (V: not cover art); "wrapped_avframe" hands the frames to the
    # framecrc muxer without converting them; passthrough + demux time base keep every frame's own pts.
    _, out, err = _run(["-i", _arg(p), "-map", "0:V:0", *_sync_flags("passthrough"), *_demux_time_base(),
                        "-c:v", "wrapped_avframe", "-f", "framecrc", "-"])
    streams = _input_streams(p, err, "a video")
    video = [desc for kind, desc in streams if kind == "Video" and "(attached pic)" not in desc]
    if not video:
        raise MediaError(f"{name}: the file has no video stream, so no frames; pass a video with at least one frame")
    tb, size, pts, durations = Fraction(1, 1), None, [], []
    for line in out.splitlines():
        if line.startswith("#tb 0:"):
            tb = Fraction(line.split(":", 1)[1].strip())
        elif line.startswith("#dimensions 0:"):
            size = tuple(int(v) for v in line.split(":", 1)[1].strip().split("x"))
        elif line.startswith("0,"):
            fields = line.split(",")
            pts.append(int(fields[2]))
            durations.append(int(fields[3]))
    if not pts:
        raise MediaError(f"{name}: the video has no frames; pass a video with at least one frame")
    if size is None:                                    # not expected; fall back to the header
        m = re.search(r"(\d{2,5})x(\d{2,5})", video[0])
        size = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    header_fps = re.search(r"([\d.]+) fps", video[0])
    fps = _constant_rate(name, np.sort(np.asarray(pts, dtype=np.int64)), tb, durations[0],
                         float(header_fps.group(1)) if header_fps else 0.0)
    n = len(pts)
    return VideoInfo(path=p, width=size[0], height=size[1], fps=float(fps), n_frames=n,
                     duration=float(n / fps), has_audio=any(kind == "Audio" for kind, _ in streams))


def _constant_rate(name: str, pts: np.ndarray, tb: Fraction, first_duration: int, header_fps: float) -> Fraction:
    """The exact frame rate, or a MediaError when the timestamps are not on a constant-rate grid."""
    n = len(pts)
    if n == 1:                                          # one frame: its duration, else the header
        seconds = float(first_duration * tb)
        return _standard_rate(1 / seconds if seconds > 0 else (header_fps or 25.0), 1e-3)
    span = int(pts[-1] - pts[0])
    step = span / (n - 1)
    drift = float(np.abs((pts - pts[0]) - np.arange(n) * step).max()) if span > 0 else math.inf
    if drift > step / 2:
        gaps = np.diff(pts) * float(tb) * 1000
        average = (n - 1) / (span * float(tb)) if span > 0 else (header_fps or 25.0)
        cmd = f"ffmpeg -i {shlex.quote(name)} -r {max(1, round(average))} {shlex.quote(Path(name).stem + '_cfr.mp4')}"
        raise MediaError(f"{name}: the video has a variable frame rate (frame intervals from {gaps.min():.1f} "
                         f"to {gaps.max():.1f} ms); re-encode it at a constant rate, e.g. {cmd}")
    # Snap within the timestamps' precision: ±1 tick at each end of the span.
    return _standard_rate((n - 1) / (span * float(tb)), max(1e-3, 2 / span))


def iter_frames(path, *, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Stream the frames of a video, one uint8 (H, W, 3) RGB array at a time, in order (every decoded
    frame: no rate conversion). Memory does not grow with the video's length; closing the generator
    early (``break``, ``.close()``, garbage collection) stops ffmpeg."""
    p = _existing_file(path, VIDEO_EXTENSIONS, "video")       # path errors now, not at the first next()
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0 or None, got {max_frames}")
    return _frames(p, max_frames)


def _frames(p: Path, max_frames: int | None) -> Iterator[np.ndarray]:
    name = _name(p)
    limit = ["-frames:v", str(max_frames)] if max_frames is not None else []
    # Every frame comes as a binary PPM ("P6\nW H\n255\n" + W·H·3 bytes of RGB): self-describing, so
    # no header parsing is needed, and rotated or non-square-pixel videos come out at their decoded size.
    proc = subprocess.Popen([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats",
                             "-loglevel", "error", "-i", _arg(p), "-map", "0:V:0", *_sync_flags("passthrough"),
                             *limit, "-f", "image2pipe", "-c:v", "ppm", "-pix_fmt", "rgb24", "pipe:1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stderr: collections.deque[str] = collections.deque(maxlen=20)
    reader = threading.Thread(target=_drain, args=(proc.stderr, stderr), daemon=True)
    reader.start()
    count = 0
    try:
        while (magic := proc.stdout.readline()) == b"P6\n":
            width, height = (int(v) for v in proc.stdout.readline().split())
            proc.stdout.readline()                                          # max value: 255
            frame = np.empty((height, width, 3), np.uint8)                  # writable, owns its memory
            if proc.stdout.readinto(memoryview(frame).cast("B")) != frame.nbytes:
                break
            yield frame
            count += 1
        rc = proc.wait()
        reader.join(timeout=10)
        if magic not in (b"", b"P6\n") or (rc != 0 and count == 0):
            raise MediaError(f"{name}: could not be read as a video ({_reason(chr(10).join(stderr))}); {_VIDEO_HINT}")
        if rc != 0:
            raise MediaError(f"{name}: decoding stopped after frame {count} ({_reason(chr(10).join(stderr))}); "
                             f"re-encode the video")
    finally:                # also on early close (GeneratorExit): stop ffmpeg, release the pipes
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        reader.join(timeout=10)


# ---- audio ----------------------------------------------------------------------------------------

def has_audio(path) -> bool:
    """Whether a video or audio file has an audio stream."""
    p = _existing_file(path, VIDEO_EXTENSIONS + AUDIO_EXTENSIONS, "video or audio")
    _, _, err = _run(["-i", _arg(p)])        # no output given: ffmpeg prints the header and exits
    return any(kind == "Audio" for kind, _ in _input_streams(p, err, "a video or audio file"))


def extract_audio(path, out_wav, sample_rate: int = 16000) -> Path:
    """The first audio stream of ``path`` as a mono 16-bit PCM wav at ``sample_rate`` (atomic write)."""
    p = _existing_file(path, VIDEO_EXTENSIONS + AUDIO_EXTENSIONS, "video or audio")
    dest = Path(out_wav)
    if dest.suffix.lower() != ".wav":
        raise MediaError(f"{_name(dest)}: audio is extracted as wav; give the output a .wav extension")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate}")
    if not has_audio(p):
        raise MediaError(f"{_name(p)}: the file has no audio track; pass a video or audio file with sound")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(dest)
    try:
        rc, _, err = _run(["-loglevel", "error", "-i", _arg(p), "-map", "0:a:0", "-vn", "-ac", "1",
                           "-ar", str(int(sample_rate)), "-c:a", "pcm_s16le", "-map_metadata", "-1",
                           "-fflags", "+bitexact", "-flags:a", "+bitexact", "-f", "wav", "-y", _arg(tmp)])
        if rc != 0:
            raise MediaError(f"{_name(p)}: the audio could not be extracted ({_reason(err)}); "
                             f"re-encode the file (e.g. to wav)")
        os.replace(tmp, dest)
    finally:
        _unlink(tmp)
    return dest


# ---- writing --------------------------------------------------------------------------------------

class VideoWriter:
    """Stream uint8 (H, W, 3) RGB frames into an H.264 (libx264, yuv420p, +faststart) video::

        with VideoWriter("out.mp4", 25, audio_from="driver.mp4") as w:
            for frame in frames:
                w.write(frame)

    Frames go to a hidden temp file beside ``path``. On a clean exit the audio of ``audio_from``
    (a video or audio file; skipped with a note when it has none), starting ``audio_offset`` seconds
    in (negative: delayed by that much), is muxed as AAC, padded with silence or cut so that it ends
    with the video, and the file is renamed onto ``path``. On an exception, or when no frame was
    written, nothing is left behind. Odd frame sizes are padded (black) to even ones, with a note.
    """

    def __init__(self, path, fps: float, *, audio_from=None, audio_offset: float = 0.0, crf: int = 18):
        self.path = Path(path)
        self._name = _name(self.path)
        self._closed = True                             # until the checks pass (so __del__ is a no-op)
        self._proc = None
        self._tmp: list[Path] = []
        container = _WRITE_CONTAINERS.get(self.path.suffix.lower())
        if container is None:
            raise MediaError(f"{self._name}: cannot write video as '{self.path.suffix or '(no extension)'}'; "
                             f"use one of {', '.join(_WRITE_CONTAINERS)}")
        if not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
            raise MediaError(f"{self._name}: fps must be a positive number, got {fps!r}")
        if not (isinstance(crf, numbers.Integral) and 0 <= crf <= 51):
            raise MediaError(f"{self._name}: crf must be an integer from 0 (lossless) to 51, got {crf!r}")
        if not (isinstance(audio_offset, numbers.Real) and math.isfinite(audio_offset)):
            raise MediaError(f"{self._name}: audio_offset must be a finite number of seconds, got {audio_offset!r}")
        self.fps = float(fps)
        self.rate = _standard_rate(float(fps), 1e-4)
        self.crf, self.audio_offset = int(crf), float(audio_offset)
        self.n_frames = 0
        self._container = container
        self._movflags = ["-movflags", "+faststart"] if container in ("mp4", "mov") else []
        self._audio = None
        if audio_from is not None:
            if has_audio(audio_from):                   # MediaError now if it is missing or unreadable
                self._audio = Path(audio_from)
            else:
                logger.info(f"{_name(audio_from)}: has no audio track; {self._name} is written without sound")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._size = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._reader = None
        self._closed = False

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abort()
        else:
            self.close()

    def __del__(self):
        if not getattr(self, "_closed", True):
            self._abort()

    def write(self, frame: np.ndarray) -> None:
        if self._closed:
            raise MediaError(f"{self._name}: the video writer is closed; open a new VideoWriter")
        frame = _check_frame(frame, self._name, f"frame {self.n_frames}")
        height, width = frame.shape[:2]
        if self._proc is None:
            self._start(width, height)
        elif (width, height) != self._size:
            raise MediaError(f"{self._name}: frame {self.n_frames} is {width}×{height} but the first frame was "
                             f"{self._size[0]}×{self._size[1]}; all frames of a video must have the same size")
        try:
            self._proc.stdin.write(frame)               # the array's buffer: no extra copy
        except OSError:                                 # ffmpeg died (broken pipe)
            self._proc.wait()
            reason = _reason("\n".join(self._stderr))
            self._abort()
            raise MediaError(f"{self._name}: the video encoder stopped ({reason}); "
                             f"check the disk space and the frame size") from None
        self.n_frames += 1

    def _start(self, width: int, height: int) -> None:
        self._size = (width, height)
        even = (width + width % 2, height + height % 2)
        pad = []
        if even != self._size:
            pad = ["-vf", f"pad={even[0]}:{even[1]}"]
            logger.info(f"{self._name}: frames are {width}×{height}; padded to {even[0]}×{even[1]} "
                        f"because H.264 (yuv420p) needs even sides")
        tmp = _temp_path(self.path)
        self._tmp.append(tmp)
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(self.rate),
               "-i", "pipe:0", "-an", *pad, "-c:v", "libx264", "-preset", "medium", "-crf", str(self.crf),
               "-pix_fmt", "yuv420p", *self._movflags, "-f", self._container, "-y", _arg(tmp)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Drain stderr in a thread (a full pipe would block ffmpeg); keep only the last lines.
        self._reader = threading.Thread(target=_drain, args=(self._proc.stderr, self._stderr), daemon=True)
        self._reader.start()

    def close(self) -> None:
        """Finish the video and move it onto ``path``; MediaError (and no file) when that fails."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._proc is None:
                raise MediaError(f"{self._name}: no frames were written, so no video was saved; "
                                 f"write at least one frame")
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            rc = self._proc.wait()
            self._reader.join(timeout=10)
            if rc != 0:
                raise MediaError(f"{self._name}: the video encoder failed ({_reason(chr(10).join(self._stderr))}); "
                                 f"check the disk space and the output folder")
            final = self._tmp[0] if self._audio is None else self._mux_audio(self._tmp[0])
            os.replace(final, self.path)
        finally:
            self._abort()                               # removes whatever temp file is left

    def _mux_audio(self, video: Path) -> Path:
        out = _temp_path(self.path)
        self._tmp.append(out)
        offset = self.audio_offset
        seek = ["-ss", f"{offset:.6f}"] if offset > 0 else ["-itsoffset", f"{-offset:.6f}"] if offset < 0 else []
        # apad pads a short track with silence, -t cuts at the video's end: the audio ends with the last
        # frame. (Not -shortest: with a stream-copied video it cuts early by up to a buffer, in ffmpeg 4.)
        rc, _, err = _run(["-loglevel", "error", "-i", _arg(video), *seek, "-i", _arg(self._audio),
                           "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-b:a", "128k",
                           "-af", "apad", "-t", f"{float(self.n_frames / self.rate):.6f}",
                           *self._movflags, "-f", self._container, "-y", _arg(out)])
        if rc != 0:
            raise MediaError(f"{self._name}: the audio of {_name(self._audio)} could not be added ({_reason(err)}); "
                             f"pass another audio_from or None")
        return out

    def _abort(self) -> None:
        """Stop ffmpeg if it still runs and delete the temp files (idempotent)."""
        self._closed = True
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.stdin.close()
            except OSError:
                pass
            proc.wait()
        _unlink(*self._tmp)
        self._tmp = []


def _drain(stream, lines: collections.deque) -> None:
    for raw in iter(stream.readline, b""):
        lines.append(raw.decode("utf-8", "replace").rstrip())
    stream.close()
