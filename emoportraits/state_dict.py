"""Weight files in, modules out: the package's one strict loader.

Every weight file the package reads goes through here: its own models (``from_pretrained``, see
``models.hub``), the authors' release (``convert``, ``download``), the converted Whisper encoder, LPIPS
and the loss networks (VGG19, VGG-Face, the gaze VGG-16). `read_state_dict` reads safetensors or
``torch.load(weights_only=True)`` (no pickled code runs); `load_strict` accepts a state dict only when
every tensor of the module is in it with the right shape and it holds nothing else, apart from the keys a
caller drops on purpose by name. A wrong file fails with a `WeightsMismatchError` that names the keys
instead of loading half a model.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, TypeVar

import torch
from safetensors.torch import load_file
from torch import nn

from .errors import EmoPortraitsError, WeightsMismatchError

__all__ = ["read_state_dict", "load_strict"]

ModuleT = TypeVar("ModuleT", bound=nn.Module)
WRAPPERS = ("state_dict", "model")       # checkpoint dicts that hold the state dict under one of these keys


def read_state_dict(source: str | os.PathLike | BinaryIO, label: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, or of a ``torch.save``'d state dict (a path or a binary file
    object; ``.pt``/``.pth``/``.bin``/``.ckpt``), unwrapped from a ``{"state_dict": …}`` or ``{"model": …}``
    checkpoint. ``label`` names the source in errors (default: the path)."""
    label = str(label if label is not None else source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise EmoPortraitsError(f"{label}: no such file")
        if path.suffix == ".safetensors":
            return load_file(str(path))
    try:
        data = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # pickled modules or foreign objects, truncated files: their first line says which
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EmoPortraitsError(f"{label} could not be read as a state dict (torch.load with weights_only=True: "
                                f"{first}); save one with torch.save(module.state_dict(), path) or safetensors"
                                ) from None
    for key in WRAPPERS:
        if isinstance(data, dict) and isinstance(data.get(key), dict) and (key == "state_dict" or len(data) == 1):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise EmoPortraitsError(f"{label} is not a plain state_dict (name → tensor)")
    return data


def load_strict(module: ModuleT, state: dict[str, torch.Tensor] | str | os.PathLike, source: str | None = None, *,
                ignored: Iterable[str] = (), ignored_prefixes: Iterable[str] = (),
                rename: Callable[[str], str] | None = None, layout: str | None = None,
                assign: bool = False) -> ModuleT:
    """Copy ``state`` (a state dict, or a file for `read_state_dict`) into ``module``, every key accounted
    for, and return the module.

    Keys of ``state`` in ``ignored`` (exact names) or starting with one of ``ignored_prefixes`` are dropped
    on purpose; ``rename`` maps the others to the module's names. Anything else that does not match (a
    missing, an unexpected or a wrongly shaped tensor) raises `WeightsMismatchError` naming the keys (as the
    file names them), from ``source`` (default: the file), with the ``layout`` the module expects as its
    hint. ``assign``: as ``nn.Module.load_state_dict`` (for a module built on the meta device).
    """
    if not isinstance(state, dict):
        source = source or str(state)
        state = read_state_dict(state)
    source = source or f"{type(module).__name__} weights"
    ignored, prefixes, expected = set(ignored), tuple(ignored_prefixes), module.state_dict()
    mapped, unexpected, wrong = {}, [], []
    for key, value in state.items():
        if key in ignored or (prefixes and key.startswith(prefixes)):
            continue
        name = rename(key) if rename else key
        if name not in expected or not isinstance(value, torch.Tensor):
            unexpected.append(key)
        elif tuple(value.shape) != tuple(expected[name].shape):
            wrong.append((key, tuple(value.shape), tuple(expected[name].shape)))
        mapped[name] = value
    missing = [k for k in expected if k not in mapped]
    if missing or unexpected or wrong:
        raise WeightsMismatchError(source, sorted(missing), sorted(unexpected), sorted(wrong), layout=layout)
    module.load_state_dict(mapped, strict=True, assign=assign)
    return module
