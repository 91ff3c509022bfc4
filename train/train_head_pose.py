#!/usr/bin/env python
"""Train the head-pose network (`HeadPoseNet`: crop → raw9 → θ) on prepared shards.

    emoportraits prepare-data --videos VOX --out data/vox --dataset-name voxceleb2
    python train/train_head_pose.py --data data/vox [data/feed …] --preset released \\
        --steps 50000 --batch-size 64 --out head_pose.safetensors

Inputs are the prepared inference crops resized to the preset's image size (the network resizes
to its own input size, as at inference); targets are the raw9 pseudo-labels of
`emoportraits.data.pose_labels` (similarity of the face mesh to the canonical template). Loss: L1
on raw9 (default) or on the top 3×4 of θ. AdamW, cosine learning rate. Colour jitter only: any
geometric augmentation would change the labels.

Runs on Accelerate like the other trainings (``accelerate launch train/train_head_pose.py …`` for
several GPUs or nodes; plain ``python`` is one process). The run folder ``--output-dir`` (default: next
to ``--out``, ``<out stem>_run/``) holds ``metrics.jsonl`` (one line per step: loss averaged over
ranks, lr) and atomic checkpoints (``checkpoints/step-NNNNNNNN``: network, optimiser, scheduler, RNG
states) every ``--checkpoint-every`` steps; rerunning the same command resumes from the newest one
exactly (a step's batch and colour jitter are functions of the seed, the step and the rank), or
start again with ``--fresh``.

The output is a safetensors file of ``HeadPoseNet.state_dict()``. Plug it into a model::

    from safetensors.torch import load_file
    model = EmoPortraits.from_pretrained(...)            # or EmoPortraits(EmoPortraitsConfig.tiny())
    model.head_pose_net.load_state_dict(load_file("head_pose.safetensors"))
    model.save_pretrained("my-model")                    # θ now comes from the new network

(The network must match the model's preset: the file's metadata names it.)
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path

try:
    import emoportraits  # noqa: F401
except ImportError:                     # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from emoportraits.config import EmoPortraitsConfig
from emoportraits.data.augment import color_jitter
from emoportraits.data.clips import ClipStore
from emoportraits.data.pairs import FrameDataset, MixedDataset
from emoportraits.models.geometry import theta_from_raw9
from emoportraits.models.motion import HeadPoseNet
from emoportraits.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from emoportraits.training.loop import LogMean, append_metrics, crash_if_asked, crash_step


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train HeadPoseNet on prepared shards (crops → raw9 labels).")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR", help="prepared data set folder(s)")
    p.add_argument("--out", default="head_pose.safetensors", metavar="FILE", help="output safetensors file")
    p.add_argument("--output-dir", metavar="DIR",
                   help="run folder: checkpoints and metrics.jsonl (default: <out stem>_run next to --out)")
    p.add_argument("--preset", default="released", choices=EmoPortraitsConfig.PRESETS)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=64, help="frames per process and step")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--loss", default="raw9", choices=["raw9", "theta"], help="L1 on raw9 or on θ[:3, :4]")
    p.add_argument("--jitter", type=float, default=0.2, help="colour-jitter strength, 0 = off (default: 0.2)")
    p.add_argument("--init", metavar="FILE", help="start from this head_pose.safetensors")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--device", default=None, choices=[None, "cpu", "cuda"],
                   help="cpu forces the CPU (default: what Accelerate picks)")
    p.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--fresh", action="store_true", help="delete the run folder's checkpoints and metrics first")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 2 or args.checkpoint_every < 1:
        p.error("--steps and --checkpoint-every must be >= 1 and --batch-size >= 2 (BatchNorm needs two samples)")
    out = Path(args.out)
    args.output_dir = Path(args.output_dir or out.with_name(out.stem + "_run"))
    return args


class StepBatches(Sampler):
    """Frame indices of steps ``start`` … ``steps - 1``: step s of rank r draws ``batch_size`` frames
    with replacement from its own seed (seed, s, r), so a resumed run draws the same batches."""

    def __init__(self, n: int, batch_size: int, steps: int, seed: int, rank: int = 0):
        self.n, self.bs, self.steps, self.seed, self.rank, self.start = n, batch_size, steps, seed, rank, 0

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self):
        for s in range(self.start, self.steps):
            yield np.random.default_rng([self.seed, 11, s, self.rank]).integers(0, self.n, self.bs).tolist()


def _load_data(args) -> tuple[MixedDataset, str]:
    config = EmoPortraitsConfig.preset(args.preset)
    shards = [ClipStore(d) for d in args.data]
    data = MixedDataset([FrameDataset(s, resolution=config.image_size) for s in shards])
    if len(data) == 0:
        raise SystemExit("error: the data sets have no frames")
    templates = {s.info["template_digest"] for s in shards}
    if len(templates) > 1:
        raise SystemExit(f"error: the data sets were labelled with different face templates {sorted(templates)}; "
                         f"relabel with ClipStore(template=...) or prepare them with one --template")
    return data, next(iter(templates))


def _loss(net, batch: dict, args, step: int, rank: int, device) -> torch.Tensor:
    images = batch["image"].to(device, non_blocking=True)
    target = batch["pose"].to(device, non_blocking=True)
    if args.jitter > 0:                   # the step's own generator: resumable without saving its state
        gen = torch.Generator(device).manual_seed(args.seed * 1_000_003 + step * 1009 + rank)
        images = color_jitter(images, args.jitter, args.jitter, args.jitter, args.jitter / 4, generator=gen)
    raw = net(images)
    if args.loss == "raw9":
        return (raw - target).abs().mean()
    return (theta_from_raw9(raw)[:, :3] - theta_from_raw9(target)[:, :3]).abs().mean()


class _Raw(torch.nn.Module):
    """``HeadPoseNet.raw`` as the forward, so DDP wraps the call that training makes."""

    def __init__(self, net: HeadPoseNet):
        super().__init__()
        self.net = net

    def forward(self, images):
        return self.net.raw(images)


def _save(net: HeadPoseNet, args, step: int, template: str) -> None:
    from safetensors.torch import save_file

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tmp = out.with_name(out.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "module": "emoportraits.models.motion.HeadPoseNet",
                                         "preset": args.preset, "steps": str(step), "loss": args.loss,
                                         "template_digest": template})
    tmp.replace(out)
    print(f"wrote {out}; load it with model.head_pose_net.load_state_dict("
          f"safetensors.torch.load_file({str(out)!r})) on an EmoPortraits of preset {args.preset!r}")


def main(argv=None) -> int:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from safetensors.torch import load_file

    args = parse_args(argv)
    run_dir = args.output_dir
    accelerator = Accelerator(cpu=args.device == "cpu", mixed_precision=args.mixed_precision,
                              step_scheduler_with_optimizer=False)
    if args.fresh and accelerator.is_main_process:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    set_seed(args.seed, device_specific=True)
    data, template = _load_data(args)
    net = HeadPoseNet(EmoPortraitsConfig.preset(args.preset))
    if args.init:
        net.load_state_dict(load_file(args.init))
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.min_lr)
    model, opt, sched = accelerator.prepare(_Raw(net), opt, sched)
    step, resume = 0, latest_checkpoint(run_dir)
    if resume is not None:
        step = load_checkpoint(accelerator, resume)
        accelerator.print(f"resumed from {resume} at step {step}")
    rank = accelerator.process_index
    sampler = StepBatches(len(data), args.batch_size, args.steps, args.seed, rank)
    sampler.start = step
    loader = DataLoader(data, batch_sampler=sampler, num_workers=args.workers,
                        pin_memory=accelerator.device.type == "cuda")
    accelerator.print(f"HeadPoseNet ({args.preset}, {sum(p.numel() for p in net.parameters()):,} parameters) on "
                      f"{len(data)} frames from {len(args.data)} data set(s); {args.steps} steps × {args.batch_size} "
                      f"× {accelerator.num_processes} process(es), loss L1 {args.loss}, {accelerator.device}",
                      flush=True)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
    t0, mean, crash_at = time.perf_counter(), LogMean(), crash_step()
    for batch in loader:
        with accelerator.autocast():
            loss = _loss(model, batch, args, step, rank, accelerator.device)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        opt.step()
        sched.step()
        step += 1
        mean.add({"loss": loss.item()})
        logs = dict(mean.reduce(accelerator), lr=sched.get_last_lr()[0])
        if not math.isfinite(logs["loss"]):
            raise SystemExit(f"error: the loss became {logs['loss']} at step {step}")
        append_metrics(accelerator, run_dir, step, logs)
        if step % args.log_every == 0 or step == args.steps or step == 1:
            accelerator.print(f"step {step}/{args.steps}  loss {logs['loss']:.4f}  lr {logs['lr']:.2e}  "
                              f"{time.perf_counter() - t0:.1f} s", flush=True)
        if step % args.checkpoint_every == 0 or step == args.steps:
            save_checkpoint(accelerator, run_dir, step, keep=args.keep_checkpoints)
        crash_if_asked(step, crash_at)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save(accelerator.unwrap_model(model).net, args, step, template)
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
