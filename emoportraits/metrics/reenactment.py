"""Cross-reenactment (N sources × M drivers) and self-reenactment (held-out frames of a video).

Cross: every source photo is driven by every driver video (relative motion, as the pipeline does)
and scored by identity kept (CSIM vs the source), realism (FID vs the driver frames), and motion
transferred: the head's rotation since the first frame vs the driver's (°), and the frontalised
face/mouth landmark velocity errors FV/MV (positions differ by identity, motion should not).
Self: a video's first frame is the source and the following frames are the held-out targets, so
the output has a ground truth: PSNR/SSIM/L1/LPIPS raw and masked, AKD, pose error, FP/FV/MP/MV.
Baseline "copy source": the source crop for every frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..losses.pca import latent_auc
from ..media import iter_frames, load_image
from ..pipelines import ReenactOptions
from .landmarks import akd, motion_errors
from .pose import head_poses, pose_errors
from .protocols import (Accumulator, EvalConfig, Scorers, fid_of, motion, pixel_metrics, progress, render,
                        to_tensor, transfer, video_crops)
from .report import Column, image_grid, markdown_table

OURS, COPY = "EMOPortraits (this model)", "copy source (baseline)"
CROSS_COLUMNS = [Column("fid", "FID ↓", "{:.1f}"), Column("csim", "CSIM ↑"),
                 Column("pose_deg", "pose err (°) ↓", "{:.2f}"), Column("FV", "FV ↓", "{:.2f}"),
                 Column("MV", "MV ↓", "{:.2f}"), Column("auc_z", "AUC_z ↓")]
SELF_COLUMNS = [Column("psnr", "PSNR ↑", "{:.2f}"), Column("ssim", "SSIM ↑"), Column("lpips", "LPIPS ↓"),
                Column("l1", "L1 ↓", "{:.4f}"), Column("psnr_m", "PSNR (mask) ↑", "{:.2f}"),
                Column("ssim_m", "SSIM (mask) ↑"), Column("lpips_m", "LPIPS (mask) ↓"),
                Column("l1_m", "L1 (mask) ↓", "{:.4f}"),
                Column("akd", "AKD ↓", "{:.2f}"), Column("pose_deg", "pose err (°) ↓", "{:.2f}"),
                Column("FP", "FP ↓", "{:.2f}"), Column("MP", "MP ↓", "{:.2f}"), Column("csim", "CSIM ↑"),
                Column("fid", "FID ↓", "{:.1f}")]
PAPER_CROSS = [{"method": "EMOPortraits (paper, MEAD)", "fid": 59.6, "csim": 0.74, "auc_z": 0.80},
               {"method": "EMOPortraits (paper, FEED)", "fid": 60.2, "csim": 0.70},
               {"method": "MegaPortraits (paper, MEAD)", "fid": 61.1, "csim": 0.73}]
PAPER_SELF = [{"method": "MegaPortraits (paper, 512²)", "psnr": 20.2, "ssim": 0.72, "lpips": 0.22}]
UNITS = ("Units: pose err = geodesic angle between head rotations (cross: of the motion since the first "
         "frame); AKD in pixels of a 256² crop; FP/FV/MP/MV in % of the inter-ocular distance after "
         "frontalisation (468-point MediaPipe mesh; M = 40 lip points); L1 on [0, 1] pixels; "
         "(mask) = weighted by the target's portrait mask.")


@dataclass
class Clip:
    name: str
    crops: np.ndarray          # (T, S, S, 3) uint8
    thetas: torch.Tensor       # (T, 4, 4)
    zs: torch.Tensor           # (T, z_dim)
    landmarks: np.ndarray | None


def load_clip(pipeline, path: Path, cfg: EvalConfig, scorers: Scorers) -> Clip:
    crops, _ = video_crops(pipeline, path, cfg)
    thetas, zs = motion(pipeline.model, crops, cfg.batch_size)
    lm = scorers.landmarks.batch(crops) if scorers.landmarks else None
    return Clip(path.stem, crops, thetas, zs, lm)


def score_motion(pipeline, scorers: Scorers, acc: Accumulator, frames: np.ndarray, target: Clip,
                 relative: bool, static: bool, positions: bool) -> np.ndarray | None:
    """Pose and landmark errors of ``frames`` against ``target``; ``static``: all frames are one image
    (the copy baseline), so it is measured once. Returns the frames' landmarks."""
    n = len(frames)
    one = frames[:1] if static else frames
    thetas = head_poses(pipeline.model, to_tensor(one), scorers.cfg.batch_size)
    thetas = thetas.expand(n, 4, 4) if static else thetas
    acc.add(pose_deg=float(pose_errors(thetas, target.thetas, relative=relative)["rotation_deg"].mean()))
    if scorers.landmarks is None:
        return None
    lm = scorers.landmarks.batch(one)
    lm = np.repeat(lm, n, 0) if static else lm
    err = motion_errors(lm, target.landmarks)
    acc.add(FV=err["FV"], MV=err["MV"], **({"FP": err["FP"], "MP": err["MP"]} if positions else {}))
    if positions:
        acc.add(akd=float(akd(lm, target.landmarks, frames.shape[1]).mean()))
    return lm


def run_cross(pipeline, sources: list[Path], drivers: list[Path], cfg: EvalConfig, scorers: Scorers) -> dict:
    clips = [load_clip(pipeline, d, cfg, scorers) for d in progress(drivers, len(drivers), "drivers", cfg.progress)]
    real = [f for f in (scorers.features(c.crops) for c in clips) if f is not None]
    ours, copy = Accumulator(), Accumulator()
    grid = [[None] + [c.crops[len(c.crops) // 2] for c in clips]]
    pairs = progress(None, len(sources) * len(clips), "source × driver", cfg.progress)
    for path in sources:
        src = pipeline.prepare_source(load_image(path), name=str(path),
                                      options=ReenactOptions(crop_scale=cfg.crop_scale))
        row = [src.crop]
        for clip in clips:
            thetas, zs = transfer(pipeline, src.avatar, clip.thetas, clip.zs)
            out = render(pipeline, src.avatar, thetas, zs, cfg.batch_size)
            still = np.repeat(src.crop[None], len(out), 0)
            for acc, frames, static in ((ours, out, False), (copy, still, True)):
                acc.add(csim=scorers.csim(frames[:1] if static else frames, src.crop))
                score_motion(pipeline, scorers, acc, frames, clip, relative=True, static=static, positions=False)
                if scorers.fid is not None:
                    acc.features.append(scorers.features(frames))
            row.append(out[len(out) // 2])
            pairs.update(1)
        grid.append(row)
    pairs.close()
    z_all = torch.cat([c.zs for c in clips])
    rows = [{**ours.row(OURS), "fid": fid_of(ours, real), "auc_z": latent_auc(z_all.numpy())},
            {**copy.row(COPY), "fid": fid_of(copy, real)}]
    notes = [UNITS, f"{len(sources)} sources × {len(clips)} drivers, {sum(len(c.crops) for c in clips)} driver frames "
             f"(max {cfg.max_frames} per driver, stride {cfg.frame_stride}); FID real set = the driver crops; "
             f"AUC_z on the z of all driver frames (paper eq. 1; lower = less collapse).",
             "Grid: first row = the middle frame of each driver; first column = the source crops; cells = outputs "
             "for the drivers' middle frames."]
    return {"table": markdown_table(rows + PAPER_CROSS, CROSS_COLUMNS), "rows": rows, "notes": notes,
            "grid": image_grid(grid)}


def run_self(pipeline, videos: list[Path], cfg: EvalConfig, scorers: Scorers) -> dict:
    ours, copy, real, grid = Accumulator(), Accumulator(), [], []
    for path in progress(videos, len(videos), "self-reenactment", cfg.progress):
        clip = load_clip(pipeline, path, cfg, scorers)
        first = next(iter_frames(path, max_frames=1))
        src = pipeline.prepare_source(first, name=str(path), options=ReenactOptions(crop_scale=cfg.crop_scale))
        thetas, zs = transfer(pipeline, src.avatar, clip.thetas, clip.zs)
        out = render(pipeline, src.avatar, thetas[1:], zs[1:], cfg.batch_size)     # frames 1… are held out
        target = Clip(clip.name, clip.crops[1:], clip.thetas[1:], clip.zs[1:],
                      None if clip.landmarks is None else clip.landmarks[1:])
        masks = np.stack([pipeline.masker(t) for t in target.crops]).astype(np.float32)
        still = np.repeat(src.crop[None], len(out), 0)
        for acc, frames, static in ((ours, out, False), (copy, still, True)):
            acc.add(**pixel_metrics(scorers, frames, target.crops, masks))
            acc.add(csim=scorers.csim(frames[:1] if static else frames, src.crop))
            score_motion(pipeline, scorers, acc, frames, target, relative=False, static=static, positions=True)
            if scorers.fid is not None:
                acc.features.append(scorers.features(frames))
        if scorers.fid is not None:
            real.append(scorers.features(target.crops))
        mid = len(out) // 2
        grid.append([src.crop, target.crops[mid], out[mid], target.crops[-1], out[-1]])
    rows = [{**ours.row(OURS), "fid": fid_of(ours, real)}, {**copy.row(COPY), "fid": fid_of(copy, real)}]
    notes = [UNITS, f"{len(videos)} videos; source = frame 0, targets = the next frames (max {cfg.max_frames} "
             f"per video, stride {cfg.frame_stride}); CSIM vs the source crop.",
             "Grid rows: source | target (middle) | output (middle) | target (last) | output (last)."]
    return {"table": markdown_table(rows + PAPER_SELF, SELF_COLUMNS), "rows": rows, "notes": notes,
            "grid": image_grid(grid)}
