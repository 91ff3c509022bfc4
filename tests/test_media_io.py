"""File-level media layer: images and videos in and out, with the errors users will meet.

All test files are generated in tmp_path (Pillow, numpy + wave, VideoWriter and the bundled ffmpeg);
the shared sample media are only read, and their tests skip when ../shared/media is absent.
"""
from __future__ import annotations

import io
import logging
import os
import struct
import subprocess
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emoportraits.errors import EmoPortraitsError, MediaError
from emoportraits.media import (VideoWriter, extract_audio, has_audio, is_image_path, is_video_path, iter_frames,
                                load_image, probe_video, save_image)

from helpers import (ffmpeg, shared_media, smooth_frames, write_audio_only_mp4, write_vfr_video, write_video,
                     write_wav)

CAN_LIST_CHILDREN = any(Path("/proc/self/task").glob("*/children"))   # Linux with CONFIG_PROC_CHILDREN


# ---- helpers --------------------------------------------------------------------------------------

def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255 ** 2 / max(mse, 1e-12))
def png_bytes(width: int, height: int, color_type: int, bit_depth: int, rows: bytes) -> bytes:
    """A minimal PNG; ``rows`` may be empty to make a header-only file that claims any size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
def ffmpeg_children() -> list[int]:
    """PIDs of our ffmpeg child processes (from Linux /proc; [] where that is not available)."""
    pids = set()
    for children in Path("/proc/self/task").glob("*/children"):   # one file per thread
        try:
            for pid in children.read_text().split():
                if Path(f"/proc/{pid}/comm").read_text().startswith("ffmpeg"):
                    pids.add(int(pid))
        except OSError:                                           # a thread or child just ended
            pass
    return sorted(pids)
def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())
def test_media_error_is_a_value_error():
    assert issubclass(MediaError, ValueError) and issubclass(MediaError, EmoPortraitsError)
    assert is_image_path("a/B.JPG") and not is_image_path("a.mp4")
    assert is_video_path("x.MOV") and is_video_path("x.webm") and not is_video_path("x.png")


# ---- images ---------------------------------------------------------------------------------------

def test_image_round_trip(tmp_path):
    img = smooth_frames(1, 80, 96)[0]
    assert np.array_equal(load_image(save_image(img, tmp_path / "a.png")), img)
    for ext in ("jpg", "webp"):
        back = load_image(save_image(img, tmp_path / f"a.{ext}"))
        assert back.shape == img.shape and back.dtype == np.uint8 and psnr(back, img) > 30
    assert files_in(tmp_path) == ["a.jpg", "a.png", "a.webp"]


@pytest.mark.parametrize("mode, note", [("L", "grayscale"), ("1", "grayscale"), ("P", "palette"),
                                        ("LA", "alpha"), ("RGBA", "alpha"), ("CMYK", "CMYK")])
def test_image_modes_become_rgb(tmp_path, caplog, mode, note):
    rgb = Image.fromarray(smooth_frames(1, 70, 90)[0])
    im = rgb.convert(mode)
    if mode in ("LA", "RGBA"):                                    # left half fully transparent
        alpha = np.full((70, 90), 255, np.uint8)
        alpha[:, :45] = 0
        im.putalpha(Image.fromarray(alpha))
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    im.save(path)
    with caplog.at_level(logging.INFO, logger="emoportraits"):
        out = load_image(path)
    assert out.shape == (70, 90, 3) and out.dtype == np.uint8
    assert any(r.getMessage().startswith("x.") and note in r.getMessage() for r in caplog.records)
    if mode in ("LA", "RGBA"):
        assert (out[:, :45] == 255).all()                         # composited on white
        assert (out[:, 45:] < 255).any()
    if mode in ("L", "1", "LA"):
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")         # imageio's vendored tifffile
def test_sixteen_bit_images(tmp_path, caplog):
    gray16 = (np.linspace(0, 65535, 80 * 70).reshape(70, 80)).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")            # I;16 PNG from a uint16 array
    rgb16 = np.stack([gray16, 65535 - gray16, np.full_like(gray16, 40000)], -1)
    imageio_v3 = pytest.importorskip("imageio.v3")
    imageio_v3.imwrite(tmp_path / "rgb16.tif", rgb16)             # 48-bit TIFF from a uint16 array
    rows = b"".join(b"\x00" + rgb16[i].astype(">u2").tobytes() for i in range(70))
    (tmp_path / "rgb16.png").write_bytes(png_bytes(80, 70, 2, 16, rows))   # 48-bit PNG
    expected = np.rint(rgb16 / 257.0)
    with caplog.at_level(logging.INFO, logger="emoportraits"):
        g = load_image(tmp_path / "g16.png")
        for name in ("rgb16.tif", "rgb16.png"):
            out = load_image(tmp_path / name)
            assert out.shape == (70, 80, 3) and np.abs(out - expected).max() <= 1
    assert np.abs(g[..., 0] - np.rint(gray16 / 257.0)).max() <= 1 and (g[..., 0] == g[..., 2]).all()
    notes = [r.getMessage() for r in caplog.records if "16-bit" in r.getMessage()]
    assert {n.split(":")[0] for n in notes} == {"g16.png", "rgb16.tif", "rgb16.png"}


def test_exif_orientation(tmp_path, caplog):
    stored = np.zeros((70, 100, 3), np.uint8)                     # wide: red left half, blue right half
    stored[:, :50, 0] = 255
    stored[:, 50:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6                                              # phone portrait: turn 90° clockwise
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    with caplog.at_level(logging.INFO, logger="emoportraits"):
        out = load_image(tmp_path / "phone.jpg")
    assert out.shape == (100, 70, 3)
    assert out[:40, :, 0].mean() > 200 and out[60:, :, 2].mean() > 200   # red on top, blue below
    assert any("EXIF orientation" in r.getMessage() for r in caplog.records)


def test_image_errors(tmp_path):
    with pytest.raises(MediaError, match="no such file"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image at all\n")
    with pytest.raises(MediaError, match=r"^notes\.png: could not be read as an image \("):
        load_image(tmp_path / "notes.png")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) * 6 // 10])
    with pytest.raises(MediaError, match=r"^cut\.jpg: could not be read as an image \(.*truncated"):
        load_image(tmp_path / "cut.jpg")
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    with pytest.raises(MediaError, match=r"^garbage\.jpg: could not be read as an image"):
        load_image(tmp_path / "garbage.jpg")
    Image.new("RGB", (100, 100)).save(tmp_path / "anim.gif")
    with pytest.raises(MediaError, match=r"unsupported image format '\.gif'; use one of \.jpg, \.jpeg, \.png"):
        load_image(tmp_path / "anim.gif")
    os.replace(tmp_path / "anim.gif", tmp_path / "anim.png")      # GIF content behind a .png name
    with pytest.raises(MediaError, match=r"unsupported image format GIF; use one of"):
        load_image(tmp_path / "anim.png")
    Image.new("RGB", (100, 40)).save(tmp_path / "strip.png")
    with pytest.raises(MediaError, match=r"^strip\.png: image is too small \(100×40\); the face needs at least 64"):
        load_image(tmp_path / "strip.png")
    with pytest.raises(MediaError, match=r"image is too large \(100×40\); downscale it below 0\.001 megapixels"):
        load_image(tmp_path / "strip.png", max_pixels=1000, min_side=8)
    with pytest.raises(MediaError, match="is a folder"):
        load_image(tmp_path)


def test_huge_image_is_refused_from_its_header(tmp_path):
    # 20000×20000 claimed, no pixel data: decoding would fail, so the refusal must come from the header
    # (Pillow's own decompression-bomb error must not pre-empt our message either).
    (tmp_path / "bomb.png").write_bytes(png_bytes(20000, 20000, 2, 8, b""))
    with pytest.raises(MediaError, match=r"^bomb\.png: image is too large \(20000×20000\); downscale it below 40"):
        load_image(tmp_path / "bomb.png")
    (tmp_path / "big.png").write_bytes(png_bytes(9000, 5000, 0, 8, b""))   # 45 MP: under Pillow's limit
    with pytest.raises(MediaError, match=r"too large \(9000×5000\)"):
        load_image(tmp_path / "big.png")


def test_save_image_is_atomic(tmp_path):
    img = smooth_frames(1, 64, 64)[0]
    (tmp_path / "taken.png").mkdir()                             # os.replace onto a folder fails
    with pytest.raises(MediaError, match=r"^taken\.png: could not be saved"):
        save_image(img, tmp_path / "taken.png")
    with pytest.raises(MediaError, match=r"cannot save images as '\.gif'"):
        save_image(img, tmp_path / "x.gif")
    with pytest.raises(MediaError, match=r"float32 array of shape \(64, 64, 3\); pass a uint8 RGB array"):
        save_image(img.astype(np.float32), tmp_path / "x.png")
    with pytest.raises(MediaError, match="uint8 RGB"):
        save_image(img[..., 0], tmp_path / "x.png")
    assert files_in(tmp_path) == ["taken.png"]                    # no temp file left behind
    save_image(img, tmp_path / "new" / "dir" / "ok.png")
    assert files_in(tmp_path / "new" / "dir") == ["ok.png"]


# ---- videos ---------------------------------------------------------------------------------------

def test_video_round_trip(tmp_path):
    frames = write_video(tmp_path / "v.mp4", n=20, fps=25)
    info = probe_video(tmp_path / "v.mp4")
    assert (info.width, info.height, info.fps, info.n_frames, info.has_audio) == (64, 48, 25.0, 20, False)
    assert info.duration == pytest.approx(0.8)
    back = list(iter_frames(tmp_path / "v.mp4"))
    assert len(back) == 20 and all(b.dtype == np.uint8 and b.shape == (48, 64, 3) for b in back)
    assert min(psnr(a, b) for a, b in zip(frames, back)) > 30
    assert back[0].flags.writeable
    assert len(list(iter_frames(tmp_path / "v.mp4", max_frames=7))) == 7
    assert files_in(tmp_path) == ["v.mp4"]


@pytest.mark.parametrize("ext, fps", [(".mkv", 30000 / 1001), (".mov", 24), (".mp4", 12.5)])
def test_video_rates_and_containers(tmp_path, ext, fps):
    # Matroska stores millisecond timestamps (33/34 ms steps at 29.97 fps): still constant-rate.
    write_video(tmp_path / f"v{ext}", n=40, fps=fps)
    info = probe_video(tmp_path / f"v{ext}")
    assert info.n_frames == 40 and info.fps == pytest.approx(fps, rel=1e-9)


@pytest.mark.parametrize("name, args", [
    ("t.mpg", ["-r", "25", "-c:v", "mpeg1video"]),                              # MPEG-PS, 90 kHz clock
    ("t.avi", ["-r", "30000/1001", "-c:v", "mpeg4"]),                           # frame-count timestamps
    ("t.webm", ["-r", "24", "-c:v", "libvpx-vp9", "-deadline", "realtime"]),     # 1 ms timestamps
    ("t.mkv", ["-r", "50", "-c:v", "libx264", "-bf", "3", "-pix_fmt", "yuv420p"]),  # B-frames reordered
])
def test_probe_matches_iter_frames_across_containers(tmp_path, name, args):
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x48:r=60:d=1", *args, tmp_path / name)
    info = probe_video(tmp_path / name)
    frames = list(iter_frames(tmp_path / name))
    assert info.n_frames == len(frames) > 20 and frames[0].shape == (48, 64, 3)
    assert info.fps == pytest.approx(float(eval(args[1])), rel=1e-9)


def test_file_names_that_look_like_options(tmp_path):
    out = tmp_path / "-odd name:1.mp4"                            # not an ffmpeg option, not a protocol
    write_video(out, n=4, audio_from=write_wav(tmp_path / "-tone:a.wav", 0.3))
    assert probe_video(out).n_frames == 4 == len(list(iter_frames(out))) and has_audio(out)
    extract_audio(out, tmp_path / "-x:y.wav")
    assert files_in(tmp_path) == ["-odd name:1.mp4", "-tone:a.wav", "-x:y.wav"]


def test_rotated_video(tmp_path):
    write_video(tmp_path / "v.mp4", n=5)                          # 64×48, then tagged "display rotated 90°"
    try:
        ffmpeg("-display_rotation", "90", "-i", tmp_path / "v.mp4", "-c", "copy", tmp_path / "rot.mp4")
    except subprocess.CalledProcessError:
        pytest.skip("this ffmpeg has no -display_rotation (added in 6.1)")
    info = probe_video(tmp_path / "rot.mp4")
    frames = list(iter_frames(tmp_path / "rot.mp4"))
    assert (info.width, info.height) == (48, 64) and frames[0].shape == (64, 48, 3) and len(frames) == 5


def test_video_writer_muxes_audio(tmp_path):
    short, long = write_wav(tmp_path / "short.wav", 0.5), write_wav(tmp_path / "long.wav", 3.0)
    for src in (short, long):                                     # the video keeps all its frames
        out = tmp_path / f"with_{src.stem}.mp4"
        write_video(out, n=30, fps=25, audio_from=src)
        info = probe_video(out)
        assert (info.n_frames, info.fps, info.has_audio) == (30, 25.0, True)
        wav = extract_audio(out, tmp_path / f"{src.stem}.wav")
        with wave.open(str(wav)) as f:
            assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, 16000)
            assert f.getnframes() / 16000 == pytest.approx(1.2, abs=0.07)   # audio ends with the video
    write_video(tmp_path / "offset.mp4", n=10, audio_from=long, audio_offset=1.0)
    assert probe_video(tmp_path / "offset.mp4").has_audio
    assert has_audio(long) and has_audio(tmp_path / "with_long.mp4")
    assert sorted(p.name for p in tmp_path.glob(".*")) == []


def test_video_writer_without_audio_source_audio(tmp_path, caplog):
    write_video(tmp_path / "silent.mp4", n=5)
    assert not has_audio(tmp_path / "silent.mp4")
    with caplog.at_level(logging.INFO, logger="emoportraits"):
        write_video(tmp_path / "out.mp4", n=5, audio_from=tmp_path / "silent.mp4")
    assert not probe_video(tmp_path / "out.mp4").has_audio
    assert any(r.getMessage().startswith("silent.mp4: has no audio track") for r in caplog.records)
    with pytest.raises(MediaError, match="no audio track; pass a video or audio file with sound"):
        extract_audio(tmp_path / "silent.mp4", tmp_path / "a.wav")
    with pytest.raises(MediaError, match="no such file"):
        VideoWriter(tmp_path / "x.mp4", 25, audio_from=tmp_path / "missing.wav")
    assert files_in(tmp_path) == ["out.mp4", "silent.mp4"]


def test_video_writer_odd_size_is_padded(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="emoportraits"):
        with VideoWriter(tmp_path / "odd.mp4", 25) as w:
            for f in smooth_frames(4, 49, 65):
                w.write(f)
    info = probe_video(tmp_path / "odd.mp4")
    assert (info.width, info.height, info.n_frames) == (66, 50, 4)
    assert any("padded to 66×50" in r.getMessage() for r in caplog.records)


def test_video_writer_leaves_nothing_on_failure(tmp_path):
    (tmp_path / "keep.mp4").write_bytes(b"old")                   # an existing output stays untouched
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(tmp_path / "keep.mp4", 25) as w:
            w.write(smooth_frames(1)[0])
            raise RuntimeError("boom")
    assert (tmp_path / "keep.mp4").read_bytes() == b"old"
    with pytest.raises(MediaError, match=r"^empty\.mp4: no frames were written"):
        with VideoWriter(tmp_path / "empty.mp4", 25):
            pass
    with pytest.raises(MediaError, match=r"^sizes\.mp4: frame 1 is 32×32 but the first frame was 64×48"):
        with VideoWriter(tmp_path / "sizes.mp4", 25) as w:
            w.write(smooth_frames(1)[0])
            w.write(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(MediaError, match=r"frame 0 is a float64 array"):
        with VideoWriter(tmp_path / "dtype.mp4", 25) as w:
            w.write(np.zeros((32, 32, 3)))
    w = VideoWriter(tmp_path / "gc.mp4", 25)                      # abandoned without close()
    w.write(smooth_frames(1)[0])
    del w
    with pytest.raises(MediaError, match=r"cannot write video as '\.avi'"):
        VideoWriter(tmp_path / "x.avi", 25)
    with pytest.raises(MediaError, match="fps must be a positive number"):
        VideoWriter(tmp_path / "x.mp4", 0)
    assert files_in(tmp_path) == ["keep.mp4"]
    assert ffmpeg_children() == []


def test_iter_frames_stops_ffmpeg_early(tmp_path):
    write_video(tmp_path / "v.mp4", n=60)
    gen = iter_frames(tmp_path / "v.mp4")
    assert next(gen).shape == (48, 64, 3)
    if CAN_LIST_CHILDREN:
        assert len(ffmpeg_children()) == 1
    gen.close()
    assert ffmpeg_children() == []
    for frame in iter_frames(tmp_path / "v.mp4"):                 # break: closed by garbage collection
        break
    del frame
    assert ffmpeg_children() == []
    with pytest.raises(MediaError, match="no such file"):
        iter_frames(tmp_path / "missing.mp4")                     # raised at the call, not at next()


def test_probe_video_errors(tmp_path):
    with pytest.raises(MediaError, match="no such file"):
        probe_video(tmp_path / "missing.mp4")
    (tmp_path / "notes.mp4").write_text("hello\n")
    with pytest.raises(MediaError, match=r"^notes\.mp4: could not be read as a video \(.*\); pass an mp4"):
        probe_video(tmp_path / "notes.mp4")
    with pytest.raises(MediaError, match=r"^notes\.mp4: could not be read as a video"):
        next(iter_frames(tmp_path / "notes.mp4"))
    (tmp_path / "clip.gif").write_bytes(b"GIF89a")
    with pytest.raises(MediaError, match=r"^clip\.gif: unsupported video format '\.gif'; use one of \.mp4, \.mov"):
        probe_video(tmp_path / "clip.gif")

    # an mp4 with only an audio stream: no frames at all
    write_audio_only_mp4(tmp_path / "audio_only.mp4")
    with pytest.raises(MediaError, match=r"^audio_only\.mp4: the file has no video stream, so no frames; pass a"):
        probe_video(tmp_path / "audio_only.mp4")

    # a video stream whose frames cannot be decoded (payload zeroed): zero frames
    write_video(tmp_path / "ok.mp4", n=3)
    data = bytearray((tmp_path / "ok.mp4").read_bytes())
    at = data.find(b"mdat")
    size = struct.unpack(">I", data[at - 4: at])[0]
    data[at + 4: at - 4 + size] = bytes(size - 8)
    (tmp_path / "blank.mp4").write_bytes(bytes(data))
    with pytest.raises(MediaError, match=r"^blank\.mp4: the video has no frames; pass a video with at least one"):
        probe_video(tmp_path / "blank.mp4")

    # variable frame rate: 1 s at 25 fps followed by 1 s at 10 fps, timestamps kept
    write_vfr_video(tmp_path / "vfr.mp4")
    with pytest.raises(MediaError, match=r"^vfr\.mp4: the video has a variable frame rate \(frame intervals from "
                                         r"40\.0 to 1[02]0\.0 ms\); re-encode it at a constant rate, e\.g\. ffmpeg -i "
                                         r"vfr\.mp4 -r \d+ vfr_cfr\.mp4$"):
        probe_video(tmp_path / "vfr.mp4")


def test_error_messages_are_one_line(tmp_path):
    (tmp_path / "bad.mov").write_bytes(os.urandom(2000))
    (tmp_path / "bad.webp").write_bytes(os.urandom(2000))
    for call in (lambda: probe_video(tmp_path / "bad.mov"), lambda: load_image(tmp_path / "bad.webp"),
                 lambda: has_audio(tmp_path / "bad.mov")):
        with pytest.raises(MediaError) as e:
            call()
        assert "\n" not in str(e.value) and str(e.value).startswith("bad.") and "; " in str(e.value)


# ---- the shared sample media ----------------------------------------------------------------------



def test_shared_videos():
    d05 = probe_video(shared_media("driving/d05_man_talking_outdoors_with_speech.mp4"))
    assert (d05.n_frames, d05.fps, d05.has_audio, d05.width, d05.height) == (175, 25.0, True, 480, 480)
    d04 = probe_video(shared_media("driving/d04_man_east_asian_smile_gaze_greenscreen.mp4"))
    assert (d04.n_frames, d04.fps, d04.has_audio) == (78, 25.0, False)
    assert d04.duration == pytest.approx(3.12)
    first = list(iter_frames(d04.path, max_frames=3))
    assert len(first) == 3 and first[0].shape == (512, 512, 3)


def test_shared_portrait_and_audio(tmp_path):
    img = load_image(shared_media("portraits/p03_man_east_asian_frontal_plain_bg.jpg"))
    assert img.shape == (1000, 1000, 3) and img.dtype == np.uint8
    wav = extract_audio(shared_media("driving/d06_grid_man_talking_with_audio.mp4"), tmp_path / "d06.wav")
    with wave.open(str(wav)) as f:
        assert (f.getnchannels(), f.getframerate()) == (1, 16000)
        assert f.getnframes() / 16000 == pytest.approx(3.0, abs=0.1)
