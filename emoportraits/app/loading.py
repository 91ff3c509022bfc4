"""Load every part of a model bundle (see ``emoportraits.bundle``) for the app, part by part.

A missing or unloadable optional part (speech, pose, whisper) is recorded with a sentence saying why,
so the tab that needs it can say so instead of crashing; only the main model is required.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..audio import WhisperFeatures
from ..bundle import DEFAULT_MODEL, component_path, default_model, is_official, resolve_model
from ..errors import EmoPortraitsError
from ..models import PoseGenerator, SpeechEncoder
from ..pipelines import EmoPortraitsPipeline

logger = logging.getLogger("emoportraits")

DOWNLOAD_HINT = ("For the authors' full-resolution (512²) model run `emoportraits download` once, with internet, "
                 "and restart the app: it then uses that model.")
OFFICIAL_NOTE = ("The authors' released weights (CC BY-NC-SA 4.0: non-commercial use, credit the authors, share "
                 "alike; provenance and terms in the model folder's README.md).")


@dataclass
class Limits:
    """What one request may ask for: keeps a shared (GPU) Space responsive."""
    max_video_seconds: float = 10.0      # driver videos are cut to this length
    max_audio_seconds: float = 20.0      # longer speech is refused (the video must match the audio)
    max_image_side: int = 4096           # larger photos are refused (detection, upload time)
    min_motion: float = 0.5              # a video whose face moves less (/255) is refused, not shown as done


@dataclass
class AppModels:
    name: str                            # what was asked for: a folder or a Hub repo id
    pipeline: object                     # EmoPortraitsPipeline
    speech: object | None = None         # SpeechEncoder
    pose: object | None = None           # PoseGenerator
    whisper: object | None = None        # WhisperFeatures
    missing: dict = field(default_factory=dict)    # part → why it is unavailable

    @property
    def is_demo(self) -> bool:
        return os.path.isdir(self.name) and Path(self.name).resolve() == DEFAULT_MODEL.resolve()

    def why_not(self, *parts: str) -> str | None:
        """A sentence saying which of ``parts`` this bundle lacks, or None when all are loaded."""
        reasons = [self.missing[p] for p in parts if p in self.missing]
        return " ".join(reasons) if reasons else None

    def describe(self) -> str:
        """Markdown shown at the top of the app: the model and what it can do."""
        p = self.pipeline.model.config
        n = sum(t.numel() for t in self.pipeline.model.parameters())
        lines = [f"**Model:** `{self.name}` ({p.image_size}×{p.image_size}, {n / 1e6:.1f} M parameters, "
                 f"on {self.pipeline.model.device})"]
        parts = ", ".join(f"{k}: {'loaded' if k not in self.missing else 'absent'}"
                          for k in ("speech", "pose", "whisper"))
        lines.append(f"**Parts:** {parts}")
        if self.is_demo:
            lines.append("⚠️ This is the bundled **low-resolution demo checkpoint**: results are blurry. "
                         + DOWNLOAD_HINT)
        if is_official(self.name):
            lines.append(OFFICIAL_NOTE)
        return "  \n".join(lines)


def _part(name: str, part: str, load, missing: dict, absent: str):
    path = component_path(name, part)
    if path is None:
        missing[part] = absent
        return None
    try:
        return load(path)
    except Exception as e:    # a broken optional part must not stop the rest of the app
        logger.warning("%s/%s could not be loaded: %s", name, part, e)
        missing[part] = f"The {part}/ part of the model could not be loaded ({type(e).__name__}: {e})."
        return None


def _local_copy(name: str) -> str:
    """A local folder of ``name``: the folder itself, or the Hub repo downloaded once (all its parts)."""
    if os.path.isdir(os.path.expanduser(name)) or not _HUB_ID.fullmatch(name):
        return os.path.expanduser(name)
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id=name)
    except Exception as e:       # offline without a cached copy, unknown or private repo
        raise EmoPortraitsError(f"{name}: no such folder, and no such model could be fetched from the Hub "
                                f"({type(e).__name__}); check the path or repo id and the network") from None


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def load_models(model: str | None = None, device: str | None = None) -> AppModels:
    """Load ``model`` (a folder or Hub repo; default ``$EMOPORTRAITS_MODEL``, else the bundled demo)."""
    name = model or default_model()
    folder = _local_copy(resolve_model(name))      # `official`: downloaded here on first use
    pipeline = EmoPortraitsPipeline.from_pretrained(folder, device=device)
    missing: dict = {}
    shown = f"`{name}`"

    def load_speech(path):
        return SpeechEncoder.from_pretrained(path).to(pipeline.model.device).eval()

    def load_pose(path):
        return PoseGenerator.from_pretrained(path).to(pipeline.model.device).eval()

    def load_whisper(path):
        return WhisperFeatures(path, device=pipeline.model.device)

    speech = _part(folder, "speech", load_speech, missing,
                   f"This model ({shown}) has no speech encoder (speech/ folder), so speech-driven animation is off.")
    pose = _part(folder, "pose", load_pose, missing,
                 f"This model ({shown}) has no head-pose generator (pose/ folder), so poses cannot be generated.")
    whisper = _part(folder, "whisper", load_whisper, missing,
                    f"This model ({shown}) has no Whisper encoder (whisper/ folder), which speech and pose "
                    f"generation need.")
    return AppModels(name=name, pipeline=pipeline, speech=speech, pose=pose, whisper=whisper, missing=missing)
