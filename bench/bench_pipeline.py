"""Benchmark the streaming reenactment pipeline: frames/s and peak memory, short vs 4× longer video.

For each preset it animates a portrait with a short driving clip and with the same clip repeated
4× (built here with ffmpeg), each run in its own process so that the peak RSS (the process
high-water mark) belongs to that run alone. Streaming means the long run's peak memory should
match the short run's; the script prints the ratio. Weights are random (timing does not depend
on them). Media come from ../shared/media (or --source/--driver).

    python bench/bench_pipeline.py                                 # tiny preset, whole clip
    python bench/bench_pipeline.py --presets tiny,released --frames 8
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(os.environ.get("EMOPORTRAITS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DEFAULT_SOURCE = SHARED / "media" / "portraits" / "p03_man_east_asian_frontal_plain_bg.jpg"
DEFAULT_DRIVER = SHARED / "media" / "driving" / "d06_grid_man_talking_with_audio.mp4"


def child(args: argparse.Namespace) -> None:
    """One measured run; prints a JSON line with frames, seconds and peak RSS."""
    import torch

    from emoportraits import EmoPortraits, EmoPortraitsConfig
    from emoportraits.pipelines import EmoPortraitsPipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pipe = EmoPortraitsPipeline(EmoPortraits(EmoPortraitsConfig.preset(args.preset)))
    done = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        pipe.reenact(args.source, args.driver, Path(tmp) / "out.mp4", max_frames=args.frames,
                     progress=lambda i, n: done.append(i))
    seconds = time.perf_counter() - start
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"frames": done[-1] if done else 0, "seconds": seconds, "peak_rss_mib": rss_kib / 1024}))


def run_child(preset: str, driver: Path, frames: int | None, args) -> dict:
    cmd = [sys.executable, __file__, "--child", "--preset", preset, "--source", str(args.source),
           "--driver", str(driver)]
    if frames:
        cmd += ["--frames", str(frames)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"run failed ({preset}, {driver.name}):\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def repeat_video(path: Path, times: int, out: Path) -> None:
    """The same clip `times` times in a row (stream copy, no re-encode)."""
    from emoportraits.media import ffmpeg

    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{path.resolve()}'\n" for _ in range(times)))
    rc, _, err = ffmpeg.run(["-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", str(listing),
                             "-c", "copy", str(out)])
    if rc != 0:
        raise SystemExit(f"could not repeat {path.name}: {ffmpeg.reason(err)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny", help="comma-separated presets (default: tiny)")
    p.add_argument("--frames", type=int, default=None,
                   help="frames of the short run (default: the whole clip); the long run uses 4×")
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="portrait photo")
    p.add_argument("--driver", type=Path, default=DEFAULT_DRIVER, help="short driving clip")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each run")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--preset", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    for path in (args.source, args.driver):
        if not path.is_file():
            raise SystemExit(f"{path}: not found; pass --source/--driver or set EMOPORTRAITS_SHARED")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        long_driver = Path(tmp) / f"long_{args.driver.stem}.mp4"
        repeat_video(args.driver, 4, long_driver)
        for preset in [s.strip() for s in args.presets.split(",") if s.strip()]:
            for label, driver, frames in (("short", args.driver, args.frames),
                                          ("4x long", long_driver, args.frames and 4 * args.frames)):
                print(f"running {preset} / {label} …", file=sys.stderr, flush=True)
                r = run_child(preset, driver, frames, args)
                rows.append((preset, label, r))
    print(f"\nsource {args.source.name}, driver {args.driver.name} (short) and the same clip ×4 (long)")
    print(f"{'preset':<10}{'run':<9}{'frames':>7}{'seconds':>10}{'frames/s':>10}{'peak RSS MiB':>14}{'long/short':>12}")
    for i, (preset, label, r) in enumerate(rows):
        ratio = ""
        if label != "short":
            ratio = f"{r['peak_rss_mib'] / rows[i - 1][2]['peak_rss_mib']:.3f}"
        fps = r["frames"] / r["seconds"] if r["seconds"] else 0.0
        print(f"{preset:<10}{label:<9}{r['frames']:>7}{r['seconds']:>10.1f}{fps:>10.2f}"
              f"{r['peak_rss_mib']:>14.0f}{ratio:>12}")
    print("\nseconds include loading the face models, encoding the source and writing the mp4.")


if __name__ == "__main__":
    main()
