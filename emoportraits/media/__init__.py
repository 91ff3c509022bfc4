"""Media files: images and videos in, frames out (and back).

A frame is always a ``numpy.uint8`` array of shape (H, W, 3), RGB. Unusable files raise
``emoportraits.errors.MediaError`` with a one-line message; harmless conversions are logged at INFO
level on the ``emoportraits`` logger. Face detection, cropping and masks live in ``faces``, ``crop``
and ``mask`` (imported on demand: they need torch).
"""
from .image import IMAGE_EXTENSIONS, is_image_path, load_image, save_image
from .video import (AUDIO_EXTENSIONS, VIDEO_EXTENSIONS, VideoInfo, VideoWriter, extract_audio, has_audio,
                    is_video_path, iter_frames, probe_video)

__all__ = ["IMAGE_EXTENSIONS", "is_image_path", "load_image", "save_image",
           "AUDIO_EXTENSIONS", "VIDEO_EXTENSIONS", "VideoInfo", "VideoWriter", "extract_audio", "has_audio",
           "is_video_path", "iter_frames", "probe_video"]
