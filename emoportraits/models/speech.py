"""E_aud: the speech encoder of the speech-driven mode (SPEC §4), a Hugging Face Hub model.

Predicts the expression latent ẑ_t of every video frame t from the first frame's latent z_0
(``EmoPortraits.expression`` of the first frame) and the Whisper features aligned to the frame
(``emoportraits.audio.align_to_frames``: a_t = k Whisper frames of ``audio_dim`` each)::

    z_base = z_0 + MLP_b(z_0)                        # gaze / upper-face state of the first frame
    h_t    = MLP_a(ẑ_{t−1}),  ẑ_{−1} = z_0           # autoregressive state
    ẑ_t    = z_base + MLP_c([h_t, a_t])              # a_t: LayerNorm per Whisper frame, flattened

``forward`` rolls this out over T frames; with a teacher sequence (E_motion's z of the target
frames) the previous latent fed to step t is the teacher's z_{t−1} with probability
``teacher_ratio`` (teacher forcing / scheduled sampling), else the model's own ẑ_{t−1}.
``step`` is one step, so the rollout can be run (or checked) frame by frame, e.g. for streaming.

Initialisation (ours; the paper does not say): MLP_b is written as a residual on z_0 and the last
layers of MLP_b and MLP_c start at zero, so an untrained E_aud predicts ẑ_t = z_0 — the still-face
baseline — and training only has to learn the audio-driven change. Started from random outputs
instead, a small model spends its first thousands of steps just finding z_0 again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ..config import ConfigBase
from .hub import HUB_MIXIN_KWARGS, load_pretrained, save_weights


@dataclass
class SpeechEncoderConfig(ConfigBase):
    z_dim: int = 128                  # expression latent size (EmoPortraitsConfig.z_dim)
    audio_dim: int = 384              # Whisper d_model (whisper-tiny: 384, base: 512, small: 768)
    audio_frames_per_step: int = 2    # k Whisper frames per video frame (align_to_frames)
    hidden: int = 512                 # width of the MLPs and of h_t
    num_layers: int = 3               # Linear layers per MLP
    dropout: float = 0.0

    @classmethod
    def tiny(cls) -> "SpeechEncoderConfig":
        """A small network for tests and CPU experiments."""
        return cls(z_dim=16, audio_dim=32, audio_frames_per_step=2, hidden=32, num_layers=2)

    def __post_init__(self):
        self.check_positive_integers("z_dim", "audio_dim", "audio_frames_per_step", "hidden", "num_layers")
        self.check_fraction("dropout")


def _mlp(dims: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers += [nn.GELU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
    return nn.Sequential(*layers)


class SpeechEncoder(
    nn.Module,
    PyTorchModelHubMixin,
    **HUB_MIXIN_KWARGS,
    tags=["emoportraits", "talking-head", "speech-driven", "audio-to-latent", "whisper"],
):
    """E_aud (see the module docstring). Inputs: z0 (B, z_dim); audio (B, T, k, audio_dim) or
    (B, T, k·audio_dim). Output: ẑ (B, T, z_dim)."""

    def __init__(self, config: SpeechEncoderConfig | None = None):
        super().__init__()
        self.config = config = config or SpeechEncoderConfig()
        n, h = config.num_layers, config.hidden
        self.mlp_b = _mlp([config.z_dim] + [h] * (n - 1) + [config.z_dim], config.dropout)
        self.mlp_a = _mlp([config.z_dim] + [h] * n, config.dropout)
        self.audio_norm = nn.LayerNorm(config.audio_dim)
        in_c = h + config.audio_frames_per_step * config.audio_dim
        self.mlp_c = _mlp([in_c] + [h] * (n - 1) + [config.z_dim], config.dropout)
        for mlp in (self.mlp_b, self.mlp_c):     # start at ẑ_t = z_0 (module docstring)
            nn.init.zeros_(mlp[-1].weight)
            nn.init.zeros_(mlp[-1].bias)

    # ---- checks ----------------------------------------------------------------------------------
    def _audio(self, audio: torch.Tensor, lead: tuple, name: str = "audio") -> torch.Tensor:
        c = self.config
        k, d = c.audio_frames_per_step, c.audio_dim
        if not isinstance(audio, torch.Tensor) or not audio.is_floating_point():
            raise ValueError(f"{name} must be a float tensor, got {type(audio).__name__}")
        n = len(lead)
        if audio.ndim == n + 1 and tuple(audio.shape) == (*lead, k * d):
            audio = audio.reshape(*lead, k, d)
        if tuple(audio.shape) != (*lead, k, d):
            want = ", ".join(map(str, lead))
            raise ValueError(f"{name} must be ({want}, {k}, {d}) or ({want}, {k * d}) — Whisper features "
                             f"aligned by align_to_frames(k={k}) — got {tuple(audio.shape)}")
        return audio

    def _latent(self, z: torch.Tensor, lead: tuple, name: str) -> torch.Tensor:
        want = (*lead, self.config.z_dim)
        if not isinstance(z, torch.Tensor) or tuple(z.shape) != want or not z.is_floating_point():
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"{name} must be a float tensor of shape {want}, got {got}")
        return z

    # ---- model ------------------------------------------------------------------------------------
    def base(self, z0: torch.Tensor) -> torch.Tensor:
        """z_base = z_0 + MLP_b(z_0), (B, z_dim)."""
        return z0 + self.mlp_b(z0)

    def step(self, z_base: torch.Tensor, prev_z: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
        """One step: ẑ_t = z_base + MLP_c([MLP_a(ẑ_{t−1}), a_t]); a_t is (B, k, audio_dim) or (B, k·audio_dim)."""
        a_t = self.audio_norm(self._audio(a_t, (prev_z.shape[0],), "a_t")).flatten(1)
        h_t = self.mlp_a(prev_z)
        return z_base + self.mlp_c(torch.cat([h_t, a_t.to(h_t.dtype)], dim=1))

    def forward(self, z0: torch.Tensor, audio: torch.Tensor, teacher: torch.Tensor | None = None,
                teacher_ratio: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Autoregressive rollout over the T frames of ``audio`` → (B, T, z_dim).

        ``teacher`` (B, T, z_dim): the target latents. Before step t ≥ 1, for every sample of the
        batch, a Bernoulli(``teacher_ratio``) draw (from ``generator``, or torch's default one)
        decides whether the previous latent is the teacher's z_{t−1} or the prediction ẑ_{t−1}
        (kept in the graph: gradients flow through the rollout). Step 0 always uses z_0."""
        if not isinstance(z0, torch.Tensor) or z0.ndim != 2:
            raise ValueError(f"z0 must be a (B, {self.config.z_dim}) float tensor, got "
                             f"{tuple(z0.shape) if isinstance(z0, torch.Tensor) else type(z0).__name__}")
        B = z0.shape[0]
        z0 = self._latent(z0, (B,), "z0")
        if not isinstance(audio, torch.Tensor) or audio.ndim not in (3, 4) or audio.shape[0] != B:
            got = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
            raise ValueError(f"audio must be (B={B}, T, k, audio_dim) aligned Whisper features, got {got}")
        T = audio.shape[1]
        audio = self._audio(audio, (B, T))
        if not 0.0 <= float(teacher_ratio) <= 1.0:
            raise ValueError(f"teacher_ratio must be in [0, 1], got {teacher_ratio!r}")
        use_teacher = teacher is not None and teacher_ratio > 0
        if use_teacher:
            teacher = self._latent(teacher, (B, T), "teacher")
        z_base = self.base(z0)
        prev, out = z0, []
        for t in range(T):
            z_t = self.step(z_base, prev, audio[:, t])
            out.append(z_t)
            if use_teacher and t + 1 < T:
                device = generator.device if generator is not None else "cpu"
                coin = torch.rand(B, generator=generator, device=device).to(z_t.device) < teacher_ratio
                prev = torch.where(coin[:, None], teacher[:, t].to(z_t.dtype), z_t)
            else:
                prev = z_t
        if not out:
            return z0.new_zeros(B, 0, self.config.z_dim)
        return torch.stack(out, dim=1)

    # ---- Hub integration ---------------------------------------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        save_weights(self, save_directory)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, **kwargs):
        return load_pretrained(cls, SpeechEncoderConfig.from_dict, model_id=model_id, **kwargs)
