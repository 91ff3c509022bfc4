"""Train the speech-to-head-pose generator (SPEC §5) with Accelerate: a WGAN-GP with two critics.

    emoportraits prepare-data --videos VIDEOS --out data/pose --dataset-name voxceleb2 --with-audio --stride 1
    accelerate launch --cpu --num_processes 1 train/train_pose.py --config train/configs/pose_tiny.yaml \
        data.path=data/pose whisper.model=openai/whisper-tiny

Arguments after the options are ``section.key=value`` overrides of the YAML config. Data: windows of
consecutive head-pose labels with their audio (``PoseClipDataset``); the target X is 6D rotation +
translation per frame (``geometry`` "head-pose sequences"): the head's transformation from the window's
first frame (``data.reference: first``, the default: the motion that inference applies to a portrait)
or from the labels' canonical frontal frame (``canonical``). Either way inference uses the motion since
the first generated frame (``emoportraits.poses``). Per step
(``optim.batch_size`` windows per process and batch)::

    n_critic × (fresh batch):   L_D = Σ_{local, global} E[D(x̃)] − E[D(x)] + λ_gp·GP     (critics)
    1 × (fresh batch):          L_G = λ_recons·(λ_rot·L1(r) + λ_trans·L1(t)) − λ_adv·Σ E[D(x̃)]
                                      + λ_smooth·E|X̃_t − X̃_{t−1}|                     (generator)

x̃ = project_pose9(G(audio, ε)): generated poses with an orthonormal 6D part, like the real ones.
Adam for both (β = (0.5, 0.9) as WGAN-GP), cosine schedules. A run resumes automatically from the
newest complete checkpoint in ``log.output_dir`` (models, optimisers, schedulers, RNG states, data
position); ``metrics.jsonl`` has one line per step, ``log.tracker`` (e.g. tensorboard) gets the same
numbers; at the end the PoseGenerator is exported with ``save_pretrained`` to ``<output_dir>/final``.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from emoportraits.audio import WhisperFeatures
from emoportraits.data.pose_clips import PoseClipDataset, collate_pose_clips
from emoportraits.data.sampling import ClipSampler, DrawPosition
from emoportraits.losses.pose import (gradient_penalty, pose_reconstruction_loss, pose_smoothness_loss,
                                      wgan_critic_loss, wgan_generator_loss)
from emoportraits.models.geometry import project_pose9
from emoportraits.models.pose_discriminators import PoseDiscriminatorConfig, PoseDiscriminators
from emoportraits.models.pose_generator import PoseGenerator, PoseGeneratorConfig
from emoportraits.training.config import RunLogSection, TrainConfigMixin, WhisperSection, parse_config_args
from emoportraits.training.loop import (LogMean, accumulated_update, append_metrics, begin_run, checkpoint_if_due,
                                        crash_if_asked, crash_step, export_final, log_to_tracker, make_accelerator,
                                        to_device)


# ---- configuration ------------------------------------------------------------------------------------

@dataclass
class ModelSection:
    pose: dict = field(default_factory=dict)            # PoseGeneratorConfig fields (audio_dim: from Whisper)
    discriminator: dict = field(default_factory=dict)   # PoseDiscriminatorConfig fields
    init_from: str | None = None                        # a PoseGenerator to fine-tune from


@dataclass
class DataSection:
    path: str = ""                       # prepare-data --with-audio --stride 1 output
    clip_frames: tuple = (50, 100)       # window lengths (frames); ≤ the generator's window
    segment: tuple = (0.0, 1.0)          # part of every clip used (e.g. [0, 0.8]; the rest for validation)
    reference: str = "first"             # target: the motion since the window's first frame, or
                                         # "canonical": the poses from the labels' canonical (frontal) frame


@dataclass
class OptimSection:
    max_steps: int = 50_000              # generator updates
    batch_size: int = 16                 # windows per process and batch (cut to the shortest)
    n_critic: int = 5                    # critic updates per generator update (WGAN-GP)
    grad_accum: int = 1                  # batches accumulated per update (of each side)
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    min_lr_ratio: float = 0.0            # cosine schedules end at lr · this
    warmup_steps: int = 0
    betas: tuple = (0.5, 0.9)
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0        # generator only (the critics are regularised by the penalty)


@dataclass
class LossSection:
    recons: float = 1.0                  # λ_recons
    rot: float = 1.0                     # λ_rot
    trans: float = 1.0                   # λ_trans
    adv: float = 0.01                    # λ_adv
    smooth: float = 0.1                  # λ_smooth
    gp: float = 10.0                     # λ of the gradient penalty
    local: float = 1.0                   # weight of the local (PatchGAN) critic in both losses
    global_: float = 1.0                 # weight of the global (audio) critic


@dataclass
class LogSection(RunLogSection):
    output_dir: str = "runs/pose"


@dataclass
class PoseTrainConfig(TrainConfigMixin):
    model: ModelSection = field(default_factory=ModelSection)
    whisper: WhisperSection = field(default_factory=WhisperSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    losses: LossSection = field(default_factory=LossSection)
    log: LogSection = field(default_factory=LogSection)
    mixed_precision: str = "no"
    seed: int = 0
    num_workers: int = 0


# ---- one update of each side -----------------------------------------------------------------------------

class PoseGAN:
    """The losses of one update of each side; ``generator`` and ``critics`` are the modules as
    Accelerate prepared them (wrappers included: every forward goes through them)."""

    def __init__(self, generator, critics, weights: LossSection, reference: str = "first"):
        self.generator, self.critics, self.w = generator, critics, weights
        self.target = {"canonical": "pose9", "first": "motion"}[reference]

    def fake(self, batch: dict) -> torch.Tensor:
        """Generated poses for the batch's audio, given the first frame's absolute pose (used by a
        generator with ``initial_pose``; at inference it is the source portrait's)."""
        return project_pose9(self.generator(batch["audio"], temperature=1.0, initial_pose=batch["pose9"][:, 0]))

    def _critics(self):
        w = self.w
        return [(name, weight, lambda x, a, name=name: self.critics(x, a, which=name))
                for name, weight in (("local", w.local), ("global", w.global_)) if weight]

    def critic_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        w, real, audio = self.w, batch[self.target], batch["audio"]
        with torch.no_grad():
            fake = self.fake(batch)
        total, logs = 0.0, {}
        for name, weight, critic in self._critics():
            wd = wgan_critic_loss(critic(real, audio), critic(fake, audio))
            gp = gradient_penalty(critic, real, fake, audio)
            total = total + weight * (wd + w.gp * gp)
            logs[f"d_{name}"], logs[f"gp_{name}"] = float(wd.detach()), float(gp.detach())
        logs["d_total"] = float(total.detach())
        return total, logs

    def generator_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        w, real, audio = self.w, batch[self.target], batch["audio"]
        fake = self.fake(batch)
        rot, trans = pose_reconstruction_loss(fake, real)
        smooth = pose_smoothness_loss(fake)
        adv = fake.new_zeros(())
        for _, weight, critic in self._critics():
            adv = adv + weight * wgan_generator_loss(critic(fake, audio))
        total = w.recons * (w.rot * rot + w.trans * trans) + w.adv * adv + w.smooth * smooth
        logs = {"rot": float(rot.detach()), "trans": float(trans.detach()), "smooth": float(smooth.detach()),
                "g_adv": float(adv.detach()), "g_total": float(total.detach())}
        return total, logs


# ---- the run -------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser, args, cfg = parse_config_args(PoseTrainConfig, argv, __doc__, "train/configs/pose_tiny.yaml")
    if not cfg.data.path:
        parser.error("data.path (a folder prepared with --with-audio --stride 1) is required")
    if cfg.optim.n_critic < 1:
        parser.error("optim.n_critic must be >= 1")
    if cfg.data.reference not in ("canonical", "first"):
        parser.error(f"data.reference must be canonical or first, got {cfg.data.reference!r}")

    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    accelerator, out = make_accelerator(cfg, gradient_accumulation_steps=cfg.optim.grad_accum)

    whisper_device = "cpu" if cfg.num_workers > 0 else accelerator.device
    whisper = WhisperFeatures(cfg.whisper.model, device=whisper_device, batch_size=cfg.whisper.batch_size)
    if cfg.model.init_from:
        generator = PoseGenerator.from_pretrained(cfg.model.init_from).train()
    else:
        generator = PoseGenerator(PoseGeneratorConfig.from_dict({"audio_dim": whisper.dim, **cfg.model.pose}))
    gc = generator.config
    if gc.audio_dim != whisper.dim:
        raise SystemExit(f"the pose generator expects {gc.audio_dim}-d audio features but the Whisper model gives "
                         f"{whisper.dim}; use the Whisper model it was trained with")
    critics = PoseDiscriminators(PoseDiscriminatorConfig.from_dict(
        {"audio_dim": gc.audio_dim, "audio_frames_per_step": gc.audio_frames_per_step, **cfg.model.discriminator}))
    lo = min(cfg.data.clip_frames)
    if lo < critics.config.patch:
        parser.error(f"data.clip_frames must be >= the critic's patch ({critics.config.patch} frames)")

    data = PoseClipDataset(cfg.data.path, whisper, clip_frames=tuple(cfg.data.clip_frames), seed=cfg.seed,
                           frames_per_step=gc.audio_frames_per_step, segment=tuple(cfg.data.segment))
    if data.dropped and accelerator.is_main_process:
        print(f"warning: {data.dropped} clip(s) of {cfg.data.path} left out (no audio, no constant frame rate "
              f"or fewer than 2 frames in the segment)", file=sys.stderr)
    o = cfg.optim
    sampler = ClipSampler(len(data), o.batch_size, cfg.seed, accelerator.process_index, accelerator.num_processes)
    position = DrawPosition(sampler)

    opt_g = torch.optim.Adam(generator.parameters(), lr=o.lr_g, betas=tuple(o.betas), weight_decay=o.weight_decay)
    opt_d = torch.optim.Adam(critics.parameters(), lr=o.lr_d, betas=tuple(o.betas), weight_decay=o.weight_decay)
    sched_g = get_cosine_with_min_lr_schedule_with_warmup(opt_g, o.warmup_steps, o.max_steps,
                                                          min_lr=o.lr_g * o.min_lr_ratio)
    sched_d = get_cosine_with_min_lr_schedule_with_warmup(opt_d, o.warmup_steps, o.max_steps,
                                                          min_lr=o.lr_d * o.min_lr_ratio)
    gen_p, critics_p, opt_g, opt_d, sched_g, sched_d = accelerator.prepare(generator, critics, opt_g, opt_d,
                                                                           sched_g, sched_d)
    accelerator.register_for_checkpointing(position)
    gan = PoseGAN(gen_p, critics_p, cfg.losses, cfg.data.reference)

    step = begin_run(accelerator, cfg, out, "emoportraits-pose", {"max_steps": o.max_steps, "n_critic": o.n_critic})
    # its own generator: building the loader's iterator must not consume the global RNG
    loader = DataLoader(data, batch_sampler=sampler, num_workers=cfg.num_workers, collate_fn=collate_pose_clips,
                        generator=torch.Generator().manual_seed(cfg.seed))
    crash_at = crash_step()
    it = iter(loader)

    def next_batch() -> dict:
        raw = next(it)
        position.used += 1
        return to_device(raw, accelerator.device)

    t0 = time.monotonic()
    mean_d, mean_g = LogMean(), LogMean()
    while step < o.max_steps:
        generator.requires_grad_(False)
        for k in range(o.n_critic):                       # critics: n_critic updates on fresh batches
            for _ in range(o.grad_accum):                 # each over grad_accum batches
                logs_d = accumulated_update(accelerator, critics_p, lambda: gan.critic_loss(next_batch()), opt_d)
                if k == o.n_critic - 1:
                    mean_d.add(logs_d)                    # the last critic update's numbers
        sched_d.step()
        generator.requires_grad_(True)
        critics.requires_grad_(False)               # generator: one update
        for _ in range(o.grad_accum):
            batch = next_batch()
            logs_g = accumulated_update(accelerator, gen_p, lambda: gan.generator_loss(batch), opt_g,
                                        generator.parameters(), o.grad_clip)
            mean_g.add(dict(logs_g, frames=int(batch["motion"].shape[1])))
        sched_g.step()
        critics.requires_grad_(True)
        step += 1
        logs = {**mean_d.reduce(accelerator), **mean_g.reduce(accelerator)}   # over batches and ranks
        logs.update(lr_g=sched_g.get_last_lr()[0])
        append_metrics(accelerator, out, step, logs)
        if accelerator.is_main_process and (step % cfg.log.log_every == 0 or step == o.max_steps):
            print(f"step {step}/{o.max_steps}: L_G {logs['g_total']:.4f} (rot {logs['rot']:.4f}, trans "
                  f"{logs['trans']:.4f}), L_D {logs['d_total']:.4f} "
                  f"({(time.monotonic() - t0) / max(step, 1):.2f} s/step)", flush=True)
        log_to_tracker(accelerator, cfg, step, logs)
        checkpoint_if_due(accelerator, cfg, out, step, o.max_steps)
        crash_if_asked(step, crash_at)

    export_final(accelerator, accelerator.unwrap_model(gen_p), out, "pose generator")
    return 0


if __name__ == "__main__":
    sys.exit(main())
