"""The two critics of the head-pose GAN (SPEC §5), trained with WGAN-GP (``losses.pose``).

* `LocalPoseDiscriminator` — a 1D temporal PatchGAN: valid 1D convolutions whose receptive field is
  exactly ``patch`` frames (N = 8 in the paper) score every patch of the pose sequence; the mean of
  the scores is the judgement. It sees the poses only: frame-to-frame coherence.
* `GlobalPoseDiscriminator` — the whole sequence against the audio: 1D residual blocks and global
  average pooling over the poses, concatenated with the pooled (LayerNorm + Linear) Whisper
  features, then an MLP → one score.

Critics of a WGAN have no normalisation across the batch (the gradient penalty is per sample), so
they use GroupNorm-free blocks with LeakyReLU. Inputs are (B, T, 9) pose sequences whose 6D part is
orthonormal (``geometry.project_pose9`` for generated ones) and, for the global critic, the aligned
audio (B, T, k, D) or (B, T, k·D). Both return one score per sequence, (B,).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ConfigBase


@dataclass
class PoseDiscriminatorConfig(ConfigBase):
    audio_dim: int = 384              # Whisper d_model
    audio_frames_per_step: int = 2    # k
    patch: int = 8                    # N: frames per patch of the local critic
    local_layers: int = 3
    local_channels: int = 128
    global_channels: int = 128
    global_blocks: int = 2
    audio_hidden: int = 128           # pooled audio embedding size of the global critic

    @classmethod
    def tiny(cls) -> "PoseDiscriminatorConfig":
        return cls(audio_dim=32, local_channels=16, global_channels=16, global_blocks=1, audio_hidden=16)

    def __post_init__(self):
        self.check_positive_integers("audio_dim", "audio_frames_per_step", "patch", "local_layers", "local_channels",
                                     "global_channels", "global_blocks", "audio_hidden")
        if self.patch < 2 * self.local_layers - 1:
            raise ValueError(f"PoseDiscriminatorConfig.patch ({self.patch}) is too small for {self.local_layers} "
                             f"layers (>= {2 * self.local_layers - 1})")


def patch_kernels(patch: int, layers: int) -> list[int]:
    """Kernel sizes of valid convolutions with a receptive field of exactly ``patch`` frames:
    1 + Σ(k − 1) = patch, the first layer taking what the 3-tap later layers leave."""
    return [patch - 2 * (layers - 1)] + [3] * (layers - 1)


class LocalPoseDiscriminator(nn.Module):
    """Temporal PatchGAN: (B, T ≥ patch, 9) → (B,) mean patch score (see the module docstring)."""

    def __init__(self, config: PoseDiscriminatorConfig):
        super().__init__()
        self.config = config
        layers, c_in = [], 9
        for i, k in enumerate(patch_kernels(config.patch, config.local_layers)):
            layers += [nn.Conv1d(c_in, config.local_channels, k), nn.LeakyReLU(0.2)]
            c_in = config.local_channels
        layers.append(nn.Conv1d(c_in, 1, 1))
        self.net = nn.Sequential(*layers)

    def patch_scores(self, poses: torch.Tensor) -> torch.Tensor:
        """(B, T, 9) → (B, T − patch + 1): one score per patch of ``patch`` consecutive frames."""
        if poses.ndim != 3 or poses.shape[-1] != 9 or poses.shape[1] < self.config.patch:
            raise ValueError(f"poses must be (B, T >= {self.config.patch}, 9), got {tuple(poses.shape)}")
        return self.net(poses.transpose(1, 2))[:, 0]

    def forward(self, poses: torch.Tensor, audio: torch.Tensor | None = None) -> torch.Tensor:
        return self.patch_scores(poses).mean(1)


class _Res1d(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv1d(channels, channels, 3, padding=1),
                                  nn.LeakyReLU(0.2), nn.Conv1d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GlobalPoseDiscriminator(nn.Module):
    """Whole sequence + audio: (B, T, 9), (B, T, k, D) → (B,) (see the module docstring)."""

    def __init__(self, config: PoseDiscriminatorConfig):
        super().__init__()
        self.config = c = config
        self.pose_in = nn.Conv1d(9, c.global_channels, 3, padding=1)
        self.blocks = nn.Sequential(*[_Res1d(c.global_channels) for _ in range(c.global_blocks)])
        self.audio_norm = nn.LayerNorm(c.audio_dim)
        self.audio_in = nn.Linear(c.audio_frames_per_step * c.audio_dim, c.audio_hidden)
        self.mlp = nn.Sequential(nn.Linear(c.global_channels + c.audio_hidden, c.global_channels), nn.LeakyReLU(0.2),
                                 nn.Linear(c.global_channels, 1))

    def forward(self, poses: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        c = self.config
        if poses.ndim != 3 or poses.shape[-1] != 9:
            raise ValueError(f"poses must be (B, T, 9), got {tuple(poses.shape)}")
        B, T = poses.shape[:2]
        k, d = c.audio_frames_per_step, c.audio_dim
        if audio.shape[:2] != (B, T) or audio.shape[2:].numel() != k * d:
            raise ValueError(f"audio must be (B={B}, T={T}, {k}, {d}) aligned Whisper features, got {tuple(audio.shape)}")
        h = self.blocks(self.pose_in(poses.transpose(1, 2))).mean(2)                    # global pooling
        a = self.audio_in(self.audio_norm(audio.reshape(B, T, k, d)).flatten(2)).mean(1)
        return self.mlp(torch.cat([h, a.to(h.dtype)], dim=1))[:, 0]


class PoseDiscriminators(nn.Module):
    """Both critics in one module (one optimiser, one checkpoint entry)."""

    def __init__(self, config: PoseDiscriminatorConfig | None = None):
        super().__init__()
        self.config = config = config or PoseDiscriminatorConfig()
        self.local = LocalPoseDiscriminator(config)
        self.global_ = GlobalPoseDiscriminator(config)

    def forward(self, poses: torch.Tensor, audio: torch.Tensor, which: str = "local") -> torch.Tensor:
        """The (B,) scores of one critic, ``which`` = "local" or "global" (one entry point, so a
        DistributedDataParallel wrapper sees every call)."""
        if which == "local":
            return self.local(poses)
        if which == "global":
            return self.global_(poses, audio)
        raise ValueError(f"which must be 'local' or 'global', got {which!r}")
