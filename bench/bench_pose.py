"""Train a tiny head-pose generator on the CPU and test it on held-out clips.

1. Prepares consecutive frames + audio of the shared driving clips with a sound track
   (`prepare-data --with-audio --stride 1`): their head-pose labels are the data.
2. A tiny random Whisper (no Whisper weights are reachable offline; pass --whisper for a real one).
3. Trains the generator with train/train_pose.py for --steps on the first --train-fraction of every
   clip (``data.segment``); the rest of every clip is held out, plus the clips of --held-out videos
   entirely (prepared apart, never trained on).
4. On held-out windows of --window frames (starting every --window / 4 frames): mean rotation error
   (geodesic angle, degrees) and translation L1 (crop units) of the generated poses (temperature 0:
   the deterministic output; temperature 1: sampled, mean of --samples seeds; both given the window's
   first absolute pose, known at inference as the portrait's) against the real ones, and three
   baselines: the first pose of the window held ("no motion"), the mean training pose, and the mean
   training motion per frame (over the training windows) — one metric code for all of them, per held-out
   set and pooled over all held-out windows. On the motion since the window's first frame (the default training target and
   what inference uses; there the first-pose baseline is "no motion"), and with --reference canonical
   also on absolute poses (from the labels' canonical frame, that model's target). Jitter: the mean
   frame-to-frame rotation step (degrees) and translation step of generated vs real sequences.

5. Drift: the least-squares linear trend (slope per second) of yaw, pitch, roll (degrees) and
   translation x, y, z (crop units) of generated absolute poses over --drift-seconds of speech (the
   shared speech clips concatenated, every rotation of their order, looped if short), each starting
   from a real pose (the first pose of each speech clip, d05 and d06, and each shared portrait's pose as
   `EmoPortraitsPipeline.source_pose9` gives it), against the slopes of the real head-pose tracks of the
   speech clips over their whole length: is the generated trend inside the real range?

    python bench/bench_pose.py                 # final figures
    python bench/bench_pose.py --validate      # choosing settings (never on the held-out parts)
    python bench/bench_pose.py --drift-model assets/default-model     # only the drift of a trained bundle
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOPORTRAITS_SHARED", REPO.parent / "shared"))
AUDIO_CLIPS = ("d01", "d02", "d03", "d05", "d06")     # the shared clips with a sound track
SPEECH_CLIPS = ("d05", "d06")                         # the ones whose sound track is speech
DRIFT_NAMES = ("yaw (°/s)", "pitch (°/s)", "roll (°/s)", "x (/s)", "y (/s)", "z (/s)")
MOTION, ABSOLUTE = "motion since the window's first frame", "absolute pose (from the canonical frame)"


def run(cmd: list) -> None:
    subprocess.run([str(c) for c in cmd], check=True)


def prepare(videos: list[Path], folder: Path, out: Path, frames: int) -> None:
    for v in videos:
        (folder / v.stem).mkdir(parents=True, exist_ok=True)
        if not (folder / v.stem / v.name).exists():
            (folder / v.stem / v.name).symlink_to(v.resolve())
    run([sys.executable, "-m", "emoportraits", "prepare-data", "--videos", folder, "--out", out, "--dataset-name",
         "voxceleb2", "--resolution", "64", "--frames-per-clip", frames, "--stride", "1", "--with-audio", "--quiet"])


def windows(data, length: int, hop: int) -> list[dict]:
    """Windows of ``length`` frames every ``hop`` frames over every clip's segment of ``data``."""
    out = []
    for clip in data.clips:
        first, end = data.segment_range(int(clip))
        out += [data.read(int(clip), s, length) for s in range(first, end - length + 1, hop)]
    return out


def angle_deg(ra: torch.Tensor, rb: torch.Tensor) -> torch.Tensor:
    """Geodesic angle (degrees) between rotations (…, 3, 3)."""
    cos = ((ra.transpose(-1, -2) @ rb).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))


def errors(pred9: torch.Tensor, real9: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per window (N,): mean rotation error (degrees) and mean translation L1 (per coordinate) over its frames."""
    from emoportraits.models.geometry import pose9_to_rigid

    rp, tp = pose9_to_rigid(pred9)
    rr, tr = pose9_to_rigid(real9)
    return angle_deg(rp, rr).mean(-1).numpy(), (tp - tr).abs().mean((-1, -2)).numpy()


def jitter(x9: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per window (N,): mean frame-to-frame rotation step (degrees) and translation step (L1 per coordinate)."""
    from emoportraits.models.geometry import pose9_to_rigid

    r, t = pose9_to_rigid(x9)
    return (angle_deg(r[..., 1:, :, :], r[..., :-1, :, :]).mean(-1).numpy(),
            (t[..., 1:, :] - t[..., :-1, :]).abs().mean((-1, -2)).numpy())


def mean_pose(x9: torch.Tensor) -> torch.Tensor:
    """The mean of (…, 9) poses: 6D parts averaged then Gram–Schmidt, translations averaged."""
    from emoportraits.models.geometry import project_pose9

    return project_pose9(x9.reshape(-1, 9).mean(0))


@torch.inference_mode()
def evaluate(model_dir: Path, whisper: str, data: Path, segment: tuple, length: int, train_segment: tuple,
             train_data: Path, samples: int, reference: str) -> dict:
    """Per-window figures (arrays of N windows) of every method, by one metric code: the generated
    poses get the audio and the window's first absolute pose (known at inference: the portrait's)."""
    from emoportraits.audio import WhisperFeatures
    from emoportraits.data.pose_clips import PoseClipDataset
    from emoportraits.models import PoseGenerator
    from emoportraits.models.geometry import project_pose9, relative_pose9

    gen = PoseGenerator.from_pretrained(model_dir).eval()
    w = WhisperFeatures(whisper)
    k, hop = gen.config.audio_frames_per_step, max(1, length // 4)
    held = windows(PoseClipDataset(data, w, clip_frames=(2, 2), frames_per_step=k, segment=segment), length, hop)
    train = windows(PoseClipDataset(train_data, w, clip_frames=(2, 2), frames_per_step=k, segment=train_segment),
                    length, hop)
    audio = torch.stack([it["audio"] for it in held])
    initial = torch.stack([it["pose9"][0] for it in held])
    det = project_pose9(gen(audio, temperature=0.0, initial_pose=initial))
    sampled = [project_pose9(gen(audio, generator=torch.Generator().manual_seed(s), initial_pose=initial))
               for s in range(samples)]
    out = {"windows": len(held)}
    tables = [(MOTION, "motion", relative_pose9)]
    if reference == "canonical":           # absolute poses are only a prediction of a canonical-frame model
        tables.append((ABSOLUTE, "pose9", lambda x: x))
    for name, key, rel in tables:
        real = torch.stack([it[key] for it in held])                                  # (N, L, 9)
        train_real = torch.stack([it[key] for it in train])
        rows = {"no motion (first pose held)": errors(real[:, :1].expand_as(real), real),
                "mean training pose": errors(mean_pose(train_real).expand_as(real), real),
                "mean training motion (per frame)": errors(
                    project_pose9(train_real.mean(0)).expand_as(real), real),
                "generated, temperature 0": errors(rel(det), real)}
        per_seed = [errors(rel(x), real) for x in sampled]
        rows[f"generated, temperature 1 (×{samples})"] = tuple(np.mean([e[i] for e in per_seed], 0) for i in (0, 1))
        out[name] = rows
    real = torch.stack([it["pose9"] for it in held])
    jit = [jitter(x) for x in sampled]
    out["jitter"] = {"real": jitter(real), "generated, temperature 0": jitter(det),
                     "generated, temperature 1": tuple(np.mean([j[i] for j in jit], 0) for i in (0, 1))}
    return out


# ---- drift ------------------------------------------------------------------------------------------
def drift_slopes(x9: torch.Tensor, times: np.ndarray) -> np.ndarray:
    """(6,) least-squares linear trend per second of a pose track (T, 9) at ``times`` (s): yaw, pitch,
    roll in degrees (R = Rz(yaw)·Ry(pitch)·Rx(roll)) and translation x, y, z in crop units."""
    from emoportraits.models.geometry import matrix_to_angles, pose9_to_rigid

    r, tau = pose9_to_rigid(x9.float())
    angles = np.degrees(np.unwrap(matrix_to_angles(r).double().numpy(), axis=0))    # no ±180° jumps
    return np.polyfit(times, np.concatenate([angles, tau.double().numpy()], 1), 1)[0]


def real_speech_tracks(folders: list[Path]) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    """Name → (whole head-pose label track (T, 9) as poses, frame times in s) of every prepared clip of
    the speech videos."""
    from emoportraits.data.clips import ClipStore as ShardDataset
    from emoportraits.models.geometry import pose9_from_raw9

    out = {}
    for folder in (f for f in folders if (f / "dataset.json").is_file()):
        data = ShardDataset(folder)
        for i in range(len(data)):
            h = data.header(i)
            name = Path(h["source"]).stem[:3]
            if name.startswith(SPEECH_CLIPS):
                label = name if name not in out else f"{name}#{sum(k.startswith(name) for k in out)}"
                times = np.asarray(h["frame_indices"], np.float64) / float(h["fps"])
                out[label] = (pose9_from_raw9(torch.from_numpy(data.read_poses(i))), times - times[0])
    return out


def portrait_poses() -> dict[str, torch.Tensor]:
    """Name → the head pose (9,) of every shared portrait, as the serving code computes it
    (`EmoPortraitsPipeline.source_pose9`; the bundled model prepares the photo); {} without it."""
    from emoportraits.bundle import DEFAULT_MODEL
    from emoportraits.media.image import load_image
    from emoportraits.pipelines import EmoPortraitsPipeline

    if not DEFAULT_MODEL.is_dir():
        return {}
    pipe = EmoPortraitsPipeline.from_pretrained(DEFAULT_MODEL, device="cpu")
    return {p.stem[:3]: pipe.source_pose9(pipe.prepare_source(load_image(p), name=p.name))
            for p in sorted((SHARED / "media" / "portraits").glob("*.jpg"))}


def looped_speech(seconds: float) -> list[np.ndarray]:
    """The shared speech clips concatenated in every rotation of their order, each cut (or looped) to
    ``seconds`` of 16 kHz samples: speech of that length that no single clip has."""
    from emoportraits.audio import SAMPLE_RATE, load_audio

    clips = [load_audio(p) for p in sorted((SHARED / "media" / "audio").glob("*.wav"))]
    n = int(round(seconds * SAMPLE_RATE))
    out = []
    for i in range(len(clips)):
        joined = np.concatenate(clips[i:] + clips[:i])
        out.append(np.tile(joined, -(-n // len(joined)))[:n])
    return out


@torch.inference_mode()
def generated_drift(model_dir: Path, whisper: str, starts: torch.Tensor, seconds: float, fps: float = 25.0
                    ) -> dict[str, np.ndarray]:
    """Slopes (N, 6) of generated absolute poses P_0·M_t over ``seconds`` of speech: every start pose
    P_0 (S, 9) with every speech order, at temperature 0 and 1 (one seed per speech order)."""
    from emoportraits.audio import WhisperFeatures, align_to_frames, n_frames_for
    from emoportraits.models import PoseGenerator
    from emoportraits.models.geometry import matrix_to_pose9, pose9_to_matrix, project_pose9, relative_pose9

    gen = PoseGenerator.from_pretrained(model_dir).eval()
    w = WhisperFeatures(whisper)
    n = n_frames_for(seconds, fps)
    times, S = np.arange(n) / fps, len(starts)
    out: dict[str, list] = {"temperature 0": [], "temperature 1": []}
    for seed, samples in enumerate(looped_speech(seconds)):
        audio = align_to_frames(w(samples), n, fps, k=gen.config.audio_frames_per_step)[None].float()
        for temperature, key in ((0.0, "temperature 0"), (1.0, "temperature 1")):
            noise = gen.make_noise(S, n, temperature, torch.Generator().manual_seed(seed))
            x9 = gen(audio.expand(S, *audio.shape[1:]), noise, initial_pose=starts)
            motion = relative_pose9(project_pose9(x9.float()))             # as generate_poses gives it
            absolute = matrix_to_pose9(pose9_to_matrix(starts)[:, None] @ pose9_to_matrix(motion))
            out[key] += [drift_slopes(x, times) for x in absolute]
    return {key: np.stack(v) for key, v in out.items()}


def drift(model_dir: Path, whisper: str, prepared: list[Path], seconds: float) -> dict:
    """Generated vs real drift slopes (see the module docstring, step 5)."""
    real = real_speech_tracks(prepared)
    if not real:
        raise SystemExit("no prepared speech clip (d05, d06) to compare the drift with")
    starts = {f"first pose of {k}": x9[0] for k, (x9, _) in real.items()}
    starts.update({f"portrait {k}": x9 for k, x9 in portrait_poses().items()})
    generated = generated_drift(model_dir, whisper, torch.stack(list(starts.values())), seconds)
    return {"real": {k: drift_slopes(x9, t) for k, (x9, t) in real.items()},
            "real seconds": {k: float(t[-1]) for k, (_, t) in real.items()},
            "generated": generated, "starts": list(starts), "seconds": seconds}


def print_drift(d: dict, model: str) -> None:
    real = np.stack(list(d["real"].values()))                                  # (clips, 6)
    lo, hi = real.min(0), real.max(0)
    t0, t1 = d["generated"]["temperature 0"], d["generated"]["temperature 1"]
    print(f"\ndrift of {model}: least-squares slope over {d['seconds']:g} s of speech from {len(d['starts'])} "
          f"start poses ({len(d['starts']) - len(d['real'])} portraits, the first pose of "
          f"{', '.join(d['real'])}) × {len(t1) // len(d['starts'])} speech orders, vs the real speech clips "
          f"({', '.join(f'{k}: {s:.1f} s' for k, s in d['real seconds'].items())})")
    clips = "".join(f"{'real ' + k:>10}" for k in d["real"])
    print(f"  {'slope':<12}{'gen T=0':>10}{'gen T=1':>10}{'T=1 [min, max]':>22}{clips}{'real [min, max]':>22}"
          f"{'T=1 mean in range':>19}{'T=1 runs in range':>19}{'|T=1 runs| <= real':>20}")
    for j, name in enumerate(DRIFT_NAMES):
        f = ".3f" if j < 3 else ".5f"                          # degrees/s, crop units/s
        inside = (t1[:, j] >= lo[j]) & (t1[:, j] <= hi[j])
        # drifting less than any real clip is no fault: also count |slope| within the real maximum
        calmer = np.abs(t1[:, j]) <= np.abs(real[:, j]).max()
        mean_in = "yes" if lo[j] <= t1[:, j].mean() <= hi[j] else "no"
        per_clip = "".join(f"{v[j]:>10{f}}" for v in real)
        print(f"  {name:<12}{t0[:, j].mean():>10{f}}{t1[:, j].mean():>10{f}}"
              f"{f'[{t1[:, j].min():{f}}, {t1[:, j].max():{f}}]':>22}{per_clip}"
              f"{f'[{lo[j]:{f}}, {hi[j]:{f}}]':>22}{mean_in:>19}{f'{inside.sum()}/{len(inside)}':>19}"
              f"{f'{calmer.sum()}/{len(calmer)}':>20}")


def pooled(results: list[dict]) -> dict:
    """The held-out sets together: every window weighs the same."""
    out = {"windows": sum(r["windows"] for r in results)}
    for table in (t for t in (MOTION, ABSOLUTE, "jitter") if t in results[0]):
        out[table] = {row: tuple(np.concatenate([r[table][row][i] for r in results]) for i in (0, 1))
                      for row in results[0][table]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=600, help="generator updates (default: 600)")
    p.add_argument("--train-fraction", type=float, default=0.75,
                   help="first part of every clip trained on, the rest held out (default: 0.75)")
    p.add_argument("--held-out", default="d06", help="video name prefixes held out entirely (default: d06; '' for none)")
    p.add_argument("--window", type=int, default=32, help="frames per training / evaluation window (default: 32)")
    p.add_argument("--reference", default="first", choices=["first", "canonical"],
                   help="training target (data.reference): the motion since the window's first frame (default) "
                        "or absolute poses from the labels' canonical frame")
    p.add_argument("--samples", type=int, default=4, help="seeds of the sampled evaluation (default: 4)")
    p.add_argument("--validate", action="store_true",
                   help="choose settings without the test sets: train on the first two thirds of --train-fraction "
                        "of every training clip, evaluate on the rest of it (the held-out parts stay unseen)")
    p.add_argument("--whisper", help="a Whisper model id/folder (default: a tiny random one built here)")
    p.add_argument("--work-dir", type=Path, help="keep everything here (default: a temporary folder)")
    p.add_argument("--drift-seconds", type=float, default=15.0,
                   help="seconds of speech the drift is measured over (default: 15)")
    p.add_argument("--drift-model", type=Path, metavar="BUNDLE",
                   help="only measure the drift of this model bundle's pose/ and whisper/ (no training)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides of train/configs/pose_tiny.yaml")
    args = p.parse_args()
    videos = [v for v in sorted((SHARED / "media" / "driving").glob("*.mp4")) if v.name.startswith(AUDIO_CLIPS)]
    if not videos:
        raise SystemExit(f"no clips under {SHARED / 'media' / 'driving'}; set EMOPORTRAITS_SHARED")
    held = tuple(s.strip() for s in args.held_out.split(",") if s.strip())
    split = {"train": [v for v in videos if not v.name.startswith(held or ("\0",))],
             "heldout": [v for v in videos if held and v.name.startswith(held)]}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        for name, vids in split.items():
            if vids and not (work / name).exists():         # --work-dir: prepared once, reused
                prepare(vids, work / f"{name}_videos", work / name, 300)
        if args.drift_model:
            print_drift(drift(args.drift_model / "pose", args.whisper or str(args.drift_model / "whisper"),
                              [work / "train", work / "heldout"], args.drift_seconds), args.drift_model)
            return
        whisper = args.whisper
        if whisper is None and (work / "whisper").is_dir():
            whisper = str(work / "whisper")                  # the one built on an earlier run (--work-dir)
        elif whisper is None:
            from emoportraits.audio import random_whisper      # the tests' tiny Whisper: random, 2 s windows
            random_whisper(d_model=32, layers=1, heads=2, window_frames=100, seed=0).save_pretrained(work / "whisper")
            whisper = str(work / "whisper")
        fit = args.train_fraction * 2 / 3 if args.validate else args.train_fraction
        seg = (0.0, fit)
        shutil.rmtree(work / "run", ignore_errors=True)           # a fresh run, never a resumed one
        t0 = time.monotonic()
        run([Path(sys.executable).with_name("accelerate"), "launch", "--cpu", "--num_processes", "1",
             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
             "--num_cpu_threads_per_process", "1", REPO / "train" / "train_pose.py",
             "--config", REPO / "train" / "configs" / "pose_tiny.yaml",
             f"whisper.model={whisper}", f"data.path={work / 'train'}", f"data.segment=[0.0, {fit}]",
             f"data.clip_frames=[{args.window}, {args.window}]", f"log.output_dir={work / 'run'}",
             f"optim.max_steps={args.steps}", f"log.checkpoint_every={args.steps}", "log.tracker=null",
             "log.log_every=50", f"data.reference={args.reference}", *args.overrides])
        minutes = (time.monotonic() - t0) / 60
        end = (fit, args.train_fraction) if args.validate else (args.train_fraction, 1.0)
        results = {("validation part of the training videos" if args.validate else
                    "held-out end of the training videos"): evaluate(
            work / "run" / "final", whisper, work / "train", end, args.window, seg,
            work / "train", args.samples, args.reference)}
        if split["heldout"] and not args.validate:
            results["held-out videos"] = evaluate(work / "run" / "final", whisper, work / "heldout", (0.0, 1.0),
                                                  args.window, seg, work / "train", args.samples, args.reference)
            results["all held-out windows (pooled)"] = pooled(list(results.values()))
        drifts = drift(work / "run" / "final", whisper, [work / "train", work / "heldout"], args.drift_seconds)
    print(f"\ntrained {args.steps} steps (target: {args.reference}) in {minutes:.1f} min on the first {fit:.0%} of "
          f"{', '.join(v.stem[:3] for v in split['train'])}; windows of {args.window} frames")
    for name, res in results.items():
        print(f"\n{name}: {res['windows']} windows of {args.window} frames (every {max(1, args.window // 4)})")
        for table in (t for t in (MOTION, ABSOLUTE) if t in res):
            print(f"  {table:<44}{'rotation err (°)':>18}{'translation L1':>16}")
            for row, (r, t) in res[table].items():
                print(f"    {row:<42}{np.mean(r):>18.3f}{np.mean(t):>16.4f}")
        print(f"  {'jitter (mean step per frame)':<44}{'rotation (°)':>18}{'translation':>16}")
        for row, (r, t) in res["jitter"].items():
            print(f"    {row:<42}{np.mean(r):>18.3f}{np.mean(t):>16.4f}")
    print_drift(drifts, f"the generator trained here ({args.steps} steps)")

if __name__ == "__main__":
    main()
