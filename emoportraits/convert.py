"""Convert the authors' released checkpoint into an ``EmoPortraits`` state_dict.

The authors publish two files:
* ``logs.zip`` → ``.../checkpoints/*_model.pth``: the generator's plain state_dict, with
  spectral-norm layers stored as ``weight_orig/_u/_v`` and weight-standardised convs as
  ``weight + bias``;
* ``repos.zip`` → ``head_pose_regressor.pth``: a torchvision ResNet-18 (9 outputs) state_dict.

Spectral norm is folded here: the authors' eval-mode forward divides ``weight_orig`` by
σ = u·(W v) (no power iteration), so the plain weight ``weight_orig / σ`` computes the same numbers.
Weight standardisation stays a layer (WSConv) because training needs it as a reparametrisation.

Every official key is either mapped, checked as a known constant (ImageNet statistics, identity
grids — we compute those ourselves), or listed in ``UNUSED_OFFICIAL_KEYS``; anything else raises.
"""
from __future__ import annotations

import os
import re

import torch

from .config import EmoPortraitsConfig
from .errors import EmoPortraitsError
from .models import EmoPortraits
from .models.geometry import identity_grid_2d, identity_grid_3d
from .models.resnet import IMAGENET_MEAN, IMAGENET_STD
from .state_dict import load_strict, read_state_dict

# Official entries that no inference or training path of ours reads.
UNUSED_OFFICIAL_KEYS = {
    "bn.running_mean": "BatchNorm1d of the authors' training code, never applied at inference",
    "bn.running_var": "BatchNorm1d of the authors' training code, never applied at inference",
    "bn.num_batches_tracked": "BatchNorm1d of the authors' training code, never applied at inference",
    "expression_embedder_nw.aligned_keypoints": "keypoint template of a disabled alignment mode",
    "expression_embedder_nw.identity_grid_512": "512² grid of a disabled alignment mode",
}

# Residual-block internals (shared by every pre-activation block of the generator). The
# look-behind anchors each pattern at the start of a dotted component.
_BLOCK = [(r"(?<![^.])block_feats\.0\.", "norm1."), (r"(?<![^.])block_feats\.2\.", "conv1."),
          (r"(?<![^.])block_feats\.3\.", "norm2."), (r"(?<![^.])block\.0\.", "conv2."),
          (r"(?<![^.])skip\.0\.", "skip.")]
# torchvision ResNet internals.
_RESNET = [(r"(?<![^.])bn(\d)\.", r"norm\1."), (r"(?<![^.])downsample\.0\.", "downsample.conv."),
           (r"(?<![^.])downsample\.1\.", "downsample.norm.")]

# (official prefix regex, our prefix — a callable of the match where it is computed —, rules for the rest)
_GENERATOR_RULES: list = [
    (r"local_encoder_nw\.from_rgb_\d+px\.", "appearance_encoder.from_rgb.", []),
    (r"local_encoder_nw\.enc_(\d+)_block=\d+px\.", r"appearance_encoder.blocks.\1.", _BLOCK),
    (r"local_encoder_nw\.finale_layers\.0\.", "appearance_encoder.out.norm.", []),
    (r"local_encoder_nw\.finale_layers\.2\.", "appearance_encoder.out.conv.", []),
    (r"idt_embedder_nw\.net\.fc\.", "identity_encoder.proj.", []),
    (r"idt_embedder_nw\.net\.", "identity_encoder.trunk.", _RESNET),
    (r"expression_embedder_nw\.net_face\.net\.fc\.", "expression_encoder.proj.", []),
    (r"expression_embedder_nw\.net_face\.net\.", "expression_encoder.trunk.", _RESNET),
    (r"expression_embedder_nw\.net_face\.pose_head\.", "expression_encoder.head.", []),
    (r"pose_unsqueeze_nw\.", "warp_embedding.z_to_embed.", []),
    (r"warp_embed_head_orig_nw\.", "warp_embedding.mix.", []),
    (r"volume_source_nw\.net\.net\.", "source_volume.blocks.", _BLOCK),
    (r"volume_process_nw\.input_tensor$", "canonical_unet.const_input", []),
    (r"volume_process_nw\.blocks_3d_down\.", "canonical_unet.down.", _BLOCK),
    (r"volume_process_nw\.blocks_3d_up\.", "canonical_unet.up.", _BLOCK),
    (r"volume_process_nw\.skip_blocks_3d_up\.", "canonical_unet.skips.", _BLOCK),
    (r"volume_process_nw\.head\.0\.", "canonical_unet.out.norm.", []),
    (r"volume_process_nw\.head\.2\.", "canonical_unet.out.conv.", []),
    (r"decoder_nw\.res_decoder\.0\.", "decoder.in_conv.", []),
    # res_decoder.0 is the input conv, so residual block J is res_decoder.(J+1)
    (r"decoder_nw\.res_decoder\.(\d+)\.", lambda m: f"decoder.res_blocks.{int(m.group(1)) - 1}.", _BLOCK),
    (r"decoder_nw\.img_decoder\.dec_img_blocks\.", "decoder.up_blocks.", _BLOCK),
    (r"decoder_nw\.img_decoder\.dec_img_head\.0\.", "decoder.out.norm.", []),
    (r"decoder_nw\.img_decoder\.dec_img_head\.2\.", "decoder.out.conv.", []),
]
for _official, _ours in (("xy_generator_nw", "warp_to_canonical"), ("uv_generator_nw", "warp_to_driver")):
    _GENERATOR_RULES += [
        (rf"{_official}\.first_conv\.", f"{_ours}.first_conv.", []),
        (rf"{_official}\.blocks_3d\.", f"{_ours}.blocks.", _BLOCK),
        (rf"{_official}\.pre_head\.0\.", f"{_ours}.out.norm.", []),
        (rf"{_official}\.head\.0\.0\.", f"{_ours}.out.conv.", []),
        # projector u/v number i belongs to the i-th adaptive norm: block i // 2, norm1 or norm2
        (rf"{_official}\.projector\.([uv])\.(\d+)$",
         lambda m, o=_ours: f"{o}.blocks.{int(m.group(2)) // 2}.norm{int(m.group(2)) % 2 + 1}.proj_{m.group(1)}", []),
    ]


def _apply(rules, text: str) -> str:
    for pattern, replacement in rules:
        text = re.sub(pattern, replacement, text)
    return text


def _rename(key: str) -> str | None:
    """Official generator key (after SN folding, so ``weight`` not ``weight_orig``) → ours, or None."""
    for pattern, ours, rules in _GENERATOR_RULES:
        m = re.match(pattern, key)
        if m:
            prefix = ours(m) if callable(ours) else m.expand(ours)
            return prefix + _apply(rules, key[m.end():])
    return None


def _rename_head_pose(key: str) -> str:
    """torchvision ResNet-18 key of ``head_pose_regressor.pth`` → ours."""
    rest = _apply(_RESNET, key)
    return "head_pose_net." + rest if rest.startswith("fc.") else "head_pose_net.trunk." + rest


def fold_spectral_norm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace every ``P.weight_orig/_u/_v`` triple by ``P.weight = weight_orig / (u · (W v))``."""
    out = {}
    for key, value in sd.items():
        if key.endswith(("weight_u", "weight_v")):
            continue
        if key.endswith("weight_orig"):
            prefix = key[: -len("weight_orig")]
            try:
                u, v = sd[prefix + "weight_u"], sd[prefix + "weight_v"]
            except KeyError as e:
                raise EmoPortraitsError(f"spectral-norm layer {prefix[:-1]} lacks {e.args[0]}") from None
            w = value.float()
            sigma = torch.dot(u.float(), torch.mv(w.reshape(w.shape[0], -1), v.float()))
            out[prefix + "weight"] = (w / sigma).to(value.dtype)
        else:
            out[key] = value
    orphans = [k for k in sd if k.endswith(("weight_u", "weight_v")) and k[:-8] + "weight_orig" not in sd]
    if orphans:
        raise EmoPortraitsError(f"spectral-norm vectors without weight_orig: {orphans[:5]}")
    return out


def _check_constant(key: str, value: torch.Tensor) -> None:
    """Buffers that the authors store but we compute: make sure they hold what we assume."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf in ("mean", "std"):
        expected = torch.tensor(IMAGENET_MEAN if leaf == "mean" else IMAGENET_STD).view(1, 3, 1, 1)
    elif value.dim() == 5:                                   # (1, 3, D, H, W) warp identity grid
        expected = identity_grid_3d(tuple(value.shape[2:])).permute(0, 4, 1, 2, 3)
    else:                                                    # (1, S², 3) crop grid rows (x, y, 1)
        side = int(round(value.shape[1] ** 0.5))
        g = identity_grid_2d(side).flatten(1, 2)
        expected = torch.cat([g, torch.ones_like(g[..., :1])], -1)
    if value.shape != expected.shape or not torch.allclose(value.float(), expected, atol=1e-6):
        raise EmoPortraitsError(f"official constant {key} differs from the value this package assumes")


_CONSTANT_KEYS = re.compile(r"^(idt_embedder_nw\.(mean|std)|expression_embedder_nw\.net_face\.(mean|std)|"
                            r"(xy|uv)_generator_nw\.identity_grid|expression_embedder_nw\.identity_grid)$")


def convert_official_state_dict(generator_sd: dict[str, torch.Tensor],
                                head_pose_sd: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The authors' generator (and head-pose) state_dicts → ours, ready for ``load_state_dict(strict=True)``."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in fold_spectral_norm(generator_sd).items():
        if key in UNUSED_OFFICIAL_KEYS:
            continue
        if _CONSTANT_KEYS.match(key):
            _check_constant(key, value)
            continue
        ours = _rename(key)
        if ours is None:
            unknown.append(key)
            continue
        out[ours] = value
    if unknown:
        raise EmoPortraitsError(f"{len(unknown)} official keys are not understood by the converter: "
                                f"{unknown[:10]}{' …' if len(unknown) > 10 else ''}")
    if head_pose_sd is not None:
        for key, value in head_pose_sd.items():
            out[_rename_head_pose(key)] = value
    return out


def load_official_checkpoint(checkpoint: str | os.PathLike,
                             head_pose: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """Read the authors' ``*_model.pth`` (+ ``head_pose_regressor.pth``) safely and convert them."""
    return convert_official_state_dict(read_state_dict(checkpoint),
                                       read_state_dict(head_pose) if head_pose else None)


def model_from_official(generator_sd: dict[str, torch.Tensor], head_pose_sd: dict[str, torch.Tensor] | None, *,
                        preset: str = "released", source: str = "converted checkpoint", **notes):
    """An ``EmoPortraits`` of ``preset`` holding the converted official weights, loaded strictly (a missing
    or unexpected key is an error that names it). ``notes`` go to ``config.extra`` (and the model card)."""
    state = convert_official_state_dict(generator_sd, head_pose_sd)
    config = EmoPortraitsConfig.preset(preset)
    config.extra.update(preset=preset, **notes)
    model = EmoPortraits(config)
    return load_strict(model, state, source)


def convert_to_pretrained(checkpoint, head_pose, out_dir, *, preset: str = "released",
                          push_to_hub: str | None = None):
    """Convert the official files and write a ``from_pretrained`` folder (optionally push it)."""
    model = model_from_official(
        read_state_dict(checkpoint), read_state_dict(head_pose), preset=preset,
        source=f"converted checkpoint {checkpoint}",
        license="other",
        weights_note="converted from the authors' released checkpoint (github.com/neeek2303/EMOPortraits); "
                     "the weights keep the authors' licence terms.")
    model.save_pretrained(out_dir)
    if push_to_hub:
        model.push_to_hub(push_to_hub)
    return model
