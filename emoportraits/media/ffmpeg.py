"""The one place the package runs ffmpeg: the binary bundled with imageio-ffmpeg (``IMAGEIO_FFMPEG_EXE``
may point to another), as a subprocess, to completion (`run`) or streaming through pipes (`Stream`).
There is no ffprobe: a file's streams come from the header ffmpeg prints on stderr (`input_streams`).
Video (``media.video``) and audio (``media.audio``) build their commands on these; what ffmpeg says
when it fails becomes one short line (`reason`), never the raw dump.
"""
from __future__ import annotations

import collections
import os
import re
import subprocess
import threading
from functools import lru_cache
from pathlib import Path

import imageio_ffmpeg

from ..errors import MediaError
from .files import display_name

__all__ = ["run", "Stream", "url", "sync_flags", "demux_time_base", "reason", "input_streams"]

COMMON = ("-hide_banner", "-nostdin", "-nostats")   # no banner, no keyboard interaction, no progress lines


def run(args: list[str], data: bytes | None = None) -> tuple[int, bytes, str]:
    """Run ffmpeg to completion (subprocess.run kills it if we are interrupted): return code, stdout bytes,
    stderr text. ``data`` is fed to its standard input (``pipe:0``)."""
    res = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), *COMMON, *args], input=data,
                         stdin=None if data is not None else subprocess.DEVNULL, capture_output=True)
    return res.returncode, res.stdout, res.stderr.decode("utf-8", "replace")


class Stream:
    """ffmpeg running beside us: frames written to its stdin (``feed=True``) or read from its stdout.
    A thread drains stderr (a full pipe would block ffmpeg) and keeps its last lines (`stderr`)."""

    def __init__(self, args: list[str], *, feed: bool):
        self.proc = subprocess.Popen([imageio_ffmpeg.get_ffmpeg_exe(), *COMMON, *args],
                                     stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL if feed else subprocess.PIPE, stderr=subprocess.PIPE)
        self._lines: collections.deque[str] = collections.deque(maxlen=20)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        for raw in iter(self.proc.stderr.readline, b""):
            self._lines.append(raw.decode("utf-8", "replace").rstrip())
        self.proc.stderr.close()

    def stderr(self) -> str:
        return "\n".join(self._lines)

    def finish(self) -> int:
        """Close its input, wait for it to end and for stderr to be read: the return code."""
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        rc = self.proc.wait()
        self._reader.join(timeout=10)
        return rc

    def stop(self) -> None:
        """Kill it if it still runs and release the pipes (idempotent)."""
        if self.proc.poll() is None:
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
        self.proc.wait()
        self._reader.join(timeout=10)


def url(path) -> str:
    """A path as an ffmpeg URL: the file: protocol, so that names like "-x.mp4" or "a:b.mp4" are files."""
    return "file:" + os.fspath(path)


@lru_cache(maxsize=None)
def _major(exe: str) -> int:
    """Major version of the ffmpeg binary ("n9.0.2-…" → 9, "4.2.2-static" → 4; git builds → 99), cached
    per binary (IMAGEIO_FFMPEG_EXE may point to a system ffmpeg). Options changed across versions."""
    m = re.match(r"n?(\d+)\.", imageio_ffmpeg.get_ffmpeg_version())
    return int(m.group(1)) if m else 99


def sync_flags(mode: str) -> list[str]:
    """Frame-rate mode option: ``-fps_mode`` (ffmpeg ≥ 5.1; recent ones dropped ``-vsync``) or ``-vsync``."""
    return ["-fps_mode", mode] if _major(imageio_ffmpeg.get_ffmpeg_exe()) >= 6 else ["-vsync", mode]


def demux_time_base() -> list[str]:
    """Encoder time base = the input stream's: ``demux`` in ffmpeg ≥ 7, ``-1`` before."""
    return ["-enc_time_base", "demux" if _major(imageio_ffmpeg.get_ffmpeg_exe()) >= 7 else "-1"]


_GENERIC = ("Conversion failed", "Error opening input file ", "Error opening output file", "To ignore this",
            "Exiting normally", "frame=", "size=", "=== stderr", "Could not load meta", "Nothing was written")
_KNOWN = (("matches no streams", "no video stream"),
          ("moov atom not found", "no moov atom: incomplete, or not an mp4/mov file"),
          ("Invalid data found", "invalid data: not a video, or corrupt"))


def reason(stderr: str) -> str:
    """A short, one-line reason from ffmpeg's stderr (never the raw dump)."""
    for needle, known in _KNOWN:
        if needle in stderr:
            return known
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", line).strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line and not line.startswith(_GENERIC)]
    text = lines[-1] if lines else "ffmpeg failed"
    text = re.sub(r"^Error (opening|while) [\w ]*?: ", "", text)
    return text if len(text) <= 120 else text[:117] + "…"


_STREAM = re.compile(r"^\s*Stream #\d+:\d+\S*: (Video|Audio|Subtitle|Data|Attachment): (.*)$", re.M)


def input_streams(p: Path, stderr: str, kind: str, hint: str) -> list[tuple[str, str]]:
    """(type, description) of each stream of input #0 in ffmpeg's ``stderr``, or a MediaError saying
    ``p`` could not be read as ``kind`` (e.g. "a video") followed by ``hint``."""
    if "Input #0" not in stderr:
        raise MediaError(f"{display_name(p)}: could not be read as {kind} ({reason(stderr)}); {hint}")
    section = re.split(r"\n(?:Stream mapping:|Output #0|At least one output)", stderr.split("Input #0", 1)[1])[0]
    return [(m.group(1), m.group(2)) for m in _STREAM.finditer(section)]
