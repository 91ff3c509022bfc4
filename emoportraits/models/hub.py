"""Hub plumbing shared by the package's models (``EmoPortraits``, ``SpeechEncoder``).

Both models save one ``model.safetensors`` (plus ``config.json`` and a model card, written by
``huggingface_hub.PyTorchModelHubMixin``) and load it *strictly*: every tensor of the model must be
in the file with the right shape and the file may hold nothing else
(:func:`emoportraits.state_dict.load_strict`), so a checkpoint saved for another configuration, or
edited, fails with a message that names the offending keys instead of loading half a model.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from huggingface_hub import hf_hub_download
from huggingface_hub.constants import SAFETENSORS_SINGLE_FILE
from safetensors.torch import load_file, save_file
from torch import nn

from ..state_dict import load_strict

# Model names that stand for something other than a folder or a Hub repo: ``official``, the authors'
# release, downloaded and converted on first use. Its resolver (``emoportraits.bundle.resolve_model``) sits
# above the models (the download builds an EmoPortraits), so it registers itself here when the package is
# imported (``emoportraits/__init__.py``) instead of being imported by the models.
NAME_RESOLVERS: list[Callable[[object], object]] = []


def resolve_name(name):
    """``name`` through every registered resolver (a folder or a Hub repo id comes back unchanged)."""
    for resolver in NAME_RESOLVERS:
        name = resolver(name)
    return name


# what every model of the package tells the Hub about itself (class keywords of PyTorchModelHubMixin)
HUB_MIXIN_KWARGS = dict(library_name="emoportraits", repo_url="https://github.com/emoportraits/emoportraits",
                        paper_url="https://arxiv.org/abs/2404.19110", license="apache-2.0")


def save_weights(model: nn.Module, save_directory) -> None:
    """Write ``model``'s state dict as ``model.safetensors`` in ``save_directory`` (atomic rename)."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tmp = Path(save_directory) / (SAFETENSORS_SINGLE_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "library": "emoportraits"})
    os.replace(tmp, Path(save_directory) / SAFETENSORS_SINGLE_FILE)


def weights_path(model_id, *, revision=None, cache_dir=None, force_download=False, local_files_only=False,
                 token=None) -> str:
    """The local path of ``model.safetensors`` of a model folder or a Hub repository."""
    model_id = os.fspath(model_id)
    if os.path.isdir(model_id):
        path = os.path.join(model_id, SAFETENSORS_SINGLE_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{model_id} has no {SAFETENSORS_SINGLE_FILE}; is it a model folder "
                                    f"written by save_pretrained / `emoportraits convert`?")
        return path
    return hf_hub_download(repo_id=model_id, filename=SAFETENSORS_SINGLE_FILE, revision=revision,
                           cache_dir=cache_dir, force_download=force_download, token=token,
                           local_files_only=local_files_only)


def load_pretrained(cls: type, config_from_dict: Callable[[dict], object], *, model_id, revision=None,
                cache_dir=None, force_download=False, local_files_only=False, token=None,
                map_location: str = "cpu", strict: bool = True, **model_kwargs) -> nn.Module:
    """The body of a model's ``_from_pretrained``: build ``cls(config)`` from config.json (a dict,
    turned into the config class by ``config_from_dict``), load the weights strictly, return it in
    eval mode on ``map_location``."""
    if not strict:
        raise ValueError(f"{cls.__name__} only loads weights strictly (every key must match)")
    path = weights_path(model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                        local_files_only=local_files_only, token=token)
    config = model_kwargs.pop("config", None)
    if isinstance(config, dict):
        config = config_from_dict(config)
    if config is None:
        raise FileNotFoundError(f"{model_id} has no config.json")
    model = cls(config, **model_kwargs)
    load_strict(model, load_file(path, device=str(map_location)), path)
    return model.to(map_location).eval()
