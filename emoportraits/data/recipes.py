"""prepare-data recipes: where the videos of a known talking-head data set are and who speaks in each.

    emoportraits prepare-data --recipe voxceleb2 --videos VOX2_ROOT --out data/vox_speech [--part I/N]
    emoportraits prepare-data --recipe hdtf --videos HDTF_DIR --out data/hdtf

A recipe fixes how videos are found and what a clip's identity is, and sets defaults for the speech
mode (audio on, every frame, long clips, the data set's name); any option given on the command line
still wins (``--no-with-audio``, ``--stride 2``, ``--dataset-name …``).

``voxceleb2`` — a local copy of VoxCeleb2's videos: ``ROOT/{dev,test}/mp4/idNNNNN/VIDEO/CLIP.mp4``, or
ROOT pointing at one ``mp4`` folder (``ROOT/idNNNNN/VIDEO/CLIP.mp4``). Only ``.mp4`` files are used (the
``aac`` folders are skipped: the audio is the mp4's own track). Identity = the speaker folder
``idNNNNN``, so pairs and identity counts follow speakers, not YouTube videos.

``hdtf`` — HDTF's videos, one file per video named ``SPEAKER_NNN.mp4`` (``WRA_AlexandriaOcasioCortez_000.mp4``,
``RD_Radio1_000.mp4``) anywhere below ROOT: a local copy, or a snapshot of a copy on the Hugging Face
Hub made beforehand, e.g.
``huggingface-cli download global-optima-research/HDTF --repo-type dataset --local-dir DIR``
(or ``huggingface_hub.snapshot_download``). Identity = the name without its trailing ``_NNN``.
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EmoPortraitsError
from ..media.video import VIDEO_EXTENSIONS

__all__ = ["RECIPES", "Recipe", "discover", "describe", "apply_defaults", "BASE_DEFAULTS"]

# what prepare-data uses without a recipe
BASE_DEFAULTS = {"stride": 5, "frames_per_clip": 32, "with_audio": False}
_SPEAKER_ID = re.compile(r"^id\d+$")
_TAKE = re.compile(r"_\d+$")


@dataclass(frozen=True)
class Recipe:
    name: str
    layout: str                                      # for error messages and --help
    defaults: dict = field(default_factory=dict)     # argparse dests → values


RECIPES = {
    "voxceleb2": Recipe("voxceleb2", "ROOT/{dev,test}/mp4/idNNNNN/VIDEO/CLIP.mp4 (or ROOT = an mp4 folder)",
                        {"dataset_name": "voxceleb2", "stride": 1, "frames_per_clip": 250, "with_audio": True}),
    "hdtf": Recipe("hdtf", "SPEAKER_NNN.mp4 files anywhere below ROOT (a local copy or a Hub snapshot)",
                   {"dataset_name": "hdtf", "stride": 1, "frames_per_clip": 500, "with_audio": True}),
}


def _recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise EmoPortraitsError(f"unknown recipe {name!r}; choose one of {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def _key(rel: str) -> str:
    return rel[: -len(Path(rel).suffix)] if Path(rel).suffix else rel


def describe(name: str, rel: str) -> dict:
    """identity / video / clip / key of a video's relative path under the recipe's layout."""
    _recipe(name)
    parts = rel.split("/")
    stem = Path(parts[-1]).stem
    if name == "voxceleb2":
        if len(parts) < 3 or not _SPEAKER_ID.match(parts[-3]):
            raise EmoPortraitsError(f"{rel}: not in VoxCeleb2's layout ({RECIPES[name].layout})")
        return {"identity": parts[-3], "video": "/".join(parts[:-1]), "clip": stem, "key": _key(rel)}
    return {"identity": _TAKE.sub("", stem) or stem, "video": stem, "clip": stem, "key": _key(rel)}


def discover(name: str, root) -> list[str]:
    """The recipe's videos under ``root`` (relative POSIX paths, sorted); refuses another layout."""

    recipe = _recipe(name)
    found = [r for r in discover_videos(root) if Path(r).suffix.lower() == ".mp4"]
    if not found:
        raise EmoPortraitsError(f"{root}: no .mp4 files found for --recipe {name} ({recipe.layout})")
    for rel in found:
        describe(name, rel)             # one file in another layout: say which before any work
    if name == "hdtf":
        keys = {}
        for rel in found:
            stem = Path(rel).stem
            if stem in keys:
                raise EmoPortraitsError(f"{root}: {keys[stem]} and {rel} are the same HDTF video twice; "
                                        f"keep one copy (or point --videos at one folder)")
            keys[stem] = rel
    return found


def apply_defaults(args: argparse.Namespace) -> None:
    """Fill the options left unset (None) on the command line: the recipe's defaults, then the base ones."""
    recipe = _recipe(args.recipe) if getattr(args, "recipe", None) else None
    for dest, value in {**BASE_DEFAULTS, **(recipe.defaults if recipe else {})}.items():
        if getattr(args, dest, None) is None:
            setattr(args, dest, value)


def discover_videos(root) -> list[str]:
    """Relative POSIX paths of all video files under ``root`` (hidden entries skipped), sorted."""
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)
