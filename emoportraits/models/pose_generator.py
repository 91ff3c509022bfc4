"""The speech-to-head-pose generator (SPEC §5), a Hugging Face Hub model.

Input: the Whisper features of the audio aligned to the video frames
(``emoportraits.audio.align_to_frames``: a_t = k Whisper frames of ``audio_dim`` each; Whisper
itself already encodes long audio as overlapping 30 s segments, see ``WhisperFeatures``) and
optional noise for variety. Output: X ∈ R^{T×9} per sequence, the head motion since the first frame
as a 6D rotation + 3 translation (``geometry`` "head-pose sequences")::

    h = Linear([LayerNorm(a_t), ε_t]) + sinusoidal position     context encoder: Transformer
    h = TransformerEncoder(h)                                     over the frames of a window
    X = MLP(ResBlocks1D(h)) + (identity 6D, 0)                    head-pose decoder

ε_t ~ N(0, temperature²) per frame (``noise_dim`` numbers; temperature 0 = deterministic). With
``initial_pose`` in the config, h also gets Linear(P_0) added on every frame: P_0 the absolute pose of
the first frame (the source portrait's at inference), so the motion can depend on where the head
starts — a head turned away tends to come back.

Any length: sequences longer than ``window`` frames are cut into windows of ``window`` frames with a
hop of ``window // 2`` (``emoportraits.windows``); every window is decoded on its own (the length it
was trained on). A window predicts the motion since *its own* first frame, so window i is chained
onto the motion so far: M(s_i + t) = M(s_i)·M_i(t), with M(s_i) the blend of the earlier windows at
frame s_i (and its initial pose moved the same way) — otherwise every window would pull the head
back to where the sequence started. The chained windows are blended with trapezoidal weights whose
ramps are complementary, so consecutive windows crossfade instead of meeting at a seam (the rule
``WhisperFeatures`` uses for audio). Blending happens on the raw 9 numbers; Gram–Schmidt makes the
result a rotation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ..config import ConfigBase
from ..windows import window_starts, window_weights
from .geometry import IDENTITY_6D, matrix_to_pose9, pose9_to_matrix
from .hub import HUB_MIXIN_KWARGS, load_pretrained, save_weights


@dataclass
class PoseGeneratorConfig(ConfigBase):
    audio_dim: int = 384              # Whisper d_model (whisper-tiny: 384)
    audio_frames_per_step: int = 2    # k Whisper frames per video frame (align_to_frames)
    hidden: int = 256                 # H: the Transformer's width
    num_layers: int = 4               # Transformer encoder layers
    num_heads: int = 4
    ffn_dim: int = 1024
    res_blocks: int = 2               # 1D residual blocks of the decoder
    kernel_size: int = 5              # their temporal kernel (odd)
    noise_dim: int = 16               # ε_t per frame; 0 = no noise input
    window: int = 100                 # frames decoded at once (4 s at 25 fps); longer input is windowed
    dropout: float = 0.1
    initial_pose: bool = False        # also condition on the first frame's absolute pose (see forward)

    @classmethod
    def tiny(cls) -> "PoseGeneratorConfig":
        """A small network for tests and CPU experiments."""
        return cls(audio_dim=32, hidden=32, num_layers=1, num_heads=2, ffn_dim=64, res_blocks=1, kernel_size=3,
                   noise_dim=4, window=32, dropout=0.0)

    def __post_init__(self):
        self.check_positive_integers("audio_dim", "audio_frames_per_step", "hidden", "num_layers", "num_heads",
                                     "ffn_dim", "res_blocks", "kernel_size", "window")
        if self.noise_dim < 0 or int(self.noise_dim) != self.noise_dim:
            raise ValueError(f"PoseGeneratorConfig.noise_dim must be an integer >= 0, got {self.noise_dim!r}")
        if self.hidden % self.num_heads:
            raise ValueError(f"PoseGeneratorConfig.hidden ({self.hidden}) must be divisible by num_heads ({self.num_heads})")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"PoseGeneratorConfig.kernel_size must be odd (same-length convolutions), got {self.kernel_size}")
        if self.window < 8:
            raise ValueError(f"PoseGeneratorConfig.window must be >= 8 frames, got {self.window}")
        self.check_fraction("dropout")


class ResBlock1d(nn.Module):
    """x + Conv(act(Norm(Conv(act(Norm(x)))))) over time, (B, C, T) → (B, C, T), same length."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        groups = math.gcd(8, channels)
        self.body = nn.Sequential(
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def sinusoidal_positions(n: int, dim: int, device=None) -> torch.Tensor:
    """(n, dim) fixed sine/cosine position code (no parameters: any window length ≤ n works)."""
    pos = torch.arange(n, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10_000.0) / dim))
    out = torch.zeros(n, dim, device=device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return out


class PoseGenerator(
    nn.Module,
    PyTorchModelHubMixin,
    **HUB_MIXIN_KWARGS,
    tags=["emoportraits", "talking-head", "speech-driven", "head-pose", "audio-to-pose", "whisper"],
):
    """Audio → head motion (see the module docstring). Input: audio (B, T, k, audio_dim) or
    (B, T, k·audio_dim). Output: (B, T, 9) raw 6D rotation + translation (``geometry.pose9_to_rigid``
    turns it into rotation matrices)."""

    def __init__(self, config: PoseGeneratorConfig | None = None):
        super().__init__()
        self.config = c = config or PoseGeneratorConfig()
        self.audio_norm = nn.LayerNorm(c.audio_dim)
        self.input = nn.Linear(c.audio_frames_per_step * c.audio_dim + c.noise_dim, c.hidden)
        # the first frame's absolute pose (known at inference: the source portrait's) → every frame
        self.initial = nn.Linear(9, c.hidden) if c.initial_pose else None
        layer = nn.TransformerEncoderLayer(c.hidden, c.num_heads, c.ffn_dim, c.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.num_layers, enable_nested_tensor=False)
        self.blocks = nn.Sequential(*[ResBlock1d(c.hidden, c.kernel_size) for _ in range(c.res_blocks)])
        self.head = nn.Sequential(nn.LayerNorm(c.hidden), nn.Linear(c.hidden, c.hidden), nn.SiLU(), nn.Linear(c.hidden, 9))
        # start near "no motion": small last layer, identity rotation added as a fixed offset
        nn.init.normal_(self.head[-1].weight, std=1e-3)
        nn.init.zeros_(self.head[-1].bias)
        self.register_buffer("offset", torch.tensor(IDENTITY_6D + (0.0, 0.0, 0.0)), persistent=False)

    # ---- inputs ------------------------------------------------------------------------------------
    def _audio(self, audio: torch.Tensor) -> torch.Tensor:
        c = self.config
        k, d = c.audio_frames_per_step, c.audio_dim
        if not isinstance(audio, torch.Tensor) or not audio.is_floating_point() or audio.ndim not in (3, 4):
            got = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
            raise ValueError(f"audio must be (B, T, {k}, {d}) Whisper features aligned by align_to_frames(k={k}), got {got}")
        if audio.ndim == 3 and audio.shape[-1] == k * d:
            audio = audio.unflatten(-1, (k, d))
        if audio.shape[-2:] != (k, d):
            raise ValueError(f"audio must be (B, T, {k}, {d}) or (B, T, {k * d}) Whisper features aligned by "
                             f"align_to_frames(k={k}), got {tuple(audio.shape)}")
        return audio

    def make_noise(self, batch: int, frames: int, temperature: float = 1.0, generator: torch.Generator | None = None,
                   device=None) -> torch.Tensor:
        """(B, T, noise_dim) noise ε ~ N(0, temperature²), drawn on the CPU from ``generator`` (so a seed
        gives the same poses on any device)."""
        if not (temperature >= 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
        eps = torch.randn(batch, frames, self.config.noise_dim, generator=generator) * float(temperature)
        return eps.to(device if device is not None else self.offset.device)

    # ---- model ---------------------------------------------------------------------------------------
    def _initial(self, initial_pose, batch: int, device) -> torch.Tensor | None:
        """(B, 9) absolute first-frame poses (``initial_pose`` (B, 9) or (9,); None: a frontal, centred head,
        the identity), or None for a model without the input."""
        if self.initial is None:
            return None
        if initial_pose is None:
            return self.offset.to(device).expand(batch, 9)
        x = torch.as_tensor(initial_pose, dtype=torch.float32, device=device)
        x = x.expand(batch, 9) if x.shape == (9,) else x
        if tuple(x.shape) != (batch, 9):
            raise ValueError(f"initial_pose must be (B={batch}, 9) or (9,) poses (6D rotation + translation), "
                             f"got {tuple(x.shape)}")
        return x

    def decode_window(self, audio: torch.Tensor, noise: torch.Tensor, initial_pose: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """One window (T ≤ ``window`` frames): (B, T, k, D), (B, T, noise_dim)[, (B, 9)] → (B, T, 9)."""
        T = audio.shape[1]
        a = self.audio_norm(audio).flatten(2)
        h = self.input(torch.cat([a, noise.to(a.dtype)], dim=-1))
        if self.initial is not None:
            init = self._initial(initial_pose, audio.shape[0], audio.device)
            h = h + self.initial((init - self.offset.to(init.dtype)).to(h.dtype))[:, None]
        h = h + sinusoidal_positions(T, self.config.hidden, h.device).to(h.dtype)
        h = self.encoder(h)
        h = self.blocks(h.transpose(1, 2)).transpose(1, 2)
        return self.head(h) + self.offset.to(h.dtype)

    def forward(self, audio: torch.Tensor, noise: torch.Tensor | None = None, *, temperature: float = 1.0,
                generator: torch.Generator | None = None, initial_pose: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, 9) poses of any T. ``noise`` (B, T, noise_dim): given, or drawn with ``temperature``
        from ``generator`` (``temperature=0``: deterministic). ``initial_pose`` (B, 9) or (9,): the absolute
        pose of the first frame in the labels' canonical frame (a model with ``config.initial_pose``; None:
        frontal and centred), so the motion can depend on where the head starts (e.g. turn back to the
        camera); ignored by a model without the input. Later windows see the pose reached at their start."""
        audio = self._audio(audio)
        B, T = audio.shape[:2]
        c = self.config
        if noise is None:
            noise = self.make_noise(B, T, temperature, generator, audio.device)
        if tuple(noise.shape) != (B, T, c.noise_dim):
            raise ValueError(f"noise must be (B={B}, T={T}, {c.noise_dim}), got {tuple(noise.shape)}")
        if T == 0:
            return audio.new_zeros(B, 0, 9)
        starts = window_starts(T, c.window)
        init = self._initial(initial_pose, B, audio.device)
        if len(starts) == 1:
            return self.decode_window(audio, noise, init)
        W = c.window
        out = audio.new_zeros(B, T, 9, dtype=torch.float32)
        norm = torch.zeros(T, 1, dtype=torch.float32, device=audio.device)
        for i, s in enumerate(starts):
            part = self.decode_window(audio[:, s:s + W], noise[:, s:s + W], init).float()
            if i > 0:                 # chain onto the motion so far (module docstring)
                so_far = pose9_to_matrix(out[:, s] / norm[s])[:, None]                    # M(s_i)
                part = matrix_to_pose9(so_far @ pose9_to_matrix(part))
            w = window_weights(W, i == 0, i == len(starts) - 1).float().to(audio.device)[:, None]
            out[:, s:s + W] += w * part
            norm[s:s + W] += w
            if init is not None and i + 1 < len(starts):     # the next window starts from there
                nxt = starts[i + 1]
                init_next = pose9_to_matrix(self._initial(initial_pose, B, audio.device)) @ \
                    pose9_to_matrix(out[:, nxt] / norm[nxt])
                init = matrix_to_pose9(init_next)
        return (out / norm).to(audio.dtype)

    # ---- Hub integration ---------------------------------------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        save_weights(self, save_directory)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, **kwargs):
        return load_pretrained(cls, PoseGeneratorConfig.from_dict, model_id=model_id, **kwargs)
