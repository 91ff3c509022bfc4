"""Media files: images, videos and audio in, frames and samples out (and back).

A frame is always a ``numpy.uint8`` array of shape (H, W, 3), RGB; audio is float32 mono samples. Unusable
files raise ``emoportraits.errors.MediaError`` with a one-line message; harmless conversions are logged at
INFO level on the ``emoportraits`` logger. Every ffmpeg call of the package is made by ``ffmpeg`` (through
``video`` and ``audio``). Face detection, cropping and masks live in ``faces``, ``crop`` and ``mask``
(imported on demand: they need torch).
"""
from .audio import extract_audio, has_audio, load_audio, resample
from .files import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS
from .image import IMAGE_EXTENSIONS, is_image_path, load_image, save_image
from .video import VideoInfo, VideoWriter, is_video_path, iter_frames, probe_video, to_constant_rate

__all__ = ["IMAGE_EXTENSIONS", "is_image_path", "load_image", "save_image",
           "AUDIO_EXTENSIONS", "VIDEO_EXTENSIONS", "VideoInfo", "VideoWriter", "extract_audio", "has_audio",
           "is_video_path", "iter_frames", "probe_video", "to_constant_rate", "load_audio", "resample"]
