"""Files in, files out: the reenactment pipeline on top of the EmoPortraits model.

    photo ──detect→crop→mask──► model.encode_source (once)
    driver frames (streamed) ──detect→smooth box→crop──► θ_d (smoothed), z_d
        ──relative/absolute motion──► model.drive ──paste back / composite──► encoder (streamed)

The model only ever sees aligned crops at its resolution; faces, masks, video and audio live in
``emoportraits.media``. The command line and the app call ``EmoPortraitsPipeline.reenact``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterator, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from . import poses
from .animation import MotionCheck, PreparedSource, ReenactOptions, even_sides
from .audio import WhisperFeatures, align_to_frames, n_frames_for
from .bundle import looks_local
from .data.pose_labels import fit_pose, landmarks_to_crop
from .errors import EmoPortraitsError, MediaError
from .media import (VideoWriter, is_image_path, is_video_path, iter_frames, load_audio, load_image, probe_video,
                    save_image)
from .media import mask as masks     # looked up at each call: a replaced function (a test's) is used
from .media.crop import BoxSmoother, PoseSmoother, composite, crop, green_key, paste_back, square_crop_box
from .media.faces import FaceDetector, select_face
from .media.photo_warp import PhotoWarp, warp_mask
from .models import Avatar, EmoPortraits
from .models.geometry import pose9_from_raw9

__all__ = ["EmoPortraitsPipeline", "ReenactOptions", "PreparedSource", "MotionCheck", "default_device"]

logger = logging.getLogger("emoportraits")
PathLike = Union[str, os.PathLike]


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class EmoPortraitsPipeline:
    """Reenactment from ordinary files: a photo and a driving video or image."""

    def __init__(self, model: EmoPortraits, *, detector=None, masker=None):
        self.model = model.eval()
        self.detector = detector or FaceDetector()
        self.masker = masker or masks.PortraitMasker()

    @classmethod
    def from_pretrained(cls, model: PathLike, *, device: str | torch.device | None = None,
                        dtype: torch.dtype = torch.float32, mask_model: PathLike | None = None,
                        **kwargs) -> "EmoPortraitsPipeline":
        """Load a model folder or Hub repo (``model``) onto ``device`` (default: cuda, mps or cpu)."""
        name = str(model)
        local = looks_local(name)
        if local and not os.path.isdir(os.path.expanduser(name)):
            raise EmoPortraitsError(f"{name}: no such model folder; pass a folder written by "
                                    f"save_pretrained / `emoportraits convert`, or a Hub repo id")
        try:
            net = EmoPortraits.from_pretrained(os.path.expanduser(name) if local else name)
        except EmoPortraitsError:
            raise
        except Exception as e:  # a broken folder keeps its own message; Hub errors: offline, unknown repo
            if local and isinstance(e, (FileNotFoundError, ValueError)):
                raise
            raise EmoPortraitsError(f"{name}: could not load the model ({type(e).__name__}: "
                                    f"{str(e).splitlines()[0] if str(e) else ''})") from None
        net = net.to(device=torch.device(device) if device else default_device(), dtype=dtype)
        masker = masks.PortraitMasker.from_file(mask_model) if mask_model else None
        return cls(net, masker=masker, **kwargs)

    # ---- tensors ⇄ arrays ------------------------------------------------------------------------
    def _to_tensor(self, crops: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2)
        return x.to(self.model.device).to(self.model.dtype).div_(255)

    @staticmethod
    def _to_uint8(images: torch.Tensor) -> np.ndarray:
        return images.float().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()

    # ---- source ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def prepare_source(self, image: np.ndarray, *, name: str = "source", options: ReenactOptions | None = None
                       ) -> PreparedSource:
        opts = options or ReenactOptions()
        faces = self.detector.detect(image)
        face = select_face(faces, opts.face_index, name)
        if len(faces) > 1:
            logger.info("%s: %d faces found; animating face %d (0 = largest; choose with --face-index)",
                        name, len(faces), opts.face_index)
        size = self.model.config.image_size
        box = square_crop_box(face, (image.shape[1], image.shape[0]), opts.crop_scale)
        cropped = crop(image, box, size)
        # the segmenter can return nothing for a face it does not know (a dark-skinned, turned face):
        # the face region is always part of what is animated
        mask = np.maximum(self.masker(cropped), masks.face_region_mask(face, box, size))
        # the released model was trained on sources with the background removed (binarised mask)
        keep = torch.from_numpy(masks.binarize(mask)).to(self.model.device, self.model.dtype)[None, None]
        avatar = self.model.encode_source(self._to_tensor(cropped[None]), mask=keep)
        landmarks = None if face.landmarks is None else landmarks_to_crop(face.landmarks, box)
        # the source's own map (and, for the photo render's residual, its own render): the reference
        # every frame's motion is measured from; the network render needs only the map
        photo_mode = opts.render_mode(size) == "photo"
        reference, xy = self.model.drive_with_flow(avatar, z=avatar.z, theta=avatar.theta, render=photo_mode)
        photo = None
        if photo_mode:
            photo = self._photo_warp(image, face, box, reference, xy, opts)
        return PreparedSource(image=image, box=box, crop=cropped, mask=mask, avatar=avatar, landmarks=landmarks,
                              reference_xy=xy, photo=photo)

    def _photo_warp(self, image: np.ndarray, face, box: np.ndarray, reference: torch.Tensor,
                    reference_xy: torch.Tensor, opts: ReenactOptions):
        """The photo render's state: the crop at the resolution it is pasted at (at most 1024²)."""
        side = int(np.clip(round(float(box[2])), 16, 1024))
        big = crop(image, box, side)
        mask = np.maximum(self.masker(big), masks.face_region_mask(face, box, side))
        face_small = masks.face_region_mask(face, box, self.model.config.image_size)
        return PhotoWarp(big, mask, reference_xy, reference, face=face_small, residual=opts.residual)

    @torch.inference_mode()
    def source_pose9(self, source: PreparedSource) -> torch.Tensor:
        """The portrait's absolute head pose, (9,) float32 on the CPU: 6D rotation + translation from the
        canonical frame of the head-pose labels (``data.pose_labels``), the convention in which the pose
        generator's ``initial_pose`` was trained. Its face mesh is fitted to the label template exactly as
        ``prepare-data`` labels a frame; without a mesh, the head-pose network on the unmasked crop."""
        # Not θ_s: it is estimated on the masked crop, which the head-pose network was not trained on
        # (with the demo model, 18° from the labels on average over the shared portraits; unmasked: 11°).
        if source.landmarks is not None:
            raw9 = torch.from_numpy(fit_pose(source.landmarks))
        else:
            raw9 = self.model.head_pose_raw(self._to_tensor(source.crop[None]))[0].cpu()
        return pose9_from_raw9(raw9)

    def initial_pose_for(self, source: PreparedSource, pose_model) -> torch.Tensor | None:
        """``generate_poses``' ``initial_pose`` for ``source``: its head pose (`source_pose9`) when
        ``pose_model`` (a `PoseGenerator`) was trained with one (``config.initial_pose``), else None."""
        return self.source_pose9(source) if pose_model.config.initial_pose else None

    # ---- driver ---------------------------------------------------------------------------------
    def _driver_motion(self, frames: Iterator[np.ndarray], name: str, opts: ReenactOptions
                       ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Per frame: (raw 9 pose numbers, z) of the driver, with smoothed crop box and pose."""
        size = self.model.config.image_size
        box_filter, pose_filter = BoxSmoother(opts.smooth), PoseSmoother(opts.smooth)

        def smooth(raw: torch.Tensor) -> torch.Tensor:      # the head-pose numbers, over the frames
            return torch.as_tensor(pose_filter.update(raw[0].cpu().numpy()), device=raw.device)[None]
        box = None
        missed = 0
        for index, frame in enumerate(frames):
            if box is None or not opts.fixed_crop:
                faces = self.detector.detect(frame)
                if faces:
                    box = box_filter.update(square_crop_box(faces[0], (frame.shape[1], frame.shape[0]),
                                                            opts.crop_scale))
                elif box is None:
                    raise MediaError(f"{name}: no face found in frame {index}; the driver must show a face "
                                     f"from its first frame")
                else:
                    missed += 1      # keep the last box: a brief occlusion must not end the video
            yield self.model.motion(self._to_tensor(crop(frame, box, size)[None]), pose_filter=smooth)
        if missed:
            logger.info("%s: no face in %d frame(s); the previous crop was reused", name, missed)

    @staticmethod
    def transfer(source: Avatar, theta_d: torch.Tensor, z_d: torch.Tensor, first: tuple | None,
                 opts: ReenactOptions) -> tuple[torch.Tensor, torch.Tensor]:
        """Target (θ, z) for the source from the driver's (θ_d, z_d).

        θ maps the posed head to canonical, so the driver's motion since its first frame,
        inv(θ_d0)·θ_d, composes onto the source as θ = θ_s · inv(θ_d0) · θ_d (relative mode);
        absolute mode takes θ_d as is. Expression: z = z_s + α·(z_d − z_ref) with z_ref = z_d0
        (relative) or z_s (absolute), α = expression_scale.
        """
        a = opts.expression_scale
        if opts.relative:
            theta0, z0 = first
            theta = source.theta @ torch.linalg.inv(theta0) @ theta_d
            z = source.z + a * (z_d - z0)
        else:
            theta, z = theta_d, source.z + a * (z_d - source.z)
        return theta, z

    # ---- composition ------------------------------------------------------------------------------
    def _render(self, src: PreparedSource, z: torch.Tensor, theta: torch.Tensor, opts: ReenactOptions) -> np.ndarray:
        """One output frame for target (z, θ): rendered, masked and composed."""
        image, xy = self.model.drive_with_flow(src.avatar, z=z, theta=theta)
        if src.photo is not None:
            rendered, mask = src.photo.render(xy, image, with_mask=not opts.paste_back)
            if opts.paste_back:     # the photo render is the photo beyond the head: paste it whole
                return paste_back(src.image, rendered, src.box, None, feather=opts.feather)
        else:
            rendered = self._to_uint8(image)[0]
            # the source's animated region, moved as the model moved it: a face the segmenter does
            # not see in the render is still pasted
            moved = warp_mask(src.mask, xy - src.reference_xy)
            key, rendered = green_key(rendered)          # no green halo from the training background
            mask = np.maximum(self.masker(rendered) * key, moved)
        if opts.paste_back:
            return paste_back(src.image, rendered, src.box, mask, feather=opts.feather)
        return composite(rendered, mask, "transparent" if opts.background == "transparent" else opts.background)

    # ---- public entry point ----------------------------------------------------------------------------
    @torch.inference_mode()
    def reenact(self, source: PathLike | np.ndarray, driver: PathLike | np.ndarray, output: PathLike | None = None,
                *, options: ReenactOptions | None = None, audio: PathLike | None = None,
                progress: bool | Callable[[int, int], None] = True, **overrides) -> Path | np.ndarray:
        """Animate ``source`` (a photo path or uint8 RGB array) with ``driver`` (a video or image path,
        or a uint8 RGB array). With ``output`` the result is written there (video: H.264/AAC mp4 with
        the driver's fps and audio, or ``audio``'s; image driver: an image) and its path returned;
        without, an image driver returns the composed uint8 array.
        Keyword ``overrides`` set fields of ``ReenactOptions`` (e.g. ``relative=False``).
        """
        opts = ReenactOptions.resolve(options, overrides, "reenact")
        src_name = str(source) if not isinstance(source, np.ndarray) else "source"
        drv_name = str(driver) if not isinstance(driver, np.ndarray) else "driver"
        source_image = load_image(source) if not isinstance(source, np.ndarray) else source
        driver_is_video = not isinstance(driver, np.ndarray) and is_video_path(driver)
        if not isinstance(driver, np.ndarray) and not driver_is_video and not is_image_path(driver):
            raise MediaError(f"{drv_name}: unsupported driver file type; pass a video (mp4, mov, mkv, …) "
                             f"or an image (jpg, png, …)")
        if output is not None:
            out_is_video = is_video_path(output)
            if driver_is_video != out_is_video:
                kind = "a video (e.g. .mp4)" if driver_is_video else "an image (e.g. .png)"
                raise MediaError(f"{output}: a {'video' if driver_is_video else 'image'} driver gives {kind}; "
                                 f"change the output file extension")
            if opts.background == "transparent" and not opts.paste_back and (
                    out_is_video or Path(output).suffix.lower() not in (".png", ".webp", ".tif", ".tiff")):
                raise MediaError(f"{output}: {'mp4 video' if out_is_video else 'this image format'} has no "
                                 f"transparency; write a .png or use a colour background or paste-back")
        src = self.prepare_source(source_image, name=src_name, options=opts)

        if not driver_is_video:
            frame = load_image(driver) if not isinstance(driver, np.ndarray) else driver
            result = self._render_frames(src, iter([frame]), drv_name, opts)
            image = next(result)
            if output is None:
                return image
            save_image(image, output)
            return Path(output)

        info = probe_video(driver)
        total = info.n_frames if opts.max_frames is None else min(info.n_frames, opts.max_frames)
        if output is None:
            raise ValueError("a video driver needs an output path")
        audio_from = audio if audio is not None else (driver if info.has_audio else None)
        if audio_from is None:
            logger.info("%s has no audio track; the video is silent (add one with --audio)", Path(drv_name).name)
        bar = self._progress(progress, total, Path(drv_name).name)
        check = MotionCheck(src, Path(str(output)).name, opts.min_motion)
        with VideoWriter(output, info.fps, audio_from=audio_from) as writer:
            frames = iter_frames(driver, max_frames=opts.max_frames)
            for i, image in enumerate(self._render_frames(src, frames, drv_name, opts)):
                writer.write(even_sides(check(image)))
                bar(i + 1, total)
            check.finish("does the driver's face move?")      # inside: a still result is not written
        return Path(output)

    @torch.inference_mode()
    def speak(self, source: PathLike | np.ndarray, audio: PathLike, output: PathLike, *, speech_model,
              whisper=None, pose: str = "still", fps: float = 25.0, options: ReenactOptions | None = None,
              progress: bool | Callable[[int, int], None] = True, pose_model=None, pose_seed: int | None = None,
              pose_temperature: float = 1.0, **overrides) -> Path:
        """Animate ``source`` from speech: E_aud (``speech_model``, a `SpeechEncoder`) predicts the
        expression z of every frame from Whisper features of ``audio``, starting from the photo's own
        z; the head stays still (``pose="still"``) or follows a driver video's head motion since its
        first frame (``pose="driver:PATH"``), or moves as ``pose_model`` (a `PoseGenerator`) generates
        from the same audio (``pose="generated"``; ``pose_seed`` / ``pose_temperature``: its noise draw
        and scale), the motion applied relative to the photo's own pose and, for a pose model trained with
        an initial pose, generated from it (`initial_pose_for`). The mp4 carries ``audio`` and
        lasts as long (± 1 frame).
        ``whisper``: a `WhisperFeatures`, or a Hub id / folder of a Whisper model matching the speech
        model's ``audio_dim`` (default openai/whisper-tiny).
        """
        opts = ReenactOptions.resolve(options, overrides, "speak")
        if not is_video_path(output):
            raise MediaError(f"{output}: speech gives a video; use an .mp4 output")
        if opts.background == "transparent" and not opts.paste_back:
            raise MediaError(f"{output}: mp4 video has no transparency; use a colour background or paste-back")
        driver = None
        if pose.startswith("driver:"):
            driver = pose[len("driver:"):]
            probe_video(driver)
        elif pose == "generated":
            if pose_model is None:
                raise ValueError("pose='generated' needs a pose_model (a PoseGenerator)")
        elif pose != "still":
            raise ValueError(f"pose must be 'still', 'generated' or 'driver:VIDEO', got {pose!r}")
        samples = load_audio(audio)
        n = n_frames_for(len(samples) / 16000, fps)
        if n < 1:
            raise MediaError(f"{audio}: the audio is shorter than one video frame")
        if opts.max_frames is not None:
            n = min(n, opts.max_frames)
        whisper = whisper if isinstance(whisper, WhisperFeatures) else WhisperFeatures(whisper or "openai/whisper-tiny")
        if whisper.dim != speech_model.config.audio_dim:
            raise ValueError(f"the Whisper model gives {whisper.dim}-d features but the speech model expects "
                             f"{speech_model.config.audio_dim}; pass the Whisper model it was trained with")
        if pose_model is not None and pose == "generated" and whisper.dim != pose_model.config.audio_dim:
            raise ValueError(f"the Whisper model gives {whisper.dim}-d features but the pose model expects "
                             f"{pose_model.config.audio_dim}; pass the Whisper model both were trained with")
        image = load_image(source) if not isinstance(source, np.ndarray) else source
        src = self.prepare_source(image, name=str(source) if not isinstance(source, np.ndarray) else "source",
                                  options=opts)
        features = whisper(samples)
        aligned = align_to_frames(features, n, fps, k=speech_model.config.audio_frames_per_step)
        device = self.model.device
        speech_model = speech_model.to(device).eval()
        z_seq = speech_model(src.avatar.z.float(), aligned[None].to(device)).to(self.model.dtype)
        if pose == "generated":
            motion = poses.generate_poses(pose_model.to(device), whisper, samples, fps=fps, seed=pose_seed,
                                    temperature=pose_temperature, n_frames=n, features=features,
                                    initial_pose=self.initial_pose_for(src, pose_model))
            thetas = iter(motion.theta(src.avatar.theta)[:, None])     # θ_s · M_t, one (1, 4, 4) per frame
        else:
            thetas = self._pose_track(src, driver, opts)
        bar = self._progress(progress, n, Path(str(audio)).name)
        check = MotionCheck(src, Path(str(output)).name, opts.min_motion)
        with VideoWriter(output, fps, audio_from=audio) as writer:
            for t in range(n):
                theta = next(thetas)
                writer.write(even_sides(check(self._render(src, z_seq[:, t], theta, opts))))
                bar(t + 1, n)
            check.finish("is there speech in the audio? if so, this model barely moves the mouth: "
                         "try head poses generated from the speech (--pose generated)" if pose == "still" else
                         "is there speech in the audio?")
        return Path(output)

    def _pose_track(self, src: PreparedSource, driver: PathLike | None, opts: ReenactOptions) -> Iterator[torch.Tensor]:
        """Head poses, forever: the source's own, or a driver's motion (its last pose held at its end)."""
        theta = src.avatar.theta
        if driver is not None:
            first = None
            for theta_d, z_d in self._driver_motion(iter_frames(driver), str(driver), opts):
                first = first or (theta_d, z_d)
                theta, _ = self.transfer(src.avatar, theta_d, z_d, first, ReenactOptions(relative=True))
                yield theta
        while True:
            yield theta

    def _render_frames(self, src: PreparedSource, frames: Iterator[np.ndarray], name: str,
                       opts: ReenactOptions) -> Iterator[np.ndarray]:
        first = None
        for theta_d, z_d in self._driver_motion(frames, name, opts):
            if first is None:
                first = (theta_d, z_d)
            theta, z = self.transfer(src.avatar, theta_d, z_d, first, opts)
            yield self._render(src, z, theta, opts)

    @staticmethod
    def _progress(progress, total: int, desc: str) -> Callable[[int, int], None]:
        if callable(progress):
            return progress
        if not progress:
            return lambda done, n: None
        bar = tqdm(total=total, desc=desc, unit="frame")

        def update(done: int, n: int) -> None:
            bar.update(done - bar.n)
            if done >= n:
                bar.close()
        return update
