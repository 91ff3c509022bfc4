"""Head-pose generation statistics (SPEC §5): diversity, smoothness, correlation with audio energy.

For every video with sound in --clips: the real head motion (the main model's head-pose network
on the face crops) is the reference; the speech-to-pose generator (MODEL/pose, with MODEL/whisper)
makes --seeds samples from the clip's audio; the baseline is a still head. Writes OUT/poses.md
(one row per method, means over clips) and OUT/poses.png (yaw over time, real vs samples, per clip).

    python bench/eval_poses.py --model MODEL --clips ../shared/media/driving --out report/ --max-frames 250
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import _eval_common as common

REAL, GEN, STILL = "real head motion (clips)", "generated (this model)", "still head (baseline)"


def plot(curves: list[tuple[str, float, np.ndarray, list[np.ndarray]]], path: Path) -> Path | None:
    """One panel per clip: yaw (°) since the first frame, real vs generated samples."""
    try:
        import matplotlib
        matplotlib.use("Agg", force=False)      # no display needed
        from matplotlib.figure import Figure
    except ImportError:
        return None
    from emoportraits.models.geometry import matrix_to_angles
    import torch

    def yaw(r):
        return np.degrees(matrix_to_angles(torch.from_numpy(np.swapaxes(r[:1], 1, 2) @ r).float()).numpy()[:, 0])

    cols = min(3, len(curves))
    rows = -(-len(curves) // cols)
    fig = Figure(figsize=(4 * cols, 2.6 * rows), dpi=100)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (name, fps, real, gens) in zip(axes, curves):
        t = np.arange(len(real)) / fps
        ax.plot(t, yaw(real), "k", lw=2, label="real")
        for i, g in enumerate(gens):
            ax.plot(np.arange(len(g)) / fps, yaw(g), lw=1, label=f"seed {i}")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("s", fontsize=8)
        ax.set_ylabel("yaw (°)", fontsize=8)
        ax.legend(fontsize=6)
    for ax in axes[len(curves):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def main() -> None:
    p = common.parser(__doc__)
    common.add_clip_arguments(p, "pose", "PoseGenerator")
    p.add_argument("--seeds", type=int, default=3, help="generated samples per clip (default 3)")
    p.add_argument("--temperature", type=float, default=1.0, help="noise scale of the generator (default 1)")
    args = p.parse_args()

    from emoportraits.audio import WhisperFeatures, load_audio
    from emoportraits.metrics.pose import rotation_from_theta
    from emoportraits.metrics.protocols import Accumulator, motion, progress, video_crops
    from emoportraits.metrics.report import Column, markdown_table, write_report
    from emoportraits.metrics.sequences import frame_energy, pose_statistics, seed_diversity
    from emoportraits.models import PoseGenerator
    from emoportraits.poses import generate_poses

    cfg = common.config(args)
    clips, pose_dir, whisper_id = common.audio_clips(args, "pose")
    generator = PoseGenerator.from_pretrained(pose_dir).to(args.device).eval()
    whisper = WhisperFeatures(whisper_id, device=args.device)
    pipe = common.pipeline(args)
    accs = {REAL: Accumulator(), GEN: Accumulator(), STILL: Accumulator()}
    curves = []
    for path in progress(clips, len(clips), "clips", cfg.progress):
        crops, fps = video_crops(pipe, path, cfg)
        thetas, _ = motion(pipe.model, crops, cfg.batch_size)
        real = rotation_from_theta(thetas)
        n = len(real)
        samples = load_audio(path)
        energy = frame_energy(samples, n, fps)
        gens = [generate_poses(generator, whisper, samples, fps=fps, seed=s, temperature=args.temperature,
                               n_frames=n).rotation.astype(np.float64) for s in range(args.seeds)]
        accs[REAL].add(**pose_statistics(real, fps, energy))
        for g in gens:
            accs[GEN].add(**pose_statistics(g, fps, energy))
        accs[GEN].add(seed_div=seed_diversity(gens))
        accs[STILL].add(**pose_statistics(np.broadcast_to(np.eye(3), (n, 3, 3)), fps, energy))
        curves.append((path.stem, fps, real, gens))
    columns = [Column("std_deg", "diversity: std (°)"), Column("speed", "speed (°/s)"),
               Column("jerk", "jerk (°/s³) ↓", "{:.1f}"), Column("energy_corr", "corr(speed, energy) ↑"),
               Column("seed_div", "seed diversity (°) ↑")]
    table = markdown_table([acc.row(m) for m, acc in accs.items()], columns)
    args.out.mkdir(parents=True, exist_ok=True)
    png = plot(curves, args.out / "poses.png")
    notes = [f"{len(clips)} clips (max {cfg.max_frames} frames each, stride {cfg.frame_stride}); {args.seeds} "
             f"samples per clip at temperature {args.temperature}. Real motion: the main model's head-pose "
             f"network on the face crops. Diversity/speed closest to the real row is best; jerk: lower = smoother; "
             f"seed diversity: 0 = the generator ignores its noise.",
             "No numbers in the paper to compare with (it reports a user study only)."]
    if png is None:
        notes.append("poses.png: not drawn — matplotlib is not installed")
    path = write_report(args.out, "poses", f"Head-pose generation — {args.model}", [("Pose statistics", table)],
                        notes, command=common.command_line())
    if png is not None:
        path.write_text(path.read_text() + "\n![yaw over time](poses.png)\n")
    print(path.read_text())


if __name__ == "__main__":
    common.run_main(main)
