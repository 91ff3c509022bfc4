"""Speech-driven evaluation on audio-video clips (SPEC §6: FID, mouth/face landmark errors, CSIM).

Each clip's first frame is the source; E_aud predicts the expression z of every later frame from
the clip's audio; the head follows the clip's own poses (``pose="gt"``, so landmark errors measure
the expression only, as the frontalisation does) or stays still (``pose="still"``). The outputs
are compared with the real frames. Baselines: "copy source" (the first frame for every frame) and
"still head" (the avatar rendered with its own z_0 and the same head poses: no speech at all).
SyncNet offset/confidence need SyncNet weights, which are not offline: reported as n/a.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..audio import align_to_frames, load_audio
from ..media import iter_frames, probe_video
from ..pipelines import ReenactOptions
from .protocols import Accumulator, EvalConfig, Scorers, fid_of, progress, render, transfer
from .reenactment import COPY, OURS, UNITS, load_clip, score_motion
from .report import Column, image_grid, markdown_table

STILL = "still head (baseline: z₀, no speech)"
SPEECH_COLUMNS = [Column("fid", "FID ↓", "{:.1f}"), Column("MP", "MP ↓", "{:.2f}"),
                  Column("MV", "MV ↓", "{:.2f}"), Column("FP", "FP ↓", "{:.2f}"), Column("FV", "FV ↓", "{:.2f}"),
                  Column("csim", "CSIM ↑"),
                  Column("sync_offset", "LSE offset"), Column("sync_conf", "LSE conf ↑")]
PAPER_SPEECH = [{"method": "EMOPortraits (paper, HDTF)", "fid": 28.5, "MP": 2.53, "MV": 1.38, "FP": 0.82, "FV": 0.33,
                 "sync_offset": 0.07, "sync_conf": 5.77},
                {"method": "SadTalker (paper, HDTF)", "fid": 55.6, "sync_conf": 7.58}]


@torch.inference_mode()
def run_speech(pipeline, clips: list[Path], speech_model, whisper, cfg: EvalConfig, scorers: Scorers,
               pose: str = "gt") -> dict:
    if pose not in ("gt", "still"):
        raise ValueError(f"pose must be 'gt' or 'still', got {pose!r}")
    accs = {OURS: Accumulator(), STILL: Accumulator(), COPY: Accumulator()}
    real, grid = [], []
    speech_model = speech_model.to(pipeline.model.device).eval()
    for path in progress(clips, len(clips), "speech clips", cfg.progress):
        clip = load_clip(pipeline, path, cfg, scorers)
        first = next(iter_frames(path, max_frames=1))
        src = pipeline.prepare_source(first, name=str(path), options=ReenactOptions(crop_scale=cfg.crop_scale))
        n = len(clip.crops)
        fps = _clip_fps(path, cfg)
        aligned = align_to_frames(whisper(load_audio(path)), n, fps, k=speech_model.config.audio_frames_per_step)
        z_hat = speech_model(src.avatar.z.float(), aligned[None].to(pipeline.model.device))[0].float().cpu()
        thetas, _ = transfer(pipeline, src.avatar, clip.thetas, clip.zs)
        if pose == "still":
            thetas = src.avatar.theta.float().cpu().expand(n, 4, 4)
        outs = {OURS: render(pipeline, src.avatar, thetas, z_hat, cfg.batch_size),
                STILL: render(pipeline, src.avatar, thetas, src.avatar.z.float().cpu().expand(n, -1), cfg.batch_size),
                COPY: np.repeat(src.crop[None], n, 0)}
        for method, frames in outs.items():
            acc, static = accs[method], method == COPY
            # frame 0 is the source itself: score frames 1… (the audio-driven ones)
            target = type(clip)(clip.name, clip.crops[1:], clip.thetas[1:], clip.zs[1:],
                                None if clip.landmarks is None else clip.landmarks[1:])
            acc.add(csim=scorers.csim(frames[1:2] if static else frames[1:], src.crop))
            score_motion(pipeline, scorers, acc, frames[1:], target, relative=False, static=static, positions=True)
            if scorers.fid is not None:
                acc.features.append(scorers.features(frames[1:]))
        if scorers.fid is not None:
            real.append(scorers.features(clip.crops[1:]))
        mid = n // 2
        grid.append([src.crop, clip.crops[mid], outs[OURS][mid], outs[STILL][mid], clip.crops[-1], outs[OURS][-1]])
    rows = [{**acc.row(m), "fid": fid_of(acc, real)} for m, acc in accs.items()]
    for r in rows:
        r.pop("akd", None)
    notes = [UNITS, f"{len(clips)} clips; source = frame 0, scored on frames 1… (max {cfg.max_frames} per clip, "
             f"stride {cfg.frame_stride}); head pose: {'the clip’s own' if pose == 'gt' else 'still'}; "
             f"CSIM vs the source.",
             "LSE offset/confidence (SyncNet): n/a — no offline SyncNet weights.",
             "Grid rows: source | real (middle) | ours (middle) | still head (middle) | real (last) | ours (last)."]
    return {"table": markdown_table(rows + PAPER_SPEECH, SPEECH_COLUMNS), "rows": rows, "notes": notes,
            "grid": image_grid(grid)}


def _clip_fps(path: Path, cfg: EvalConfig) -> float:
    return probe_video(path).fps / cfg.frame_stride
