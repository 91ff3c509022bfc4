"""Image files ↔ frames.

The package's one frame convention: a frame is a ``numpy.uint8`` array of shape (H, W, 3), RGB.
Everything that reads media returns frames in that form; everything that writes takes them.

Errors are ``MediaError`` with a one-line message that names the file, says what is wrong and what to
do. Harmless conversions (grayscale → RGB, alpha dropped, 16 → 8 bit, EXIF rotation) are logged at
INFO level on the ``emoportraits`` logger, also one line each.
"""
from __future__ import annotations

import logging
import os
import re
import struct
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import MediaError
from .files import check_frame, display_name, existing_file, temp_path, unlink

logger = logging.getLogger("emoportraits")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
_READ_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP", "DIB", "TIFF"}   # MPO: multi-picture phone JPEGs
_WRITE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP",
                  ".tif": "TIFF", ".tiff": "TIFF"}
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
_SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_PIL_LIMIT_LOCK = threading.Lock()


def is_image_path(path) -> bool:
    """True when ``path`` has an image extension (the content is not checked)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# ---- reading --------------------------------------------------------------------------------------

def _open_header(p: Path) -> Image.Image:
    """Open lazily (header only). Pillow's own decompression-bomb limit (≈179 MP) is lifted here because
    load_image applies its own ``max_pixels`` from the header before any pixel is decoded."""
    with _PIL_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(p)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _raw_mode(im: Image.Image) -> str:
    """The file's pixel layout before decoding (e.g. 'RGB;16B' for a 16-bit PNG that Pillow shows as RGB)."""
    for tile in getattr(im, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        raw = args[0] if isinstance(args, tuple) and args else args
        if isinstance(raw, str):
            return raw
    return im.mode


def _exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright; 2..8 = mirrored and/or turned), 1 when absent or broken."""
    try:
        value = int(im.getexif().get(0x0112, 1))
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def load_image(path, *, max_pixels: int = 40_000_000, min_side: int = 64) -> np.ndarray:
    """Read an image file as a uint8 (H, W, 3) RGB frame, upright per its EXIF orientation."""
    p = existing_file(path, IMAGE_EXTENSIONS, "image")
    name = display_name(p)
    try:
        im = _open_header(p)
    except UnidentifiedImageError:
        raise MediaError(f"{name}: could not be read as an image (not a recognised image file); "
                         f"pass a JPEG, PNG, WebP, BMP or TIFF file") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise MediaError(f"{name}: could not be read as an image ({_one_line(e)}); "
                         f"re-save it as PNG or JPEG") from None
    with im:
        if im.format not in _READ_FORMATS:
            raise MediaError(f"{name}: unsupported image format {im.format}; "
                             f"use one of {', '.join(IMAGE_EXTENSIONS)}")
        # Everything up to im.load() reads only the header: the size checks run before any decoding.
        # (16 bits per sample: Pillow may present such a file as 8-bit RGB/RGBA, so ask the decoder.)
        raw = _raw_mode(im)
        sixteen_bit = bool(re.search(r";16[BLN]?$", raw)) and not raw.startswith("BGR")
        w, h = im.size
        if w * h > max_pixels:
            raise MediaError(f"{name}: image is too large ({w}×{h}); downscale it below "
                             f"{max_pixels / 1e6:g} megapixels")
        if min(w, h) < min_side:
            raise MediaError(f"{name}: image is too small ({w}×{h}); the face needs at least "
                             f"{min_side} pixels on each side, use a larger photo")
        try:
            im.load()
            orientation = _exif_orientation(im)         # after load: PNG keeps EXIF after the pixels
            upright = ImageOps.exif_transpose(im)
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
            raise MediaError(f"{name}: could not be read as an image ({_one_line(e)}); "
                             f"the file may be truncated or corrupt, re-save or re-download it") from None
    if orientation != 1:
        logger.info(f"{name}: turned upright according to its EXIF orientation ({orientation})")
    return _to_rgb(upright, name, sixteen_bit)


def _to_rgb(im: Image.Image, name: str, sixteen_bit: bool) -> np.ndarray:
    """Convert any Pillow mode to uint8 RGB, logging one INFO note per conversion."""
    mode = im.mode
    if mode.startswith("I") or mode == "F":                 # 16/32-bit integer or float grayscale
        if mode == "F":
            raise MediaError(f"{name}: floating-point images are not supported; save it as an 8-bit image")
        values = np.asarray(im).astype(np.float64)
        sixteen_bit = True
        im, mode = Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)), "L"
    if sixteen_bit:
        logger.info(f"{name}: 16-bit image scaled to 8-bit")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        logger.info(f"{name}: palette image converted to RGB")
        mode = im.mode
    if mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba).convert("RGB")
        logger.info(f"{name}: alpha channel dropped (transparent parts composited on white)")
    elif mode in ("L", "1"):
        im = im.convert("RGB")
        logger.info(f"{name}: grayscale image converted to RGB")
    elif mode != "RGB":
        im = im.convert("RGB")
        logger.info(f"{name}: {mode} image converted to RGB")
    return np.array(im, dtype=np.uint8)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "…"


# ---- writing --------------------------------------------------------------------------------------

def save_image(image: np.ndarray, path) -> Path:
    """Write a uint8 (H, W, 3) RGB frame — or (H, W, 4) RGBA for formats with transparency (png, webp,
    tiff); the format follows the extension. Atomic: the file appears complete or not at all
    (written to a hidden temp file beside it, then renamed)."""
    dest = Path(path)
    fmt = _WRITE_FORMATS.get(dest.suffix.lower())
    if fmt is None:
        raise MediaError(f"{display_name(dest)}: cannot save images as '{dest.suffix or '(no extension)'}'; "
                         f"use one of {', '.join(_WRITE_FORMATS)}")
    frame = check_frame(image, display_name(dest), channels=(3, 4) if fmt in _ALPHA_FORMATS else (3,))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dest)
    try:
        # O_EXCL + mode 0o666 (minus umask): the final file gets ordinary permissions.
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as fh:
            Image.fromarray(frame).save(fh, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException as e:
        unlink(tmp)
        if isinstance(e, Exception):
            raise MediaError(f"{display_name(dest)}: could not be saved ({_one_line(e)}); "
                             f"check the folder is writable and the path is not a folder") from None
        raise
    return dest
