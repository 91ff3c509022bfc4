"""Fine-tuning a trained model (``model.init_from``) with parts of it frozen (``model.freeze``).

A name in ``model.freeze`` is a submodule of `EmoPortraits` (``expression_encoder``, ``decoder``, …,
or a dotted path below one) or a group of them:

* ``motion`` — what defines the expression latent z and how it moves the volume: E_motion and the
  warp generators. Freezing it keeps z's meaning, so the speech encoder (E_aud), the mouth PCA and
  the pose generator trained against the original model still fit the fine-tuned one.
* ``identity`` — the identity encoder (who the source is).
* ``appearance`` — the appearance encoder and the source volume (what the source looks like).
* ``renderer`` — the canonical U-Net and the decoder (how the volume becomes an image).

The head-pose network is frozen in every training run already.
"""
from __future__ import annotations

from ..errors import EmoPortraitsError

__all__ = ["FREEZE_GROUPS", "apply_freeze"]

FREEZE_GROUPS = {
    "motion": ("expression_encoder", "warp_embedding", "warp_to_canonical", "warp_to_driver"),
    "identity": ("identity_encoder",),
    "appearance": ("appearance_encoder", "source_volume"),
    "renderer": ("canonical_unet", "decoder"),
}


def apply_freeze(model, names) -> list[str]:
    """Switch off the gradients of the modules named (or grouped) in ``names``; returns the module
    paths frozen. An unknown name is an error listing the known ones."""
    modules = dict(model.named_modules())
    paths: list[str] = []
    for name in names or ():
        for path in FREEZE_GROUPS.get(name, (name,)):
            if path not in modules or not path:
                known = sorted(set(FREEZE_GROUPS) | {n for n, _ in model.named_children()})
                raise EmoPortraitsError(f"model.freeze: no module or group {name!r}; known: {', '.join(known)}")
            modules[path].requires_grad_(False)
            paths.append(path)
    return paths
