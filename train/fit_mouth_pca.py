#!/usr/bin/env python
"""Fit the mouth PCA basis of the expression latent z (SPEC §4, L_PCA) and save it as safetensors.

    python train/fit_mouth_pca.py --model MODEL_DIR --videos talk1.mp4 talk2.mp4 \\
        --freeze-upper-face --max-frames-per-video 200 --stride 2 --out mouth_pca.safetensors
    python train/fit_mouth_pca.py --model MODEL_DIR --data data/hdtf --out mouth_pca.safetensors

Inputs: videos (every frame decoded, the largest face detected and cropped exactly as the
reenactment pipeline crops drivers: smoothed square box 2.2× the face, resized to the model
resolution; θ = model.head_pose(crop)) or a prepared shard folder (`emoportraits prepare-data`;
its stored crops and stored head poses θ).

``--freeze-upper-face`` (SPEC §4 Decision): in each video (or prepared clip) the upper half of the
first aligned crop is composited over every later crop, with a soft horizontal seam, so that only
the mouth region moves and the leading components of the fitted basis are mouth-only.

z = model.expression(crop, θ) is standardised per dimension (paper eq. 1) and scikit-learn's PCA is
fitted on it; the script prints the cumulative explained-variance ratio of the first 16 components
and AUC_z (SPEC §6; lower = less collapse). Load the basis with
``emoportraits.losses.MouthPCA.load(path)``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Iterator

try:
    import emoportraits  # noqa: F401
except ImportError:                     # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from emoportraits.losses.pca import fit_pca, latent_auc

logger = logging.getLogger("emoportraits")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Fit the mouth PCA basis of z (standardised) from videos or "
                                            "prepared shards and save it as safetensors.")
    p.add_argument("--model", required=True, metavar="DIR", help="model folder (EmoPortraits.from_pretrained)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", nargs="+", metavar="VIDEO", help="videos to encode (faces detected and cropped)")
    src.add_argument("--data", metavar="DIR", help="prepared data set folder (emoportraits prepare-data)")
    p.add_argument("--freeze-upper-face", action="store_true",
                   help="composite the first frame's upper half of the aligned crop over every later frame "
                        "of the same video/clip (soft seam), so only the mouth moves")
    p.add_argument("--seam", type=float, default=0.5,
                   help="seam height as a fraction of the crop, from the top (default: 0.5)")
    p.add_argument("--seam-softness", type=float, default=0.0625,
                   help="half-width of the seam blend as a fraction of the crop (default: 0.0625)")
    p.add_argument("--max-frames-per-video", type=int, default=None, metavar="N",
                   help="at most N frames (after --stride) per video or clip")
    p.add_argument("--stride", type=int, default=1, help="use every STRIDE-th frame (default: 1)")
    p.add_argument("--components", type=int, default=None, metavar="K",
                   help="number of components kept (default: min(frames, dim z))")
    p.add_argument("--out", default="mouth_pca.safetensors", metavar="FILE", help="output safetensors file")
    p.add_argument("--device", default=None, help="torch device (default: cuda, mps or cpu)")
    p.add_argument("--batch-size", type=int, default=32, help="frames encoded per forward pass")
    p.add_argument("--smooth", type=float, default=0.5, help="crop-box smoothing in [0, 1) for --videos")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.stride < 1:
        p.error(f"--stride must be >= 1, got {args.stride}")
    if args.max_frames_per_video is not None and args.max_frames_per_video < 1:
        p.error(f"--max-frames-per-video must be >= 1, got {args.max_frames_per_video}")
    if args.components is not None and args.components < 1:
        p.error(f"--components must be >= 1, got {args.components}")
    if not 0 < args.seam < 1 or args.seam_softness < 0:
        p.error("--seam must be in (0, 1) and --seam-softness >= 0")
    if not 0 <= args.smooth < 1:
        p.error(f"--smooth must be in [0, 1), got {args.smooth}")
    return args


# ---- upper-face freezing ------------------------------------------------------------------------------
def seam_weights(size: int, seam: float = 0.5, softness: float = 0.0625) -> torch.Tensor:
    """(size,) per-row weight of the *first* frame: 1 above the seam, 0 below, a smoothstep ramp over
    rows within ±softness·size of ``seam``·size (row centres, fractions of the crop height)."""
    y = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    if softness <= 0:
        return (y < seam).float()
    t = ((seam + softness - y) / (2 * softness)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def freeze_upper_face(first: torch.Tensor, frame: torch.Tensor, seam: float = 0.5,
                      softness: float = 0.0625) -> torch.Tensor:
    """Aligned crops (…, C, H, W): the upper part of ``first`` over ``frame`` with a soft horizontal seam."""
    w = seam_weights(frame.shape[-2], seam, softness).to(frame.device, frame.dtype)[:, None]
    return w * first + (1 - w) * frame


# ---- frame sources: (video index, crop (3, R, R) float [0, 1], θ (4, 4) or None) --------------------------
def video_crops(paths: list[str], size: int, *, stride: int, max_frames: int | None, smooth: float,
                detector=None) -> Iterator[tuple[int, torch.Tensor, None]]:
    """Crops exactly as `EmoPortraitsPipeline` crops drivers: the largest face, a smoothed square box."""
    from emoportraits.media.crop import BoxSmoother, crop, square_crop_box
    from emoportraits.media.faces import FaceDetector
    from emoportraits.media.video import iter_frames

    detector = detector or FaceDetector()
    for v, path in enumerate(paths):
        box_filter, box, used, skipped = BoxSmoother(smooth), None, 0, 0
        limit = None if max_frames is None else max_frames * stride
        for index, frame in enumerate(iter_frames(path, max_frames=limit)):
            if index % stride:
                continue
            faces = detector.detect(frame)      # sorted: faces[0] is the largest
            if faces:
                box = box_filter.update(square_crop_box(faces[0], (frame.shape[1], frame.shape[0])))
            elif box is None:
                skipped += 1                    # no face yet: nothing to crop
                continue
            image = crop(frame, box, size)
            yield v, torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255), None
            used += 1
            if max_frames is not None and used >= max_frames:
                break
        if skipped:
            logger.warning("%s: no face in %d frame(s) before the first detection; skipped", path, skipped)
        if not used:
            logger.warning("%s: no face found; the video contributes nothing", path)


def data_crops(root: str, size: int, *, stride: int, max_frames: int | None
               ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Stored crops and stored θ of a prepared folder, clip by clip."""
    from emoportraits.data.pairs import FrameDataset

    ds = FrameDataset(root, resolution=size)
    for clip in range(len(ds.starts) - 1):
        frames = range(int(ds.starts[clip]), int(ds.starts[clip + 1]), stride)
        if max_frames is not None:
            frames = frames[:max_frames]
        for j in frames:
            item = ds[j]
            yield clip, item["image"], item["theta"]


def count_frames(args) -> int | None:
    """Frames the progress bar expects (None when unknown)."""
    def take(n: int) -> int:
        k = (n + args.stride - 1) // args.stride
        return k if args.max_frames_per_video is None else min(k, args.max_frames_per_video)
    try:
        if args.data:
            from emoportraits.data.clips import ClipStore
            return int(sum(take(int(n)) for n in ClipStore(args.data).n_frames))
        from emoportraits.media.video import probe_video
        return int(sum(take(probe_video(p).n_frames) for p in args.videos))
    except Exception:       # a bad file fails properly later, with its own message
        return None


@torch.inference_mode()
def encode(model, items, *, freeze: bool, seam: float, softness: float, batch_size: int,
           progress=None) -> np.ndarray:
    """z (N, z_dim) float64 of every crop; θ predicted where not given."""
    zs, batch, thetas = [], [], []
    first_key, first = None, None

    def flush():
        if not batch:
            return
        x = torch.stack(batch).to(model.device, model.dtype)
        theta = model.head_pose(x) if thetas[0] is None else torch.stack(thetas).to(model.device)
        zs.append(model.expression(x, theta=theta).float().cpu())
        if progress is not None:
            progress.update(len(batch))
        batch.clear()
        thetas.clear()

    for key, image, theta in items:
        if freeze:
            if key != first_key:
                first_key, first = key, image
            else:
                image = freeze_upper_face(first, image, seam, softness)
        batch.append(image)
        thetas.append(theta)
        if len(batch) >= batch_size:
            flush()
    flush()
    if not zs:
        raise SystemExit("no frames were encoded (no faces found / empty data set)")
    return torch.cat(zs).double().numpy()


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from emoportraits.models import EmoPortraits
    from emoportraits.pipelines import default_device

    model = EmoPortraits.from_pretrained(args.model).eval()
    model = model.to(torch.device(args.device) if args.device else default_device())
    size = model.config.image_size
    if args.videos:
        items = video_crops(args.videos, size, stride=args.stride, max_frames=args.max_frames_per_video,
                            smooth=args.smooth)
    else:
        items = data_crops(args.data, size, stride=args.stride, max_frames=args.max_frames_per_video)

    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm
        bar = tqdm(total=count_frames(args), desc="encoding", unit="frame", file=sys.stderr, dynamic_ncols=True)
    try:
        z = encode(model, items, freeze=args.freeze_upper_face, seam=args.seam, softness=args.seam_softness,
                   batch_size=args.batch_size, progress=bar)
    finally:
        if bar is not None:
            bar.close()

    n, d = z.shape
    if args.components is not None and args.components > min(n, d):
        raise SystemExit(f"--components {args.components} but at most min(frames={n}, dim z={d}) = {min(n, d)} "
                         f"components can be fitted")
    pca = fit_pca(z, args.components)
    auc = latent_auc(z)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pca.save(out, metadata={"frames": n, "source": "data" if args.data else "videos",
                            "freeze_upper_face": args.freeze_upper_face, "stride": args.stride,
                            "auc_z": f"{auc:.6f}"})

    cum = np.cumsum(pca.explained_variance_ratio.double().numpy())[:16]
    print(f"fitted {pca.n_components} components on {n} frames (dim z = {d})")
    print("cumulative explained-variance ratio (first 16 components):")
    for k, c in enumerate(cum, 1):
        print(f"  PC{k:>2}: {c:.4f}")
    print(f"AUC_z = {auc:.4f} (lower = less collapse; the paper's full model: 0.80)")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
