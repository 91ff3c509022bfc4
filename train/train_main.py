"""Train (or fine-tune) the EMOPortraits main model with Accelerate.

    accelerate launch --cpu --num_processes 1 train/train_main.py --config train/configs/tiny.yaml \
        data.0.path=data/vox                                          # one CPU process (smoke run)
    accelerate launch train/train_main.py --config train/configs/released.yaml   # GPUs / nodes

Arguments after the options are ``section.key=value`` overrides of the YAML config
(e.g. ``optim.max_steps=1000 log.output_dir=runs/x``). A run resumes automatically from the newest
complete checkpoint in ``log.output_dir`` (models, optimisers, schedulers, RNG states, data
position, EMA), so a killed run continues exactly where it stopped. At the end the generator
(EMA weights if enabled) is exported with ``save_pretrained`` to ``<output_dir>/final``.
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from emoportraits import EmoPortraits, EmoPortraitsConfig
from emoportraits.data.pairs import KNOWN_DATASETS, MixedDataset, MixingBatchSampler, PairDataset
from emoportraits.losses.config import LossNetworks, LossWeights, build_loss_networks
from emoportraits.models.discriminator import MultiScalePatchDiscriminator
from emoportraits.training import GeneratorStep, TrainBatch, TrainConfig, discriminator_loss
from emoportraits.training.config import parse_config_args
from emoportraits.training.loop import (append_metrics, begin_run, checkpoint_if_due, crash_if_asked, crash_step,
                                        log_to_tracker, make_accelerator)


class SamplerState:
    """The data position for checkpoints: the sampler's state after the batches consumed so far."""

    def __init__(self, sampler: MixingBatchSampler):
        self.sampler, self.consumed = sampler, 0

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict(step=self.consumed), "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.consumed = int(state["consumed"])


def build_model(cfg: TrainConfig) -> EmoPortraits:
    if cfg.model.init_from:
        return EmoPortraits.from_pretrained(cfg.model.init_from)      # fine-tuning
    config = EmoPortraitsConfig.preset(cfg.model.preset)
    return EmoPortraits(EmoPortraitsConfig.from_dict({**config.to_dict(), **cfg.model.overrides}))


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


def main(argv=None) -> int:
    parser, args, cfg = parse_config_args(TrainConfig, argv, __doc__, "train/configs/")
    if not cfg.data:
        parser.error("the configuration has no data sources (data: [{path: …, name: …}])")

    from accelerate.utils import DistributedDataParallelKwargs
    from diffusers.training_utils import EMAModel
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    accelerator, out = make_accelerator(
        cfg, gradient_accumulation_steps=cfg.optim.grad_accum,
        # the frozen head-pose net and branches switched off by the config leave parameters unused
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])

    model = build_model(cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nets = build_loss_networks(LossNetworks(**cfg.networks), build_loss_weights(cfg))
    for w in caught:   # a switched-off loss is said once, by the main process
        if accelerator.is_main_process:
            print(f"warning: {w.message}", file=sys.stderr)
    step_module = GeneratorStep(model, nets["weights"], nets)
    disc = MultiScalePatchDiscriminator()
    trainable = [p for p in model.parameters() if p.requires_grad]
    o = cfg.optim
    opt_g = torch.optim.AdamW(trainable, lr=o.lr_g, betas=tuple(o.betas), weight_decay=o.weight_decay)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=o.lr_d, betas=tuple(o.betas), weight_decay=o.weight_decay)
    sched_g = get_cosine_with_min_lr_schedule_with_warmup(opt_g, o.warmup_steps, o.max_steps, min_lr=o.min_lr_g)
    sched_d = get_cosine_with_min_lr_schedule_with_warmup(opt_d, o.warmup_steps, o.max_steps, min_lr=o.min_lr_d)

    datasets = [PairDataset(src.path, resolution=model.config.image_size, seed=cfg.seed,
                            pair_jitter=src.pair_jitter) for src in cfg.data]
    sampler = MixingBatchSampler(datasets, [src.weight for src in cfg.data], batch_size=o.batch_size,
                                 every_second_mixed=cfg.mix_every == 2 and len(datasets) > 1, seed=cfg.seed,
                                 rank=accelerator.process_index, world_size=accelerator.num_processes,
                                 with_seeds=True)
    # the sampler shards over ranks itself, so the loader is not handed to Accelerate
    # its own generator: creating the loader's iterator must not consume the global RNG, whose
    # state the checkpoints restore (else a resumed run would draw different dropout masks)
    loader = DataLoader(MixedDataset(datasets), batch_sampler=sampler, num_workers=cfg.num_workers,
                        generator=torch.Generator().manual_seed(cfg.seed))
    position = SamplerState(sampler)

    step_module, disc, opt_g, opt_d, sched_g, sched_d = accelerator.prepare(
        step_module, disc, opt_g, opt_d, sched_g, sched_d)
    accelerator.register_for_checkpointing(position)
    ema = None
    if o.ema:
        ema = EMAModel(trainable, decay=o.ema_decay)
        accelerator.register_for_checkpointing(ema)

    step = begin_run(accelerator, cfg, out, "emoportraits", {"max_steps": o.max_steps, "batch_size": o.batch_size})

    raw_disc = accelerator.unwrap_model(disc)
    weights = nets["weights"]
    use_disc = bool(weights.adversarial or weights.feature_matching)
    progress = None
    if accelerator.is_main_process:
        from tqdm.auto import tqdm
        progress = tqdm(total=o.max_steps, initial=step, desc="training", unit="step")
    data = iter(loader)
    crash_at = crash_step()
    started = time.monotonic()
    while step < o.max_steps:
        batch = to_batch(next(data), accelerator.device)
        position.consumed += 1
        accelerator.unwrap_model(step_module).regions_on = weights.regions_active(step // max(o.epoch_len, 1))
        with accelerator.accumulate(step_module, disc), accelerator.autocast():
            # generator: the discriminator judges x̂ but its weights are not trained by this loss
            raw_disc.requires_grad_(False)
            total, logs, pred, target = step_module(batch, raw_disc, green=cfg.green_background)
            accelerator.backward(total)
            if o.grad_clip and accelerator.sync_gradients:
                accelerator.clip_grad_norm_(trainable, o.grad_clip)
            opt_g.step()
            sched_g.step()
            opt_g.zero_grad(set_to_none=True)
            raw_disc.requires_grad_(True)
            if use_disc:
                d_loss = discriminator_loss(disc, target, pred)
                accelerator.backward(d_loss)
                opt_d.step()
                sched_d.step()
                opt_d.zero_grad(set_to_none=True)
            else:   # no adversarial/feature-matching term: the discriminator would be dead weight
                d_loss = torch.zeros(())
        if not accelerator.sync_gradients:
            continue
        step += 1
        if ema is not None:
            ema.step(trainable)
        logs["discriminator"] = float(d_loss.detach())
        logs["lr_g"] = sched_g.get_last_lr()[0]
        append_metrics(accelerator, out, step, logs)
        if accelerator.is_main_process:
            progress.update(1)
            progress.set_postfix(g=f"{logs['generator']:.3f}", d=f"{logs['discriminator']:.3f}")
        log_to_tracker(accelerator, cfg, step, logs)
        if cfg.log.tracker == "tensorboard" and step % cfg.log.sample_every == 0 and accelerator.is_main_process:
            accelerator.get_tracker("tensorboard").log_images(
                {"samples": sample_grid(batch, pred, target)}, step=step, dataformats="HWC")
        out_of_time = False
        if o.max_minutes is not None:   # every rank must agree, or DDP would wait forever
            spent = torch.tensor(float(time.monotonic() - started > 60 * o.max_minutes), device=accelerator.device)
            out_of_time = bool(accelerator.reduce(spent, reduction="sum") > 0)
        checkpoint_if_due(accelerator, cfg, out, step, o.max_steps, force=out_of_time)
        if out_of_time:
            accelerator.print(f"time budget of {o.max_minutes} min spent at step {step}")
            break
        crash_if_asked(step, crash_at)
    if progress is not None:
        progress.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(step_module).model
        if ema is not None:
            ema.store(trainable)
            ema.copy_to(trainable)
        final.config.extra.update(weights_note=f"trained with emoportraits for {step} steps "
                                               f"(train/train_main.py, {Path(args.config).name})")
        final.save_pretrained(out / "final")
        if ema is not None:
            ema.restore(trainable)
        print(f"exported the generator to {out / 'final'}")
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
