"""Where the parts of a full EMOPortraits model live: one folder (or Hub repo) holds them all.

Layout (the bundled demo in ``assets/default-model`` and a converted release use the same)::

    MODEL/                      the main model: config.json + model.safetensors (EmoPortraits)
    MODEL/speech/               E_aud (SpeechEncoder), optional
    MODEL/pose/                 the speech-to-head-pose generator (PoseGenerator), optional
    MODEL/whisper/              the Whisper encoder E_aud was trained with (transformers format), optional

The main model stays at the root so ``EmoPortraits.from_pretrained(MODEL)`` keeps working on any
bundle. A part that is absent is ``None``; the caller says what is missing and how to add it.

Besides folders and Hub repo ids, a model may be named ``official``: the authors' released model,
converted and cached by ``emoportraits download`` (``resolve_model``).
"""
from __future__ import annotations

import os
from pathlib import Path

from .download import OFFICIAL_NAME, cached_official, ensure_official
from .errors import EmoPortraitsError
from .models.hub import NAME_RESOLVERS

COMPONENTS = ("speech", "pose", "whisper")
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "default-model"


def default_model() -> str:
    """``$EMOPORTRAITS_MODEL``, else the official model when it is cached, else the bundled demo
    checkpoint; an error when none exists."""
    env = os.environ.get("EMOPORTRAITS_MODEL")
    if env:
        return env
    if cached_official():
        return OFFICIAL_NAME
    if DEFAULT_MODEL.is_dir():
        return str(DEFAULT_MODEL)
    raise EmoPortraitsError("no model given (a folder from save_pretrained / `emoportraits convert`, or a Hub "
                            "repo id) and no bundled model; pass --model or set EMOPORTRAITS_MODEL")


def is_official(name) -> bool:
    """Whether ``name`` is the short name of the released model (a folder of that name wins)."""
    return isinstance(name, (str, os.PathLike)) and os.fspath(name) == OFFICIAL_NAME and not os.path.exists(name)


def resolve_model(name):
    """``official`` → the folder of the cached released model (downloaded first if needed, refused
    offline); any other name is returned unchanged."""
    if not is_official(name):
        return name
    return str(ensure_official())


# `EmoPortraits.from_pretrained("official")` resolves through this module (the models cannot import it)
NAME_RESOLVERS.append(resolve_model)


def looks_local(name: str) -> bool:
    """Whether ``name`` means a folder rather than a Hub repo id. Hub ids are ``name`` or
    ``owner/name``; anything that exists, starts like a path or has more than one ``/`` is a folder."""
    return os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" \
        and os.sep in name


def component_path(model: str | os.PathLike, component: str) -> str | None:
    """The local folder of ``component`` (one of COMPONENTS) in a bundle folder or Hub repo, or None."""
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {COMPONENTS}, got {component!r}")
    if is_official(model):           # a part of the released model: only if it is cached (it ships none)
        model = cached_official()
        if model is None:
            return None
    name = os.path.expanduser(os.fspath(model))
    if os.path.isdir(name):
        path = os.path.join(name, component)
        return path if os.path.isfile(os.path.join(path, "config.json")) else None
    try:                              # a Hub repo: fetch only that subfolder (served from the cache offline)
        from huggingface_hub import snapshot_download

        root = snapshot_download(repo_id=name, allow_patterns=[f"{component}/*"])
    except Exception:                 # offline without a cached copy, unknown repo: the part is absent
        return None
    path = os.path.join(root, component)
    return path if os.path.isfile(os.path.join(path, "config.json")) else None
