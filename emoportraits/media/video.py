"""Video and audio files ↔ frames (uint8 (H, W, 3) RGB, the convention of ``image.py``).

ffmpeg (``media.ffmpeg``) does the work: the container header comes from its stderr, frame counts and
timestamps from a decode pass. The audio track of a file is ``media.audio``'s.

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

import logging
import math
import numbers
import os
import re
import shlex
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import MediaError
from . import ffmpeg
from .audio import has_audio
from .files import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS, check_frame, display_name, existing_file, temp_path, unlink

logger = logging.getLogger("emoportraits")

__all__ = ["VIDEO_EXTENSIONS", "AUDIO_EXTENSIONS", "VideoInfo", "is_video_path", "probe_video", "iter_frames",
           "to_constant_rate", "VideoWriter"]
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
    p = existing_file(path, VIDEO_EXTENSIONS, "video")
    name = display_name(p)
    # Decode the first real video stream (V: not cover art); "wrapped_avframe" hands the frames to the
    # framecrc muxer without converting them; passthrough + demux time base keep every frame's own pts.
    _, out, err = ffmpeg.run(["-i", ffmpeg.url(p), "-map", "0:V:0", *ffmpeg.sync_flags("passthrough"),
                              *ffmpeg.demux_time_base(), "-c:v", "wrapped_avframe", "-f", "framecrc", "-"])
    streams = ffmpeg.input_streams(p, err, "a video", _VIDEO_HINT)
    video = [desc for kind, desc in streams if kind == "Video" and "(attached pic)" not in desc]
    if not video:
        raise MediaError(f"{name}: the file has no video stream, so no frames; pass a video with at least one frame")
    tb, size, pts, durations = Fraction(1, 1), None, [], []
    for line in out.decode("utf-8", "replace").splitlines():
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
    p = existing_file(path, VIDEO_EXTENSIONS, "video")       # path errors now, not at the first next()
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0 or None, got {max_frames}")
    return _frames(p, max_frames)


def _frames(p: Path, max_frames: int | None) -> Iterator[np.ndarray]:
    name = display_name(p)
    limit = ["-frames:v", str(max_frames)] if max_frames is not None else []
    # Every frame comes as a binary PPM ("P6\nW H\n255\n" + W·H·3 bytes of RGB): self-describing, so
    # no header parsing is needed, and rotated or non-square-pixel videos come out at their decoded size.
    stream = ffmpeg.Stream(["-loglevel", "error", "-i", ffmpeg.url(p), "-map", "0:V:0",
                            *ffmpeg.sync_flags("passthrough"), *limit, "-f", "image2pipe", "-c:v", "ppm",
                            "-pix_fmt", "rgb24", "pipe:1"], feed=False)
    out = stream.proc.stdout
    count = 0
    try:
        while (magic := out.readline()) == b"P6\n":
            width, height = (int(v) for v in out.readline().split())
            out.readline()                                                  # max value: 255
            frame = np.empty((height, width, 3), np.uint8)                  # writable, owns its memory
            if out.readinto(memoryview(frame).cast("B")) != frame.nbytes:
                break
            yield frame
            count += 1
        rc = stream.finish()
        if magic not in (b"", b"P6\n") or (rc != 0 and count == 0):
            raise MediaError(f"{name}: could not be read as a video ({ffmpeg.reason(stream.stderr())}); {_VIDEO_HINT}")
        if rc != 0:
            raise MediaError(f"{name}: decoding stopped after frame {count} ({ffmpeg.reason(stream.stderr())}); "
                             f"re-encode the video")
    finally:                # also on early close (GeneratorExit): stop ffmpeg, release the pipes
        stream.stop()


def to_constant_rate(path, out, fps: float) -> Path:
    """``path`` re-encoded at a constant ``fps`` (H.264 + AAC) into ``out``, for a variable-frame-rate video
    (webcam and phone recordings) that `probe_video` refuses; MediaError when ffmpeg fails."""
    p = existing_file(path, VIDEO_EXTENSIONS, "video")
    rc, _, err = ffmpeg.run(["-loglevel", "error", "-i", ffmpeg.url(p), "-vf", f"fps={fps:g}", "-c:v", "libx264",
                             "-pix_fmt", "yuv420p", "-c:a", "aac", "-y", ffmpeg.url(out)])
    if rc != 0:
        raise MediaError(f"{display_name(p)}: could not be converted to a constant frame rate ({ffmpeg.reason(err)})")
    return Path(out)


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
        self._name = display_name(self.path)
        self._closed = True                             # until the checks pass (so __del__ is a no-op)
        self._stream: ffmpeg.Stream | None = None
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
                logger.info(f"{display_name(audio_from)}: has no audio track; {self._name} is written without sound")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._size = None
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
        frame = check_frame(frame, self._name, f"frame {self.n_frames}")
        height, width = frame.shape[:2]
        if self._stream is None:
            self._start(width, height)
        elif (width, height) != self._size:
            raise MediaError(f"{self._name}: frame {self.n_frames} is {width}×{height} but the first frame was "
                             f"{self._size[0]}×{self._size[1]}; all frames of a video must have the same size")
        try:
            self._stream.proc.stdin.write(frame)        # the array's buffer: no extra copy
        except OSError:                                 # ffmpeg died (broken pipe)
            self._stream.finish()
            reason = ffmpeg.reason(self._stream.stderr())
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
        tmp = temp_path(self.path)
        self._tmp.append(tmp)
        self._stream = ffmpeg.Stream(
            ["-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
             "-framerate", str(self.rate), "-i", "pipe:0", "-an", *pad, "-c:v", "libx264", "-preset", "medium",
             "-crf", str(self.crf), "-pix_fmt", "yuv420p", *self._movflags, "-f", self._container, "-y",
             ffmpeg.url(tmp)], feed=True)

    def close(self) -> None:
        """Finish the video and move it onto ``path``; MediaError (and no file) when that fails."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._stream is None:
                raise MediaError(f"{self._name}: no frames were written, so no video was saved; "
                                 f"write at least one frame")
            if self._stream.finish() != 0:
                raise MediaError(f"{self._name}: the video encoder failed ({ffmpeg.reason(self._stream.stderr())}); "
                                 f"check the disk space and the output folder")
            final = self._tmp[0] if self._audio is None else self._mux_audio(self._tmp[0])
            os.replace(final, self.path)
        finally:
            self._abort()                               # removes whatever temp file is left

    def _mux_audio(self, video: Path) -> Path:
        out = temp_path(self.path)
        self._tmp.append(out)
        offset = self.audio_offset
        seek = ["-ss", f"{offset:.6f}"] if offset > 0 else ["-itsoffset", f"{-offset:.6f}"] if offset < 0 else []
        # apad pads a short track with silence, -t cuts at the video's end: the audio ends with the last
        # frame. (Not -shortest: with a stream-copied video it cuts early by up to a buffer, in ffmpeg 4.)
        rc, _, err = ffmpeg.run(["-loglevel", "error", "-i", ffmpeg.url(video), *seek, "-i", ffmpeg.url(self._audio),
                                 "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-b:a", "128k",
                                 "-af", "apad", "-t", f"{float(self.n_frames / self.rate):.6f}",
                                 *self._movflags, "-f", self._container, "-y", ffmpeg.url(out)])
        if rc != 0:
            raise MediaError(f"{self._name}: the audio of {display_name(self._audio)} could not be added "
                             f"({ffmpeg.reason(err)}); pass another audio_from or None")
        return out

    def _abort(self) -> None:
        """Stop ffmpeg if it still runs and delete the temp files (idempotent)."""
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()
        unlink(*self._tmp)
        self._tmp = []
