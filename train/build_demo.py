"""Build the demo checkpoint bundled in assets/default-model, from videos, with the project's own
training scripts — the whole recipe in one command, on the CPU:

    python train/build_demo.py --videos ../shared/media/driving --stills ../shared/media/portraits \
        --out assets/default-model

1. `emoportraits prepare-data`: 64² crops, masks and pose labels of the videos with their audio,
   every frame (for the speech and pose parts); and, for the main model and the head-pose network,
   every 2nd frame of the videos plus extra identities (`emoportraits.data.extra_identities`: the
   mirror image of each video, unless --no-mirror, and a slowly moving clip of each still in
   --stills and of its mirror). A handful of identities is too few: the appearance path memorises
   them and ignores the source.
2. A random-weight Whisper (seed 0; no pretrained Whisper is reachable offline, see
   `emoportraits.audio.random_whisper`) → OUT/whisper.
3. train/train_main.py, train/configs/tiny.yaml, for --main-steps (at most --main-minutes) → OUT (the
   main model), with the head-pose network from train/train_head_pose.py on the same labels
   (main training takes θ from the labels; inference takes it from this network, so it must be
   trained too).
4. train/fit_mouth_pca.py with that model (E_motion's z of the training frames).
5. train/train_speech.py, train/configs/speech_tiny.yaml, for --speech-steps → OUT/speech.
6. train/train_pose.py, train/configs/pose_tiny.yaml, for --pose-steps → OUT/pose.
7. A model card (OUT/README.md) naming the videos used, the recipe and the figures of the run.

Everything is written in --work-dir first; OUT is replaced only when every stage succeeded. With
the same --work-dir, a rerun skips the stages whose output is already there.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = [str(Path(sys.executable).with_name("accelerate")), "launch", "--cpu", "--num_processes", "1",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]

CARD = """---
license: apache-2.0
library_name: emoportraits
tags: [emoportraits, talking-head, demo]
---
# emoportraits demo checkpoint (64², CPU-trained)

A **low-resolution demo** of the whole system — main model (tiny preset, 64² crops), E_aud (speech),
the speech-to-head-pose generator and the random-weight Whisper encoder they were trained with —
small enough to ship inside the repository and to run on any CPU. It shows every code path; it does
**not** show the quality of EMOPortraits. For real results convert the authors' released weights
(`emoportraits convert --checkpoint … --head-pose … --out released/`) and pass `--model released/`.

Whisper here has random weights (seed 0): no pretrained Whisper can be downloaded where this was
built. Its features are a fixed random function of the log-mel spectrogram, so the speech and pose
parts react to loudness and spectral shape, not to phonemes.

## Recipe

```
{command}
```

Stages (train/build_demo.py): prepare-data (64², stride 1, with audio) → random Whisper (seed 0)
→ train/train_main.py (train/configs/tiny.yaml, at most {main_minutes} min) → train/fit_mouth_pca.py →
train/train_speech.py (train/configs/speech_tiny.yaml, {speech_steps} steps) → train/train_pose.py
(train/configs/pose_tiny.yaml, {pose_steps} steps); the head-pose network by train/train_head_pose.py
({head_pose_steps} steps). Run on {machine}; main model: {main_steps} steps.

## Training data

{videos}

The main model also trained on the mirror image of each video and on slowly moving (zoom, roll,
shift) clips of each still and of its mirror: more identities, so that it copies the source's
appearance instead of recalling the few faces it saw.

These files come from the project's test media (see its README for origin, licences and
attributions): LivePortrait example driving videos (MIT), one GRID corpus clip (CC BY 4.0,
Cooke et al., "An audio-visual corpus for speech perception and automatic speech recognition",
JASA 2006) and CC0 portraits (cjdowner/interfaces). The media themselves are not distributed with
this checkpoint.
"""


def run(cmd: list, **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=Path, required=True, help="folder of training videos (one identity each)")
    p.add_argument("--stills", type=Path, help="folder of still portraits: more identities for the main model")
    p.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=True,
                   help="also train the main model on the mirror image of every video (default: on)")
    p.add_argument("--out", type=Path, default=REPO / "assets" / "default-model", help="bundle folder to write")
    p.add_argument("--main-minutes", type=float, default=25.0, help="main-model wall-clock cap (default: 25)")
    p.add_argument("--main-steps", type=int, default=4500, help="main-model steps = cosine schedule length (default: 4500)")
    p.add_argument("--head-pose-steps", type=int, default=3000, help="head-pose network steps (default: 3000)")
    p.add_argument("--speech-steps", type=int, default=600, help="E_aud training steps (default: 600)")
    p.add_argument("--pose-steps", type=int, default=600, help="pose-generator training steps (default: 600)")
    p.add_argument("--frames-per-clip", type=int, default=300, help="frames kept per video (default: 300)")
    p.add_argument("--work-dir", type=Path, help="keep intermediate files here (default: a temporary folder)")
    args = p.parse_args()
    videos = sorted(v for v in args.videos.iterdir() if v.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm"))
    if not videos:
        raise SystemExit(f"{args.videos}: no videos")
    stills = sorted(f for f in args.stills.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png")) if args.stills else []
    if args.stills and not stills:
        raise SystemExit(f"{args.stills}: no .jpg/.png images")
    argv, shown = sys.argv[1:], []
    while argv:                      # the recipe, without where its scratch files went
        a = argv.pop(0)
        if a == "--work-dir":
            argv = argv[1:]
        elif not a.startswith("--work-dir="):
            shown.append(a)
    command = "python train/build_demo.py " + " ".join(shown)
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.work_dir or Path(tmp)).resolve()
        bundle = work / "bundle"
        shutil.rmtree(bundle, ignore_errors=True)
        from emoportraits.data.extra_identities import extra_identity_videos

        extra = extra_identity_videos(videos if args.mirror else [], stills, work / "extra")
        data, main_data = work / "data", work / "main_data"
        for out, clips, options in ((data, videos, ["--stride", "1", "--with-audio"]),
                                    (main_data, videos + extra, ["--stride", "2"])):
            folder = out.with_name(out.name + "_videos")
            for v in clips:                               # identity = first folder level
                (folder / v.stem).mkdir(parents=True, exist_ok=True)
                if not (folder / v.stem / v.name).exists():
                    (folder / v.stem / v.name).symlink_to(v.resolve())
            run([sys.executable, "-m", "emoportraits", "prepare-data", "--videos", folder, "--out", out,
                 "--dataset-name", "voxceleb2", "--resolution", "64", "--frames-per-clip", args.frames_per_clip,
                 "--quiet", *options])

        from emoportraits.audio import random_whisper
        if not (work / "whisper" / "config.json").exists():
            random_whisper(d_model=64, layers=2, heads=4, window_frames=250, seed=0,
                           vocab_size=64).save_pretrained(work / "whisper")

        if not (work / "main" / "final").exists():
            run(ACCELERATE + [REPO / "train" / "train_main.py", "--config", REPO / "train/configs/tiny.yaml",
                              f"data.0.path={main_data}", f"log.output_dir={work / 'main'}",
                              "log.tracker=null", f"optim.max_steps={args.main_steps}",
                              f"optim.max_minutes={args.main_minutes}", "log.checkpoint_every=500"])
        main_steps = sum(1 for _ in (work / "main" / "metrics.jsonl").open())
        if not (work / "head_pose.safetensors").exists():
            run([sys.executable, REPO / "train" / "train_head_pose.py", "--data", main_data, "--preset", "tiny",
                 "--steps", args.head_pose_steps, "--batch-size", "32", "--lr", "1e-3", "--workers", "0",
                 "--device", "cpu", "--out", work / "head_pose.safetensors"])
        if not (work / "mouth_pca.safetensors").exists():
            run([sys.executable, REPO / "train" / "fit_mouth_pca.py", "--model", work / "main" / "final", "--data", data,
                 "--components", "8", "--out", work / "mouth_pca.safetensors", "--quiet"])
        if not (work / "speech" / "final").exists():
            run(ACCELERATE + [REPO / "train" / "train_speech.py", "--config", REPO / "train/configs/speech_tiny.yaml",
                              f"model.main={work / 'main' / 'final'}", f"whisper.model={work / 'whisper'}",
                              f"data.path={data}", f"networks.mouth_pca={work / 'mouth_pca.safetensors'}",
                              f"log.output_dir={work / 'speech'}", f"optim.max_steps={args.speech_steps}",
                              f"optim.teacher_forcing_steps={args.speech_steps // 2}", "optim.lr=1.0e-3",
                              f"log.checkpoint_every={args.speech_steps}"])
        if not (work / "pose" / "final").exists():
            run(ACCELERATE + [REPO / "train" / "train_pose.py", "--config", REPO / "train/configs/pose_tiny.yaml",
                              f"data.path={data}", f"whisper.model={work / 'whisper'}",
                              f"log.output_dir={work / 'pose'}", f"optim.max_steps={args.pose_steps}",
                              f"log.checkpoint_every={args.pose_steps}"])

        from safetensors.torch import load_file

        from emoportraits import EmoPortraits
        main_model = EmoPortraits.from_pretrained(work / "main" / "final")
        main_model.head_pose_net.load_state_dict(load_file(str(work / "head_pose.safetensors")))
        main_model.save_pretrained(bundle)
        shutil.copytree(work / "speech" / "final", bundle / "speech")
        shutil.copytree(work / "pose" / "final", bundle / "pose")
        shutil.copytree(work / "whisper", bundle / "whisper")
        listing = "\n".join([f"- `{v.name}`" for v in videos] + [f"- `{f.name}` (still)" for f in stills])
        (bundle / "README.md").write_text(CARD.format(
            command=command, main_minutes=args.main_minutes, speech_steps=args.speech_steps,
            pose_steps=args.pose_steps, head_pose_steps=args.head_pose_steps, main_steps=main_steps, videos=listing,
            machine=f"{os.cpu_count()} CPU cores"))
        (bundle / "build.json").write_text(json.dumps({"videos": [v.name for v in videos],
                                                       "stills": [f.name for f in stills], "main_steps": main_steps,
                                                       "command": command}, indent=2))
        out = args.out.resolve()
        if out.exists():                 # replace only now, when every stage has succeeded
            old = out.with_name(out.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            shutil.move(str(bundle), out)
            shutil.rmtree(old)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(bundle), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
