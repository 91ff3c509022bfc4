"""Loading user-provided metric weights (LPIPS, face embedders, FID feature extractors) offline.

No metric downloads anything: the user passes a file. State dicts are read with
``torch.load(weights_only=True)`` (no pickled code runs) or safetensors, and checked strictly.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import EmoPortraitsError, check_state_dict


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``torch.save``'d state dict (``.pt``/``.pth``/``.bin``)."""
    path = Path(path)
    if not path.is_file():
        raise EmoPortraitsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:        # pickled modules, truncated files: say what is expected instead
        raise EmoPortraitsError(f"{path}: not a plain state dict of tensors ({type(e).__name__}); save one "
                                f"with torch.save(module.state_dict(), path) or safetensors") from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]          # a common checkpoint wrapper
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise EmoPortraitsError(f"{path}: expected a dict of tensor names → tensors")
    return data


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> torch.nn.Module:
    """Copy ``state`` into ``module`` after a strict name and shape check (WeightsMismatchError)."""
    check_state_dict({k: tuple(v.shape) for k, v in module.state_dict().items()}, state, source)
    module.load_state_dict(state, strict=True)
    return module


def load_module(path_or_module, what: str) -> torch.nn.Module:
    """A feature network: an ``nn.Module`` / callable as is, a ``torch.export`` program (``.pt2``,
    ``torch.export.save``; its batch size must match the batches it gets) or a TorchScript file
    (``torch.jit.save``). Files hold code as well as weights: load only files you trust."""
    if isinstance(path_or_module, torch.nn.Module) or callable(path_or_module):
        return path_or_module
    path = Path(path_or_module)
    if not path.is_file():
        raise EmoPortraitsError(f"{what}: file not found: {path}")
    if path.suffix == ".pt2":
        try:
            return torch.export.load(str(path)).module()
        except Exception as e:
            raise EmoPortraitsError(f"{what}: {path} is not a torch.export program ({type(e).__name__})") from None
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:
        raise EmoPortraitsError(f"{what}: {path} is not a TorchScript file ({type(e).__name__}); export the "
                                f"network with torch.jit.save(torch.jit.script(net), path)") from None


def on_device(net, device) -> object:
    """A module moved to ``device`` in eval mode (an exported program's module refuses .eval(): it is
    already frozen); other callables as they are."""
    if isinstance(net, torch.nn.Module):
        net = net.to(device)
        try:
            net.eval()
        except NotImplementedError:
            pass
    return net
