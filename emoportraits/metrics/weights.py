"""Loading user-provided metric networks (face embedders, FID feature extractors) offline.

No metric downloads anything: the user passes a file or a module. Plain state dicts (LPIPS) are
read and checked by ``emoportraits.state_dict``.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import EmoPortraitsError


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
