"""Train E_aud, the speech encoder of the speech-driven mode (SPEC §4), with Accelerate.

    emoportraits prepare-data --videos VIDEOS --out data/speech --dataset-name voxceleb2 --with-audio --stride 1
    accelerate launch --cpu --num_processes 1 train/train_speech.py --config train/configs/speech_tiny.yaml \
        data.path=data/speech model.main=MAIN_MODEL whisper.model=openai/whisper-tiny

Arguments after the options are ``section.key=value`` overrides of the YAML config. The main model
(``model.main``, a from_pretrained folder / Hub repo) is frozen: its E_motion gives the targets
z_t = E_motion(x_t, θ_t) and z_0, and it renders x̂_t = drive(avatar(x_0), ẑ_t, θ_t) for up to
``optim.render_frames`` random frames per clip. Per step (one window of consecutive frames per
clip, ``optim.batch_size`` clips per process)::

    ẑ = E_aud(z_0, audio, teacher=z, teacher_ratio)      # teacher_ratio: 1 → 0 linearly over
                                                            # optim.teacher_forcing_steps
    L_idt    = 10·L1(x̂, x) + 100·VGGFace(x̂, x)          (x composited on green, like the main model's targets)
    L_latent = 200·L_PCA(ẑ, z, n=8) + 5·L1(ẑ, z)
    L_mouth  = 5e3·BCE(lip / inner-mouth masks of x̂ vs x) + 5e5·L1(mouth pixels)

VGGFace, the mouth PCA basis and the face parser are files named in ``networks``; a missing one
switches its loss off with one warning. AdamW, cosine schedule lr → 0. A run resumes automatically
from the newest complete checkpoint in ``log.output_dir`` (model, optimiser, scheduler, RNG states,
data position); ``metrics.jsonl`` has one line per step; at the end the SpeechEncoder is exported
with ``save_pretrained`` to ``<output_dir>/final``.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from emoportraits import EmoPortraits
from emoportraits.audio import WhisperFeatures
from emoportraits.data.sampling import ClipSampler, DrawPosition
from emoportraits.data.speech import SpeechClipDataset, collate_clips
from emoportraits.losses.pca import MouthPCA, pca_loss
from emoportraits.models.emoportraits import Avatar
from emoportraits.models.speech import SpeechEncoder, SpeechEncoderConfig
from emoportraits.training.config import RunLogSection, TrainConfigMixin, WhisperSection, parse_config_args
from emoportraits.training.loop import (LogMean, accumulated_update, append_metrics, begin_run, checkpoint_if_due,
                                        crash_if_asked, crash_step,
                                        export_final, log_to_tracker, make_accelerator, to_device)

GREEN = (0.0, 1.0, 0.0)
LIPS, INNER_MOUTH = (12, 13), (11,)          # CelebAMask-HQ 19-class face-parser ids


# ---- configuration ------------------------------------------------------------------------------------

@dataclass
class ModelSection:
    main: str = ""                       # the frozen EmoPortraits (from_pretrained folder / Hub repo)
    speech: dict = field(default_factory=dict)   # SpeechEncoderConfig fields (z_dim / audio_dim: from
                                                 # the main model / Whisper unless given)
    init_from: str | None = None         # a SpeechEncoder to fine-tune from


@dataclass
class DataSection:
    path: str = ""                       # prepare-data --with-audio --stride 1 output
    clip_frames: tuple = (50, 200)
    resolution: int | None = None        # default: the main model's image size
    segment: tuple = (0.0, 1.0)          # use the frames [a·n, b·n) of every clip (hold out the rest)


@dataclass
class OptimSection:
    max_steps: int = 100_000
    batch_size: int = 1                  # clips per process (cut to the shortest window)
    lr: float = 1e-4
    warmup_steps: int = 0
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 1e-2
    grad_clip: float | None = 1.0
    grad_accum: int = 1                  # batches accumulated per optimisation step
    teacher_forcing_steps: int = 10_000  # teacher_ratio 1 → 0 linearly over these steps
    render_frames: int = 4               # frames rendered per clip (memory)


@dataclass
class LossSection:
    idt_l1: float = 10.0
    vggface: float = 100.0
    pca: float = 200.0
    pca_n: int = 8
    latent_l1: float = 5.0
    mouth_bce: float = 5e3
    mouth_l1: float = 5e5
    green_background: bool = True


@dataclass
class NetworkSection:
    vggface: str | None = None           # VGG-Face state dict
    face_parser: str | None = None       # torch.export .pt2 program: RGB [0, 1] → 19-class logits
    mouth_pca: str | None = None         # train/fit_mouth_pca.py output


@dataclass
class LogSection(RunLogSection):
    output_dir: str = "runs/speech"
    tracker: str | None = None


@dataclass
class SpeechTrainConfig(TrainConfigMixin):
    model: ModelSection = field(default_factory=ModelSection)
    whisper: WhisperSection = field(default_factory=WhisperSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    losses: LossSection = field(default_factory=LossSection)
    networks: NetworkSection = field(default_factory=NetworkSection)
    log: LogSection = field(default_factory=LogSection)
    mixed_precision: str = "no"
    seed: int = 0
    num_workers: int = 0


# ---- losses ------------------------------------------------------------------------------------------

def _load_networks(cfg: SpeechTrainConfig, say) -> tuple[dict, LossSection]:
    w = dataclasses.replace(cfg.losses)
    nets: dict[str, Any] = {"vggface": None, "parser": None, "pca": None}
    n = cfg.networks
    if n.vggface:
        from emoportraits.losses.perceptual import FacePerceptualLoss, VGGFaceFeatures
        nets["vggface"] = FacePerceptualLoss(VGGFaceFeatures.from_file(n.vggface)).requires_grad_(False).eval()
    elif w.vggface:
        say("the VGGFace term of L_idt is switched off (weight vggface → 0): no network given. "
            "Set networks.vggface to the VGG-Face weights file to enable it.")
        w.vggface = 0.0
    if n.face_parser:
        from emoportraits.losses.config import _Exported
        parser = _Exported(torch.export.load(n.face_parser).module())
        nets["parser"] = parser
    elif w.mouth_bce or w.mouth_l1:
        say("L_mouth (face-parsing masks) is switched off (weights mouth_bce, mouth_l1 → 0): no network given. "
            "Set networks.face_parser to an exported face parser (.pt2) to enable it.")
        w.mouth_bce = w.mouth_l1 = 0.0
    if n.mouth_pca:
        nets["pca"] = MouthPCA.load(n.mouth_pca)
    elif w.pca:
        say("L_PCA is switched off (weight pca → 0): no mouth PCA basis given. "
            "Set networks.mouth_pca to a basis from train/fit_mouth_pca.py to enable it.")
        w.pca = 0.0
    return nets, w


def mouth_losses(parser, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE of the lip / inner-mouth probabilities of x̂ against the parser's masks of x, and the mean
    L1 over the target's mouth pixels (lips + inner mouth)."""
    with torch.no_grad():
        lt = parser(target)
        if lt.shape[-2:] != target.shape[-2:]:
            lt = F.interpolate(lt, size=target.shape[-2:], mode="bilinear", align_corners=False)
        labels = lt.argmax(1, keepdim=True)
    lp = parser(pred)
    if lp.shape[-2:] != pred.shape[-2:]:
        lp = F.interpolate(lp, size=pred.shape[-2:], mode="bilinear", align_corners=False)
    prob = lp.float().softmax(1)
    bce, mouth = 0.0, torch.zeros_like(labels, dtype=pred.dtype)
    for ids in (LIPS, INNER_MOUTH):
        idx = torch.tensor(ids, device=labels.device)
        m = torch.isin(labels, idx).float()
        p = prob[:, list(ids)].sum(1, keepdim=True).clamp(1e-6, 1 - 1e-6)
        bce = bce + F.binary_cross_entropy(p, m)
        mouth = torch.maximum(mouth, m.to(pred.dtype))
    l1 = ((pred - target).abs() * mouth).sum() / (mouth.sum() * pred.shape[1]).clamp_min(1.0)
    return bce / 2, l1


class SpeechStep(torch.nn.Module):
    """One iteration's losses; holds the trainable SpeechEncoder (the module Accelerate wraps)."""

    def __init__(self, speech: SpeechEncoder, main: EmoPortraits, nets: dict, weights: LossSection,
                 render_frames: int):
        super().__init__()
        self.speech = speech
        self.main = [main]                 # not a submodule: frozen, not in the checkpoints / DDP
        self.nets, self.w, self.render_frames = nets, weights, render_frames

    def forward(self, batch: dict, teacher_ratio: float) -> tuple[torch.Tensor, dict]:
        main, w = self.main[0], self.w
        images, masks, thetas, audio = batch["images"], batch["masks"], batch["thetas"], batch["audio"]
        B, T = images.shape[:2]
        with torch.no_grad():
            z = main.expression(images.flatten(0, 1), thetas.flatten(0, 1)).view(B, T, -1).float()
            avatar = main.encode_source(images[:, 0], theta=thetas[:, 0], mask=masks[:, 0])
        z_hat = self.speech(z[:, 0], audio, teacher=z, teacher_ratio=teacher_ratio)
        logs: dict[str, float] = {}
        total = w.latent_l1 * F.l1_loss(z_hat, z)
        logs["latent_l1"] = float(F.l1_loss(z_hat, z).detach())
        if self.nets["pca"] is not None and w.pca:
            lp = pca_loss(z_hat, z, self.nets["pca"].to(z.device), n=w.pca_n)
            total = total + w.pca * lp
            logs["pca"] = float(lp.detach())
        S = min(self.render_frames, T)
        if S > 0 and (w.idt_l1 or w.vggface or w.mouth_bce or w.mouth_l1):
            sel = torch.stack([torch.randperm(T)[:S] for _ in range(B)]).to(images.device)   # (B, S)
            rows = torch.arange(B, device=images.device)[:, None].expand(B, S)
            rep = lambda t: t.repeat_interleave(S, 0)  # noqa: E731
            av = Avatar(rep(avatar.canonical), rep(avatar.e_s), rep(avatar.theta), rep(avatar.z))
            pred = main.drive(av, z=z_hat[rows, sel].flatten(0, 1).to(main.dtype),
                              theta=thetas[rows, sel].flatten(0, 1)).float()
            x, m = images[rows, sel].flatten(0, 1), masks[rows, sel].flatten(0, 1)
            if w.green_background:
                bg = torch.tensor(GREEN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
                x = x * m + bg * (1 - m)
            l1 = F.l1_loss(pred, x)
            total = total + w.idt_l1 * l1
            logs["idt_l1"] = float(l1.detach())
            if self.nets["vggface"] is not None and w.vggface:
                lf = self.nets["vggface"](pred, x)
                total = total + w.vggface * lf
                logs["vggface"] = float(lf.detach())
            if self.nets["parser"] is not None and (w.mouth_bce or w.mouth_l1):
                bce, ml1 = mouth_losses(self.nets["parser"], pred, x)
                total = total + w.mouth_bce * bce + w.mouth_l1 * ml1
                logs["mouth_bce"], logs["mouth_l1"] = float(bce.detach()), float(ml1.detach())
        logs["total"] = float(total.detach())
        return total, logs


def teacher_ratio(step: int, steps: int) -> float:
    """1 → 0 linearly over ``steps`` optimisation steps (0 steps: no teacher forcing)."""
    return 0.0 if steps <= 0 else max(0.0, 1.0 - step / steps)


# ---- the run -------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser, args, cfg = parse_config_args(SpeechTrainConfig, argv, __doc__, "train/configs/speech_tiny.yaml")
    if not cfg.model.main:
        parser.error("model.main (the frozen EmoPortraits model) is required")
    if not cfg.data.path:
        parser.error("data.path (a folder prepared with --with-audio --stride 1) is required")

    from transformers import get_cosine_schedule_with_warmup

    accelerator, out = make_accelerator(cfg, gradient_accumulation_steps=cfg.optim.grad_accum)

    def say(msg: str) -> None:                      # a switched-off loss is said once
        if accelerator.is_main_process:
            print(f"warning: {msg}", file=sys.stderr)

    main_model = EmoPortraits.from_pretrained(cfg.model.main).to(accelerator.device).eval().requires_grad_(False)
    whisper_device = "cpu" if cfg.num_workers > 0 else accelerator.device
    whisper = WhisperFeatures(cfg.whisper.model, device=whisper_device, batch_size=cfg.whisper.batch_size)
    if cfg.model.init_from:
        speech = SpeechEncoder.from_pretrained(cfg.model.init_from)
    else:
        fields = {"z_dim": main_model.config.z_dim, "audio_dim": whisper.dim, **cfg.model.speech}
        speech = SpeechEncoder(SpeechEncoderConfig.from_dict(fields))
    sc = speech.config
    if sc.z_dim != main_model.config.z_dim or sc.audio_dim != whisper.dim:
        raise SystemExit(f"the speech model (z_dim {sc.z_dim}, audio_dim {sc.audio_dim}) does not match the main "
                         f"model (z_dim {main_model.config.z_dim}) / Whisper (d_model {whisper.dim})")
    nets, weights = _load_networks(cfg, say)
    for v in nets.values():
        if isinstance(v, torch.nn.Module):
            v.to(accelerator.device)

    data = SpeechClipDataset(cfg.data.path, whisper, clip_frames=tuple(cfg.data.clip_frames),
                             resolution=cfg.data.resolution or main_model.config.image_size, seed=cfg.seed,
                             frames_per_step=sc.audio_frames_per_step, segment=tuple(cfg.data.segment))
    if data.dropped:
        say(f"{data.dropped} clip(s) of {cfg.data.path} left out (no audio or no constant frame rate)")
    o = cfg.optim
    sampler = ClipSampler(len(data), o.batch_size, cfg.seed, accelerator.process_index, accelerator.num_processes)
    position = DrawPosition(sampler)

    step_module = SpeechStep(speech, main_model, nets, weights, o.render_frames)
    opt = torch.optim.AdamW(speech.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, o.warmup_steps, o.max_steps)
    step_module, opt, sched = accelerator.prepare(step_module, opt, sched)
    accelerator.register_for_checkpointing(position)

    step = begin_run(accelerator, cfg, out, "emoportraits-speech", {"max_steps": o.max_steps})
    # its own generator: building the loader's iterator must not consume the global RNG
    loader = DataLoader(data, batch_sampler=sampler, num_workers=cfg.num_workers, collate_fn=collate_clips,
                        generator=torch.Generator().manual_seed(cfg.seed))
    crash_at = crash_step()
    it = iter(loader)
    t0 = time.monotonic()
    mean = LogMean()
    while step < o.max_steps:
        raw = next(it)
        position.used += 1
        batch = to_device(raw, accelerator.device)
        ratio = teacher_ratio(step, o.teacher_forcing_steps)
        logs = accumulated_update(accelerator, step_module, lambda: step_module(batch, ratio), opt,
                                  speech.parameters(), o.grad_clip)
        mean.add(dict(logs, frames=int(batch["images"].shape[1])))
        if not accelerator.sync_gradients:
            continue
        sched.step()
        step += 1
        logs = mean.reduce(accelerator)        # over the micro-batches and all ranks
        logs.update(teacher_ratio=ratio, lr=sched.get_last_lr()[0])
        append_metrics(accelerator, out, step, logs)
        if accelerator.is_main_process and (step % cfg.log.log_every == 0 or step == o.max_steps):
            print(f"step {step}/{o.max_steps}: loss {logs['total']:.4f} "
                  f"({(time.monotonic() - t0) / max(step, 1):.2f} s/step)", flush=True)
        log_to_tracker(accelerator, cfg, step, logs)
        checkpoint_if_due(accelerator, cfg, out, step, o.max_steps)
        crash_if_asked(step, crash_at)

    export_final(accelerator, accelerator.unwrap_model(step_module).speech, out, "speech encoder")
    return 0


if __name__ == "__main__":
    sys.exit(main())
