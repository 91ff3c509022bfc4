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
import sys
import time
from pathlib import Path

try:
    import emoportraits  # noqa: F401
except ImportError:                     # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils.data import DataLoader, RandomSampler

from emoportraits.config import EmoPortraitsConfig
from emoportraits.data.augment import color_jitter
from emoportraits.data.pairs import FrameDataset, MixedDataset
from emoportraits.data.clips import ClipStore
from emoportraits.models.geometry import theta_from_raw9
from emoportraits.models.motion import HeadPoseNet


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train HeadPoseNet on prepared shards (crops → raw9 labels).")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR", help="prepared data set folder(s)")
    p.add_argument("--out", default="head_pose.safetensors", metavar="FILE", help="output safetensors file")
    p.add_argument("--preset", default="released", choices=EmoPortraitsConfig.PRESETS)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--loss", default="raw9", choices=["raw9", "theta"], help="L1 on raw9 or on θ[:3, :4]")
    p.add_argument("--jitter", type=float, default=0.2, help="colour-jitter strength, 0 = off (default: 0.2)")
    p.add_argument("--init", metavar="FILE", help="start from this head_pose.safetensors")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--device", default=None, help="cpu, cuda, … (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 2:
        p.error("--steps must be >= 1 and --batch-size >= 2 (BatchNorm needs two samples)")
    return args


def main(argv=None) -> int:
    from safetensors.torch import load_file, save_file

    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = EmoPortraitsConfig.preset(args.preset)
    shards = [ClipStore(d) for d in args.data]
    data = MixedDataset([FrameDataset(s, resolution=config.image_size) for s in shards])
    if len(data) == 0:
        print("error: the data sets have no frames", file=sys.stderr)
        return 2
    templates = {s.info["template_digest"] for s in shards}
    if len(templates) > 1:
        print(f"error: the data sets were labelled with different face templates {sorted(templates)}; "
              f"relabel with ClipStore(template=...) or prepare them with one --template", file=sys.stderr)
        return 2
    sampler = RandomSampler(data, replacement=True, num_samples=args.steps * args.batch_size,
                            generator=torch.Generator().manual_seed(args.seed))
    loader = DataLoader(data, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        drop_last=True, persistent_workers=False, pin_memory=device.type == "cuda")

    net = HeadPoseNet(config)
    if args.init:
        net.load_state_dict(load_file(args.init))
    net.to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.min_lr)
    gen = torch.Generator(device).manual_seed(args.seed)
    print(f"HeadPoseNet ({args.preset}, {sum(p.numel() for p in net.parameters()):,} parameters) on {len(data)} "
          f"frames from {len(shards)} data set(s); {args.steps} steps × {args.batch_size}, loss L1 {args.loss}, "
          f"{device}", flush=True)

    t0, running, count = time.perf_counter(), 0.0, 0
    step = 0
    for step, batch in enumerate(loader, 1):
        images = batch["image"].to(device, non_blocking=True)
        target = batch["pose"].to(device, non_blocking=True)
        if args.jitter > 0:
            images = color_jitter(images, args.jitter, args.jitter, args.jitter, args.jitter / 4, generator=gen)
        raw = net.raw(images)
        if args.loss == "raw9":
            loss = (raw - target).abs().mean()
        else:
            loss = (theta_from_raw9(raw)[:, :3] - theta_from_raw9(target)[:, :3]).abs().mean()
        if not math.isfinite(loss.item()):
            print(f"error: the loss became {loss.item()} at step {step}", file=sys.stderr)
            return 1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running, count = running + loss.item(), count + 1
        if step % args.log_every == 0 or step == args.steps or step == 1:
            print(f"step {step}/{args.steps}  loss {running / count:.4f}  lr {sched.get_last_lr()[0]:.2e}  "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
            running, count = 0.0, 0

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(out), metadata={"format": "pt", "module": "emoportraits.models.motion.HeadPoseNet",
                                         "preset": args.preset, "steps": str(step), "loss": args.loss,
                                         "template_digest": next(iter(templates))})
    print(f"wrote {out}; load it with model.head_pose_net.load_state_dict("
          f"safetensors.torch.load_file({str(out)!r})) on an EmoPortraits of preset {args.preset!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
