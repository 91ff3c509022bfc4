"""Train (or fine-tune) the EMOPortraits main model with Accelerate.

    accelerate launch --cpu --num_processes 1 train/train_main.py --config train/configs/tiny.yaml \
        data.0.path=data/vox                                          # one CPU process (smoke run)
    accelerate launch --config_file train/accelerate/8gpu.yaml train/train_main.py \
        --config train/configs/released.yaml                          # GPUs / nodes (README)
    accelerate launch train/train_main.py --config train/configs/finetune.yaml \
        --init-from official data.0.path=data/me                      # personalise the released model

Arguments after the options are ``section.key=value`` overrides of the YAML config
(e.g. ``optim.max_steps=1000 log.output_dir=runs/x``); ``--init-from`` and ``--freeze`` are short
for ``model.init_from=…`` and ``model.freeze=[…]``. Data are streamed from the prepared shards
(`emoportraits.data.stream`): every rank and DataLoader worker reads its own. A run resumes
automatically from the newest complete checkpoint in ``log.output_dir`` (models, optimisers,
schedulers, RNG states, data position, EMA), so a killed run continues exactly where it stopped; on
another number of processes it continues at the same step with the shards reassigned. Logged
losses are means over the accumulated micro-batches and all ranks. At the end the generator (EMA
weights if enabled) is exported with ``save_pretrained`` to ``<output_dir>/final``.
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from emoportraits import EmoPortraits, EmoPortraitsConfig
from emoportraits.data.pairs import KNOWN_DATASETS
from emoportraits.data.stream import PairSource, StreamingPairs, StreamPosition
from emoportraits.losses.config import LossNetworks, LossWeights, build_loss_networks
from emoportraits.models.discriminator import MultiScalePatchDiscriminator
from emoportraits.training import GeneratorStep, TrainBatch, TrainConfig, discriminator_loss
from emoportraits.training.config import parse_config_args
from emoportraits.training.finetune import apply_freeze
from emoportraits.training.loop import (LogMean, append_metrics, begin_run, checkpoint_if_due, configure_ddp,
                                        crash_if_asked, crash_step, log_to_tracker, make_accelerator,
                                        report_digest_if_asked)

OPTIONS = {"--init-from": ("model.init_from", "fine-tune this model: a from_pretrained folder, a Hub repo or "
                                              "'official' (the cached released model, `emoportraits download`)"),
           "--freeze": ("model.freeze", "modules or groups to keep fixed, YAML list: [motion, identity]")}


def build_model(cfg: TrainConfig) -> EmoPortraits:
    if cfg.model.init_from:
        model = EmoPortraits.from_pretrained(cfg.model.init_from)      # fine-tuning
    else:
        config = EmoPortraitsConfig.preset(cfg.model.preset)
        model = EmoPortraits(EmoPortraitsConfig.from_dict({**config.to_dict(), **cfg.model.overrides}))
    apply_freeze(model, cfg.model.freeze)
    return model


def build_loss_weights(cfg: TrainConfig) -> LossWeights:
    values = dict(cfg.losses)
    preset = values.pop("preset", "released")
    if preset not in ("released", "paper"):
        raise ValueError(f"losses.preset must be released or paper, got {preset!r}")
    base = LossWeights.paper() if preset == "paper" else LossWeights()
    unknown = sorted(set(values) - set(vars(base)))
    if unknown:
        raise ValueError(f"losses: unknown keys {unknown}")
    return LossWeights(**{**vars(base), **values})


def to_batch(raw: dict, device) -> TrainBatch:
    feed = KNOWN_DATASETS.index("feed")
    return TrainBatch(source=raw["source"], driver=raw["driver"], source_mask=raw["source_mask"],
                      driver_mask=raw["driver_mask"], source_theta=raw["source_theta"],
                      driver_theta=raw["driver_theta"], driver_motion=raw["driver_motion"],
                      is_feed=torch.as_tensor(raw["dataset"]) == feed,
                      eye_centers=raw.get("driver_eye_centers")).to(device)


def sample_grid(batch: TrainBatch, pred: torch.Tensor, target: torch.Tensor, n: int = 4):
    """Rows of [source, driver target, prediction] as an H×W×3 uint8 array for the tracker."""
    rows = [torch.cat([s, t, p], dim=2) for s, t, p in zip(batch.source[:n], target[:n], pred[:n])]
    grid = torch.cat(rows, dim=1).detach().float().clamp(0, 1)
    return (grid.permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8")


def dry_batch(model: EmoPortraits, batch_size: int) -> TrainBatch:
    """A random batch of the model's size: what `configure_ddp` runs once to find unused parameters."""
    s, b = model.config.image_size, max(2, batch_size)
    eye = torch.eye(4).repeat(b, 1, 1)
    return TrainBatch(torch.rand(b, 3, s, s), torch.rand(b, 3, s, s), torch.ones(b, 1, s, s), torch.ones(b, 1, s, s),
                      eye, eye.clone(), torch.rand(b, 3, s, s), torch.zeros(b, dtype=torch.bool),
                      torch.zeros(b, 2, 2))


def main(argv=None) -> int:
    parser, args, cfg = parse_config_args(TrainConfig, argv, __doc__, "train/configs/", OPTIONS)
    if not cfg.data:
        parser.error("the configuration has no data sources (data: [{path: …, name: …}])")
    from emoportraits.console import run_command

    return run_command(lambda _: train(cfg, args), args, "train_main.py", "interrupted; rerun to resume")


def train(cfg: TrainConfig, args) -> int:
    accelerator, out = make_accelerator(cfg, gradient_accumulation_steps=cfg.optim.grad_accum)
    model = build_model(cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nets = build_loss_networks(LossNetworks(**cfg.networks), build_loss_weights(cfg))
    for w in caught:   # a switched-off loss is said once, by the main process
        if accelerator.is_main_process:
            print(f"warning: {w.message}", file=sys.stderr)
    step_module = GeneratorStep(model, nets["weights"], nets)
    disc = MultiScalePatchDiscriminator()
    weights = nets["weights"]
    use_disc = bool(weights.adversarial or weights.feature_matching)
    configure_ddp(accelerator, step_module, lambda m: m(dry_batch(model, cfg.optim.batch_size),
                                                         disc.requires_grad_(False) if use_disc else None)[0],
                  cfg.ddp_find_unused)
    disc.requires_grad_(True)
    run = Run(cfg, accelerator, out, step_module, disc, use_disc)
    run.loop()
    run.export(Path(args.config).name)
    return 0


class Run:
    """The optimisers, schedulers, data stream and checkpointed state of one training run."""

    def __init__(self, cfg: TrainConfig, accelerator, out: Path, step_module, disc, use_disc: bool):
        from diffusers.training_utils import EMAModel
        from transformers import get_cosine_with_min_lr_schedule_with_warmup as cosine

        self.cfg, self.accelerator, self.out, self.use_disc = cfg, accelerator, out, use_disc
        o = self.o = cfg.optim
        model = step_module.model
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        opt_g = torch.optim.AdamW(self.trainable, lr=o.lr_g, betas=tuple(o.betas), weight_decay=o.weight_decay)
        opt_d = torch.optim.AdamW(disc.parameters(), lr=o.lr_d, betas=tuple(o.betas), weight_decay=o.weight_decay)
        # schedules in optimisation steps (make_accelerator: not multiplied by the number of processes)
        sched_g = cosine(opt_g, o.warmup_steps, o.max_steps, min_lr=o.min_lr_g)
        sched_d = cosine(opt_d, o.warmup_steps, o.max_steps, min_lr=o.min_lr_d)
        self.data = StreamingPairs(
            [PairSource(src.path, src.weight, src.pair_jitter) for src in cfg.data], batch_size=o.batch_size,
            seed=cfg.seed, rank=accelerator.process_index, world_size=accelerator.num_processes,
            num_workers=cfg.num_workers, buffer=cfg.stream_buffer, resolution=model.config.image_size,
            every_second_mixed=cfg.mix_every == 2 and len(cfg.data) > 1)
        from accelerate.utils import gather_object
        self.position = StreamPosition(self.data, gather_object if accelerator.num_processes > 1 else None)
        (self.step_module, self.disc, self.opt_g, self.opt_d, self.sched_g,
         self.sched_d) = accelerator.prepare(step_module, disc, opt_g, opt_d, sched_g, sched_d)
        accelerator.register_for_checkpointing(self.position)
        self.ema = None
        if o.ema:
            self.ema = EMAModel(self.trainable, decay=o.ema_decay)
            accelerator.register_for_checkpointing(self.ema)
        self.step = begin_run(accelerator, cfg, out, "emoportraits", {"max_steps": o.max_steps,
                                                                     "batch_size": o.batch_size})

    def loader(self):
        """Batches come whole from the stream (each rank's own shards); the loader is not handed to
        Accelerate. Its own generator: creating the iterator must not consume the global RNG, whose
        state the checkpoints restore."""
        return iter(DataLoader(self.data, batch_size=None, num_workers=self.cfg.num_workers,
                               generator=torch.Generator().manual_seed(self.cfg.seed),
                               persistent_workers=False))

    def micro_step(self, batch: TrainBatch, logs: LogMean):
        """One micro-batch: the generator's and the discriminator's losses and backward passes (the
        optimisers step when the accumulation is complete)."""
        acc, raw_disc = self.accelerator, self.accelerator.unwrap_model(self.disc)
        with acc.accumulate(self.step_module, self.disc), acc.autocast():
            # generator: the discriminator judges x̂ but its weights are not trained by this loss
            raw_disc.requires_grad_(False)
            total, terms, pred, target = self.step_module(batch, raw_disc if self.use_disc else None,
                                                          green=self.cfg.green_background)
            acc.backward(total)
            if self.o.grad_clip and acc.sync_gradients:
                acc.clip_grad_norm_(self.trainable, self.o.grad_clip)
            self.opt_g.step()
            self.opt_g.zero_grad(set_to_none=True)
            raw_disc.requires_grad_(True)
            d_loss = torch.zeros(())
            if self.use_disc:      # else the discriminator would be dead weight: nothing is computed for it
                d_loss = discriminator_loss(self.disc, target, pred)
                acc.backward(d_loss)
                self.opt_d.step()
                self.opt_d.zero_grad(set_to_none=True)
        logs.add({**terms, "discriminator": float(d_loss.detach())})
        return pred, target

    def loop(self) -> None:
        cfg, acc, o = self.cfg, self.accelerator, self.o
        weights = acc.unwrap_model(self.step_module).weights
        progress = None
        if acc.is_main_process:
            from tqdm.auto import tqdm
            progress = tqdm(total=o.max_steps, initial=self.step, desc="training", unit="step")
        data, logs, crash_at, started = self.loader(), LogMean(), crash_step(), time.monotonic()
        while self.step < o.max_steps:
            raw = next(data)
            self.position.consumed(raw.pop("_position"))
            batch = to_batch(raw, acc.device)
            acc.unwrap_model(self.step_module).regions_on = weights.regions_active(self.step // max(o.epoch_len, 1))
            pred, target = self.micro_step(batch, logs)
            if not acc.sync_gradients:
                continue
            self.sched_g.step()
            if self.use_disc:
                self.sched_d.step()
            self.step += 1
            if self.ema is not None:
                self.ema.step(self.trainable)
            out_of_time = self.after_step(logs.reduce(acc), progress, batch, pred, target, started)
            if out_of_time:
                acc.print(f"time budget of {o.max_minutes} min spent at step {self.step}")
                break
            crash_if_asked(self.step, crash_at)
        if progress is not None:
            progress.close()

    def after_step(self, logs: dict, progress, batch, pred, target, started: float) -> bool:
        """Metrics, tracker, samples and checkpoint of a finished step; True when out of time."""
        cfg, acc, step = self.cfg, self.accelerator, self.step
        logs["lr_g"] = self.sched_g.get_last_lr()[0]
        append_metrics(acc, self.out, step, logs)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(g=f"{logs['generator']:.3f}", d=f"{logs['discriminator']:.3f}")
        log_to_tracker(acc, cfg, step, logs)
        if cfg.log.tracker == "tensorboard" and step % cfg.log.sample_every == 0 and acc.is_main_process:
            acc.get_tracker("tensorboard").log_images(
                {"samples": sample_grid(batch, pred, target)}, step=step, dataformats="HWC")
        out_of_time = False
        if self.o.max_minutes is not None:   # every rank must agree, or DDP would wait forever
            spent = torch.tensor(float(time.monotonic() - started > 60 * self.o.max_minutes), device=acc.device)
            out_of_time = bool(acc.reduce(spent, reduction="sum") > 0)
        checkpoint_if_due(acc, cfg, self.out, step, self.o.max_steps, force=out_of_time)
        return out_of_time

    def export(self, config_name: str) -> None:
        acc = self.accelerator
        report_digest_if_asked(acc, self.step_module)
        acc.wait_for_everyone()
        if acc.is_main_process:
            final = acc.unwrap_model(self.step_module).model
            if self.ema is not None:
                self.ema.store(self.trainable)
                self.ema.copy_to(self.trainable)
            final.config.extra.update(weights_note=f"trained with emoportraits for {self.step} steps "
                                                   f"(train/train_main.py, {config_name})")
            final.save_pretrained(self.out / "final")
            if self.ema is not None:
                self.ema.restore(self.trainable)
            print(f"exported the generator to {self.out / 'final'}")
        acc.end_training()


if __name__ == "__main__":
    sys.exit(main())
