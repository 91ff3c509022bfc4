"""Configuration of the EMOPortraits stage-1 model.

Every architectural size is a field, so the released 512² network and the small CPU/test networks
are the same code with different numbers. The config is a plain dataclass; ``to_dict`` /
``from_dict`` (``ConfigBase``, shared by every model config of the package) are what ``config.json``
holds (the Hub mixin serialises it for us).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

Triple = tuple[int, int, int]


def _tuplify(value: Any) -> Any:
    """JSON turns tuples into lists; turn them back (recursively) so configs compare equal."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuplify(v) for v in value)
    return value


class ConfigBase:
    """What every model config dataclass of the package shares, written once: ``to_dict`` / ``from_dict``
    (what ``config.json`` holds; unknown fields are refused, so a typo or another model's config does not
    load silently) and the checks of its numbers, whose errors name the config and the field."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}; is this the config.json of another model?")
        return cls(**data)

    def check_positive_integers(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be a positive integer, got {value!r}")

    def check_fraction(self, name: str) -> None:
        """``name`` in [0, 1) (a dropout probability)."""
        value = getattr(self, name)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{type(self).__name__}.{name} must be in [0, 1), got {value!r}")


@dataclass
class EmoPortraitsConfig(ConfigBase):
    # ---- images -------------------------------------------------------------------------------
    image_size: int = 512                 # source/driver/output resolution (square)
    norm_groups: int = 32                 # GroupNorm groups everywhere in the generator

    # ---- identity / global encoder (ResNet-50, GroupNorm) -> e_s ------------------------------
    idt_input_size: int = 256
    idt_layers: tuple[int, ...] = (3, 4, 6, 3)
    idt_widths: tuple[int, ...] = (64, 128, 256, 512)
    idt_bottleneck: bool = True           # ResNet-50 bottlenecks (expansion 4); False = basic blocks
    embed_channels: int = 512             # channels of e_s and of the warp embedding
    embed_spatial: int = 4                # e_s is embed_channels × embed_spatial²

    # ---- appearance encoder E_app -> volume v_s ----------------------------------------------
    app_base_channels: int = 128
    app_block_channels: tuple[int, ...] = (256, 512, 512)   # one stride-2 block each
    volume_channels: int = 96
    volume_depth: int = 16

    # ---- expression encoder E_motion (ResNet-18, GroupNorm) -> z -----------------------------
    exp_crop_size: int = 128
    exp_layers: tuple[int, ...] = (2, 2, 2, 2)
    exp_widths: tuple[int, ...] = (64, 128, 256, 512)
    exp_fc_channels: int = 128
    exp_pool_size: int = 4
    z_dim: int = 128
    exp_dropout: float = 0.2
    exp_crop_zoom: float = 0.5            # the crop covers the central half of the posed face box

    # ---- head-pose network (torchvision ResNet-18, BatchNorm, 9 outputs) ---------------------
    pose_input_size: int = 128
    pose_layers: tuple[int, ...] = (2, 2, 2, 2)
    pose_widths: tuple[int, ...] = (64, 128, 256, 512)

    # ---- warp generators W_s-> and W_->d -----------------------------------------------------
    warp_channels: tuple[int, ...] = (512, 256, 128, 64, 32)
    warp_first_depth: int = 4             # first_conv makes a warp_channels[0] × D × s × s volume
    warp_upsample: tuple[Triple, ...] = ((2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2))
    warp_depth_pool: int = 2              # AvgPool over depth after the last block

    # ---- source 3D blocks and G3D (U-Net) ----------------------------------------------------
    source_volume_blocks: int = 3
    unet_channels: tuple[int, ...] = (192, 384, 512)
    unet_depth_upsample: int = 2          # depth ×2 before the down path, ÷2 after the up path
    unet_pools: tuple[Triple, ...] = ((1, 2, 2), (2, 2, 2))  # between consecutive down blocks

    # ---- G2D decoder --------------------------------------------------------------------------
    dec_channels: int = 512
    dec_res_blocks: int = 6
    dec_up_channels: tuple[int, ...] = (320, 192, 128)      # one ×2 stage each

    extra: dict = field(default_factory=dict)  # free-form notes (e.g. provenance); not architectural

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name != "extra":
                setattr(self, f.name, _tuplify(getattr(self, f.name)))
        self.validate()

    # ---- derived sizes ------------------------------------------------------------------------
    @property
    def feature_size(self) -> int:
        """Spatial size of the appearance features / volume (image_size / 2**blocks)."""
        return self.image_size // 2 ** len(self.app_block_channels)

    @property
    def volume_shape(self) -> Triple:
        return (self.volume_depth, self.feature_size, self.feature_size)

    @property
    def idt_out_channels(self) -> int:
        return self.idt_widths[-1] * (4 if self.idt_bottleneck else 1)

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"EmoPortraitsConfig: {msg}")

        need(self.image_size % 2 ** len(self.app_block_channels) == 0,
             "image_size must be divisible by 2**len(app_block_channels)")
        need(len(self.dec_up_channels) == len(self.app_block_channels),
             "the decoder needs one ×2 stage per encoder down-sampling block")
        need(len(self.warp_upsample) == len(self.warp_channels) - 1,
             "warp_upsample needs one entry per warp block (len(warp_channels) - 1)")
        d, h, w = self.warp_first_depth, self.embed_spatial, self.embed_spatial
        for sd, sh, sw in self.warp_upsample:
            d, h, w = d * sd, h * sh, w * sw
        need((d // self.warp_depth_pool, h, w) == self.volume_shape,
             f"warp generator output {(d // self.warp_depth_pool, h, w)} != volume {self.volume_shape}")
        need(len(self.unet_pools) == len(self.unet_channels) - 1,
             "unet_pools needs one entry between each pair of U-Net down blocks")
        for c in (self.app_base_channels, *self.app_block_channels, self.volume_channels,
                  *self.warp_channels, *self.unet_channels, self.dec_channels, *self.dec_up_channels,
                  self.embed_channels, *self.idt_widths, *self.exp_widths):
            need(c % self.norm_groups == 0, f"{c} channels are not divisible by norm_groups={self.norm_groups}")

    # ---- presets -------------------------------------------------------------------------------
    @classmethod
    def released(cls) -> "EmoPortraitsConfig":
        """The authors' released 512² architecture (160,704,361 generator parameters)."""
        return cls()

    @classmethod
    def small(cls) -> "EmoPortraitsConfig":
        """A 256² model with a quarter of the widths: trains and runs comfortably on a CPU."""
        return cls(
            image_size=256, norm_groups=16, idt_input_size=128, idt_layers=(2, 2, 2, 2),
            idt_widths=(32, 64, 128, 256), embed_channels=256, app_base_channels=64,
            app_block_channels=(64, 128, 256), volume_channels=32, volume_depth=16,
            exp_crop_size=128, exp_widths=(32, 64, 128, 256), exp_fc_channels=64, z_dim=128,
            pose_widths=(32, 64, 128, 256),
            warp_channels=(256, 128, 64, 32, 16),
            warp_upsample=((2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 1, 1)), unet_channels=(64, 128, 256),
            dec_channels=256, dec_res_blocks=3, dec_up_channels=(128, 64, 32),
        )

    @classmethod
    def tiny(cls) -> "EmoPortraitsConfig":
        """A 64² toy with every code path of the released model; a forward pass takes milliseconds."""
        return cls(
            image_size=64, norm_groups=4, idt_input_size=32, idt_layers=(1, 1, 1, 1),
            idt_widths=(8, 8, 16, 16), idt_bottleneck=True, embed_channels=32, embed_spatial=4,
            app_base_channels=8, app_block_channels=(16, 16, 32), volume_channels=8, volume_depth=4,
            exp_crop_size=64, exp_layers=(1, 1, 1, 1), exp_widths=(8, 8, 16, 16), exp_fc_channels=8,
            exp_pool_size=2, z_dim=16, pose_input_size=32, pose_layers=(1, 1, 1, 1),
            pose_widths=(8, 8, 16, 16),
            warp_channels=(32, 16, 8), warp_first_depth=2, warp_upsample=((2, 1, 1), (2, 2, 2)),
            warp_depth_pool=2, source_volume_blocks=1, unet_channels=(16, 16, 32),
            unet_pools=((1, 2, 2), (2, 2, 2)), dec_channels=32, dec_res_blocks=1,
            dec_up_channels=(16, 8, 8),
        )

    PRESETS = ("released", "small", "tiny")

    @classmethod
    def preset(cls, name: str) -> "EmoPortraitsConfig":
        if name not in cls.PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(cls.PRESETS)}")
        return getattr(cls, name)()
