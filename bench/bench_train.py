"""Train the tiny configuration for a fixed CPU budget, then measure held-out self-reenactment.

1. Prepares two training sets from ../shared/media/driving: the training videos (every 2nd frame)
   and the held-out ones (default: d05 and d06; every 4th frame, so the frames span the whole
   video as in the usual self-reenactment protocol, not just its first second). Four training
   identities are far too few to generalise from, so (--extra-identities, on by default) the
   training set also gets the mirror image of each training video and a slowly moving clip of
   each still portrait of ../shared/media/portraits and of its mirror
   (`emoportraits.data.extra_identities`): 26 identities. The held-out videos stay unseen.
2. Trains train/configs/tiny.yaml with `accelerate launch --cpu` for at most --minutes of wall
   clock and --max-steps steps (the cosine schedule's length), with a pair colour jitter
   (--pair-jitter).
3. On every held-out video, reconstructs each frame from the video's first frame (source) with the
   frame's own expression and head pose (self-reenactment), and compares with the frame:
   L1 and 1 − SSIM (a structural, perceptual proxy; no pretrained network needed), against the
   baseline of copying the source frame. Targets and the baseline are composited on green like
   the training targets.

    python bench/bench_train.py            # 4500 steps, about 15 minutes on 2 CPU cores
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOPORTRAITS_SHARED", REPO.parent / "shared"))


def prepare(videos: list[Path], out: Path, frames: int, stride: int) -> None:
    folder = out.with_name(out.name + "_videos")
    folder.mkdir(parents=True, exist_ok=True)
    for v in videos:   # one identity folder per video
        (folder / v.stem).mkdir(exist_ok=True)
        link = folder / v.stem / v.name
        if not link.exists():
            link.symlink_to(v.resolve())
    subprocess.run([sys.executable, "-m", "emoportraits", "prepare-data", "--videos", str(folder), "--out", str(out),
                    "--dataset-name", "voxceleb2", "--resolution", "64", "--frames-per-clip", str(frames),
                    "--stride", str(stride), "--quiet"], check=True)


@torch.inference_mode()
def evaluate(model_dir: Path | None, data: Path) -> dict:
    from emoportraits import EmoPortraits
    from emoportraits.data.pairs import FrameDataset
    from emoportraits.metrics import l1_error, ssim
    from emoportraits.training.step import GREEN

    frames = FrameDataset(data, resolution=64)
    model = EmoPortraits.from_pretrained(model_dir).eval() if model_dir else None
    green = torch.tensor(GREEN).view(1, 3, 1, 1)
    by_clip: dict[int, list[dict]] = {}
    for i in range(len(frames)):
        item = frames[i]
        by_clip.setdefault(int(item["clip"]), []).append(item)
    l1, dssim = [], []
    for items in by_clip.values():
        src = items[0]
        source = src["image"][None] * src["mask"][None] + green * (1 - src["mask"][None])
        avatar = model.encode_source(src["image"][None], theta=src["theta"][None], mask=src["mask"][None]) if model else None
        for it in items[1:]:
            target = it["image"][None] * it["mask"][None] + green * (1 - it["mask"][None])
            pred = model.drive(avatar, it["image"][None], theta=it["theta"][None]) if model else source
            l1.append(l1_error(pred, target))
            dssim.append(1 - ssim(pred, target))
    return {"l1": float(torch.cat(l1).mean()), "1-ssim": float(torch.cat(dssim).mean()), "frames": len(l1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=20.0, help="training wall-clock cap (default: 20)")
    p.add_argument("--held-out", default="d05,d06", help="video name prefixes held out (default: d05,d06)")
    p.add_argument("--frames-per-clip", type=int, default=150, help="training frames per video (default: 150)")
    p.add_argument("--pair-jitter", type=float, default=0.8, help="pair colour jitter (default: 0.8; 0 = off)")
    p.add_argument("--max-steps", type=int, default=4500,
                   help="training steps = length of the cosine schedule (default: 4500)")
    p.add_argument("--extra-identities", action=argparse.BooleanOptionalAction, default=True,
                   help="also train on mirrored training videos and on moving clips of the shared still "
                        "portraits (default: on; four identities are too few to generalise from)")
    p.add_argument("--work-dir", type=Path, help="keep data and run here (default: a temporary folder)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="more training-config overrides")
    args = p.parse_args()
    videos = sorted((SHARED / "media" / "driving").glob("*.mp4"))
    if not videos:
        raise SystemExit(f"no videos under {SHARED / 'media' / 'driving'}; set EMOPORTRAITS_SHARED")
    held = tuple(s.strip() for s in args.held_out.split(","))
    train_v = [v for v in videos if not v.name.startswith(held)]
    test_v = [v for v in videos if v.name.startswith(held)]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        print(f"preparing {len(train_v)} training and {len(test_v)} held-out videos …", file=sys.stderr)
        if args.extra_identities:
            portraits = sorted((SHARED / "media" / "portraits").glob("*.jpg"))
            from emoportraits.data.extra_identities import extra_identity_videos
            train_v = train_v + extra_identity_videos(train_v, portraits, work / "extra")
        prepare(train_v, work / "train", args.frames_per_clip, stride=2)
        prepare(test_v, work / "heldout", 40, stride=4)
        run = work / "run"
        if run.exists():          # a kept --work-dir: train again from scratch, not resume a finished run
            import shutil
            shutil.rmtree(run)
        start = time.monotonic()
        subprocess.run([str(Path(sys.executable).with_name("accelerate")), "launch", "--cpu", "--num_processes", "1",
                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                        str(REPO / "train" / "train_main.py"), "--config", str(REPO / "train/configs/tiny.yaml"),
                        f"data.0.path={work / 'train'}", f"data.0.pair_jitter={args.pair_jitter}", f"log.output_dir={run}", "log.tracker=null",
                        f"optim.max_steps={args.max_steps}", f"optim.max_minutes={args.minutes}",
                        "log.checkpoint_every=500", *args.overrides], check=True)
        minutes = (time.monotonic() - start) / 60
        steps = sum(1 for _ in (run / "metrics.jsonl").open())
        trained = evaluate(run / "final", work / "heldout")
        baseline = evaluate(None, work / "heldout")
        untrained_dir = work / "untrained"
        from emoportraits import EmoPortraits, EmoPortraitsConfig
        torch.manual_seed(0)     # the trained model's architecture, as initialised
        config = EmoPortraitsConfig.from_dict(json.loads((run / "final" / "config.json").read_text()))
        EmoPortraits(config).save_pretrained(untrained_dir)
        untrained = evaluate(untrained_dir, work / "heldout")
    print(f"\ntiny preset, {steps} steps in {minutes:.1f} min (2-core CPU budget {args.minutes} min); "
          f"held-out: {', '.join(v.name for v in test_v)} ({trained['frames']} frames)")
    print(f"{'method':<28}{'L1':>8}{'1-SSIM':>9}")
    for name, r in (("copy the source frame", baseline), ("untrained model", untrained), ("trained model", trained)):
        print(f"{name:<28}{r['l1']:>8.4f}{r['1-ssim']:>9.4f}")
    print(json.dumps({"steps": steps, "baseline": baseline, "trained": trained, "untrained": untrained}))


if __name__ == "__main__":
    main()
