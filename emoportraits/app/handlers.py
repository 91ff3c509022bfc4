"""The app's event functions: check inputs and limits, run the pipeline, report progress.

Every function is wrapped by ``user_errors``: whatever goes wrong reaches the browser (or a
``gradio_client`` caller) as one readable ``gr.Error`` line, never a traceback, and the server keeps
serving. Unexpected errors are also logged with their traceback on the server.
"""
from __future__ import annotations

import functools
import logging
import random
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np

from ..errors import EmoPortraitsError, MediaError
from ..media import is_video_path, load_audio, load_image, probe_video, save_image, to_constant_rate
from ..pipelines import ReenactOptions
from ..poses import generate_poses
from .loading import AppModels, Limits

logger = logging.getLogger("emoportraits")

POSE_STILL, POSE_DRIVER, POSE_GENERATED = "still", "from a driving video", "generated from the speech"
FPS = 25.0


def user_errors(func):
    """Turn any exception into a one-line ``gr.Error`` (the queue worker survives either way)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except gr.Error:
            raise
        except (EmoPortraitsError, ValueError, FileNotFoundError, OSError) as e:
            raise gr.Error(_one_line(e), print_exception=False) from None
        except Exception as e:      # a bug: say so briefly, keep the details in the server log
            logger.exception("%s failed", func.__name__)
            raise gr.Error(f"internal error ({type(e).__name__}: {_one_line(e)}); the app is still running, "
                           f"try again or with other inputs", print_exception=False) from None
    return wrapper


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= 400 else text[:397] + "…"


def _progress_callback(progress, desc: str):
    def update(done: int, total: int) -> None:
        progress((done, total), desc=desc, unit="frames")
    return update


class Handlers:
    """The functions behind the three tabs, bound to the loaded models and the limits."""

    def __init__(self, models: AppModels, limits: Limits, workdir: Path | None = None):
        self.models, self.limits = models, limits
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="emoportraits-app-"))
        self.workdir.mkdir(parents=True, exist_ok=True)

    # ---- inputs ---------------------------------------------------------------------------------
    def _outdir(self) -> Path:
        """A fresh folder for one request's files; those of requests over two hours old are deleted
        (Gradio has copied them into its own cache by then), so a long-running Space keeps its disk."""
        now = time.time()
        for old in self.workdir.iterdir():
            if old.is_dir() and now - old.stat().st_mtime > 7200:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.workdir))

    def _portrait(self, path, what: str = "portrait") -> np.ndarray:
        if not path:
            raise gr.Error(f"Upload a {what} photo first.", print_exception=False)
        image = load_image(path)
        h, w = image.shape[:2]
        side = self.limits.max_image_side
        if max(h, w) > side:
            raise gr.Error(f"The {what} is {w}×{h} pixels; this app takes photos up to {side} pixels on the "
                           f"longer side. Downscale it and try again.", print_exception=False)
        return image

    def _audio_seconds(self, path) -> float:
        if not path:
            raise gr.Error("Upload or record some speech first.", print_exception=False)
        seconds = len(load_audio(path)) / 16000
        if seconds > self.limits.max_audio_seconds:
            raise gr.Error(f"The audio is {seconds:.1f} s long; this app takes at most "
                           f"{self.limits.max_audio_seconds:g} s of speech. Trim it and try again.",
                           print_exception=False)
        return seconds

    def _video(self, path, what: str):
        """A probed driving video; a variable-frame-rate one (webcam recordings) is resampled first."""
        if not is_video_path(path):
            raise MediaError(f"{Path(path).name}: the {what} must be a video (mp4, mov, webm, …)")
        try:
            return probe_video(path)
        except MediaError as e:
            if "variable frame rate" not in str(e):
                raise
        return probe_video(to_constant_rate(path, self._outdir() / (Path(path).stem + "_cfr.mp4"), FPS))

    def _need(self, *parts: str) -> None:
        reason = self.models.why_not(*parts)
        if reason:
            raise gr.Error(reason, print_exception=False)

    # ---- tabs -------------------------------------------------------------------------------------
    def reenact(self, source, driver_video, driver_image, mode, paste_back, expression_scale, smooth,
                max_seconds, progress=gr.Progress()):
        """Portrait + driving video (→ mp4) or image (→ png). Returns (video, image, message)."""

        image = self._portrait(source)
        if not driver_video and not driver_image:
            raise gr.Error("Add a driving video (upload or webcam) or a driving image.", print_exception=False)
        opts = ReenactOptions(relative=mode != "absolute", paste_back=bool(paste_back),
                              expression_scale=float(expression_scale), smooth=float(smooth),
                              min_motion=self.limits.min_motion)
        out = self._outdir()
        pipe = self.models.pipeline
        if not driver_video:            # an image driver: one image out
            progress(0.1, desc="animating the portrait")
            result = pipe.reenact(image, self._portrait(driver_image, "driving image"), options=opts, progress=False)
            return None, str(save_image(result, out / "result.png")), "Done: one image."
        info = self._video(driver_video, "driving video")
        seconds = min(float(max_seconds or self.limits.max_video_seconds), self.limits.max_video_seconds)
        opts.max_frames = max(1, int(round(seconds * info.fps)))
        note = ""
        if info.n_frames > opts.max_frames:
            note = (f" The driving video is {info.duration:.1f} s long; only its first "
                    f"{opts.max_frames / info.fps:.1f} s were used (Max length option; at most "
                    f"{self.limits.max_video_seconds:g} s here).")
        progress(0, desc="preparing the portrait")
        video = pipe.reenact(image, info.path, out / "result.mp4", options=opts,
                             progress=_progress_callback(progress, "animating"))
        n = min(info.n_frames, opts.max_frames)
        return str(video), None, f"Done: {n} frames at {info.fps:g} fps.{note}"

    def speak(self, source, audio, pose_mode, pose_video, progress=gr.Progress()):
        """Portrait + speech → talking mp4 with the audio. Returns (video, message)."""
        self._need("speech", "whisper")
        image = self._portrait(source)
        seconds = self._audio_seconds(audio)
        kwargs = {"pose": "still"}
        if pose_mode == POSE_DRIVER:
            if not pose_video:
                raise gr.Error("Choose a driving video for the head motion, or another head pose option.",
                               print_exception=False)
            kwargs["pose"] = f"driver:{self._video(pose_video, 'head-motion video').path}"
        elif pose_mode == POSE_GENERATED:
            kwargs = self._generated_pose_kwargs()
        progress(0, desc="reading the speech")
        video = self.models.pipeline.speak(image, audio, self._outdir() / "talking.mp4",
                                           speech_model=self.models.speech, whisper=self.models.whisper,
                                           progress=_progress_callback(progress, "animating"),
                                           min_motion=self.limits.min_motion, **kwargs)
        return str(video), f"Done: {seconds:.1f} s of speech, head pose {pose_mode}."

    def poses(self, audio, source, seed, temperature, render, progress=gr.Progress()):
        """Speech → head-pose sequence: plot, json + npy files, optionally a video of the portrait.
        Returns (plot, files, video, message)."""
        self._need("pose", "whisper")
        seconds = self._audio_seconds(audio)
        # a random draw gets a seed of its own, so the rendered video moves exactly as plotted
        seed = random.randrange(2**31) if seed is None or seed == "" or int(seed) < 0 else int(seed)
        image = self._portrait(source) if render or source else None
        if render:
            self._need("speech")
        # a portrait given: the poses start from its head pose, as `speak` will render them
        initial = self._initial_pose(image) if image is not None else None
        progress(0.1, desc="generating head poses")
        sequence = generate_poses(self.models.pose, self.models.whisper, audio, fps=FPS, seed=seed,
                                  temperature=float(temperature), initial_pose=initial)
        out = self._outdir()
        files = [str(sequence.save(out / "head_poses.json")), str(sequence.save(out / "head_poses.npy"))]
        plot = str(sequence.plot(out / "head_poses.png"))
        video = None
        if render:
            progress(0.3, desc="rendering the portrait")
            video = str(self.models.pipeline.speak(
                image, audio, out / "posed.mp4", speech_model=self.models.speech, whisper=self.models.whisper,
                progress=_progress_callback(progress, "animating"), min_motion=self.limits.min_motion,
                **self._generated_pose_kwargs(pose_seed=seed, pose_temperature=float(temperature))))
        start = ", starting from the portrait's head pose" if initial is not None else ""
        return plot, files, video, (f"Done: {seconds:.1f} s of speech → {len(sequence)} head poses at {FPS:g} fps "
                                    f"(seed {seed}{start}).")

    def _initial_pose(self, image: np.ndarray):
        """The portrait's head pose for the pose generator (None for a model trained without one)."""
        if not self.models.pose.config.initial_pose:
            return None
        pipe = self.models.pipeline
        return pipe.initial_pose_for(pipe.prepare_source(image, name="the portrait"), self.models.pose)

    def _generated_pose_kwargs(self, **extra) -> dict:
        """Keyword arguments of ``pipeline.speak`` for head poses from the pose generator."""
        self._need("pose")
        return {"pose": "generated", "pose_model": self.models.pose, **extra}
