"""Train a tiny E_aud on the CPU and test it on held-out clips in the PCA-mouth space of z.

1. Prepares consecutive frames + audio of the shared driving clips that have speech (d05, d06;
   `prepare-data --with-audio --stride 1`), holding out --held-out clips entirely and the last
   25 % of the others (E_aud trains on their first 75 %), as bench_pose.py does.
2. The teacher (E_motion of a main model: --main, default the bundled demo checkpoint, else a
   random tiny model) and Whisper (--whisper, default the demo's random-weight one, else a tiny
   random one: no Whisper weights are reachable offline; pass a real one when you have it).
3. Fits the mouth PCA basis on the training clips (train/fit_mouth_pca.py --data, upper face
   frozen to the first frame so that the components are the mouth's).
4. Chooses E_aud's learning rate and step count from --grid on a validation part of the training
   clips (train on [0, 0.6), score on [0.6, 0.75)): about 5 s of speech is all there is, so how
   long to train matters more than anything. Then trains E_aud on [0, 0.75) with the choice
   (train/train_speech.py).
5. On every held-out clip / clip end: ẑ = E_aud(z_0, audio) rolled out autoregressively (no teacher) against
   E_motion's z of each frame, as the mean |PC_k(ẑ) − PC_k(z)| over the first 8 mouth components;
   baseline: the constant z_0 (the first frame's expression for every frame).

With --probe, E_aud is not trained; instead the data are asked what they can teach: the
correlation of each mouth component with loudness per clip, and linear probes (ridge from
[PC(z_0), Whisper features] to the mouth components) chosen and scored like E_aud
(bench/_speech_probe.py).

    python bench/bench_speech.py            # about 8 minutes on 2 CPU cores
    python bench/bench_speech.py --probe    # about 1 minute
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOPORTRAITS_SHARED", REPO.parent / "shared"))
SPEECH_CLIPS = ("d05", "d06")      # the shared clips whose audio track is speech (d01/d03 carry music)


def run(cmd: list[str]) -> None:
    subprocess.run([str(c) for c in cmd], check=True)


@torch.inference_mode()
def evaluate(main_dir: Path, speech_dir: Path | None, whisper: str, data: Path, pca_path: Path,
             segment=(0.0, 1.0)) -> dict:
    from emoportraits import EmoPortraits, SpeechEncoder
    from emoportraits.audio import WhisperFeatures
    from emoportraits.data.speech import SpeechClipDataset
    from emoportraits.losses import MouthPCA, pca_loss

    model = EmoPortraits.from_pretrained(main_dir).eval()
    speech = SpeechEncoder.from_pretrained(speech_dir).eval() if speech_dir else None
    pca = MouthPCA.load(pca_path)
    clips = SpeechClipDataset(data, WhisperFeatures(whisper), clip_frames=(10_000, 10_000),
                              resolution=model.config.image_size, segment=segment)
    errors, frames = [], 0
    for i in range(len(clips)):
        item = clips[i]
        z = model.expression(item["images"], item["thetas"])                     # (T, Z) teacher
        z_hat = speech(z[:1], item["audio"][None])[0] if speech else z[:1].expand_as(z)
        errors.append(float(pca_loss(z_hat[1:], z[1:], pca, n=8)) * (len(z) - 1))
        frames += len(z) - 1
    return {"pca_mouth_l1": sum(errors) / frames, "frames": frames, "sum": sum(errors)}


def _arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", default="1e-4:100,3e-4:100,1e-4:300,1e-3:50", metavar="LR:STEPS,…",
                   help="E_aud learning rates and step counts to choose from on the validation part "
                        "(default: 1e-4:100,3e-4:100,1e-4:300,1e-3:50)")
    p.add_argument("--held-out", default="d06", help="clip name prefixes held out (default: d06)")
    p.add_argument("--frames-per-clip", type=int, default=400, help="frames per clip (default: 400, whole clips)")
    p.add_argument("--freeze-upper-face", action=argparse.BooleanOptionalAction, default=True,
                   help="fit the PCA on frames whose upper face is frozen to the first one (default: on)")
    p.add_argument("--main", type=Path, help="main model folder (default: assets/default-model, else random tiny)")
    p.add_argument("--whisper", help="a Whisper model id/folder (default: the main bundle's, else tiny random)")
    p.add_argument("--probe", action="store_true",
                   help="do not train E_aud: print the loudness correlations and linear probes instead")
    p.add_argument("--work-dir", type=Path, help="keep everything here (default: a temporary folder)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="more train_speech config overrides")
    return p.parse_args()


def _prepare(split: dict[str, list[Path]], work: Path, frames_per_clip: int) -> None:
    """``prepare-data --with-audio`` of each part's clips into ``work/<part>``."""
    for name, vids in split.items():
        if not vids:
            continue
        folder = work / f"{name}_videos"
        for v in vids:
            (folder / v.stem).mkdir(parents=True, exist_ok=True)
            if not (folder / v.stem / v.name).exists():
                (folder / v.stem / v.name).symlink_to(v.resolve())
        run([sys.executable, "-m", "emoportraits", "prepare-data", "--videos", folder, "--out", work / name,
             "--dataset-name", "voxceleb2", "--resolution", "64", "--frames-per-clip", frames_per_clip,
             "--stride", "1", "--with-audio", "--quiet"])


def _teacher_and_whisper(args: argparse.Namespace, work: Path) -> tuple[Path, str]:
    """The main model (--main, the bundled demo, else a random tiny one) and its Whisper (--whisper, the
    bundle's, else the tests' tiny random one: 2 s windows)."""
    from emoportraits import EmoPortraits, EmoPortraitsConfig
    from emoportraits.audio import random_whisper
    from emoportraits.bundle import DEFAULT_MODEL, component_path

    main_dir = args.main or (DEFAULT_MODEL if DEFAULT_MODEL.is_dir() else None)
    if main_dir is None:
        torch.manual_seed(0)
        EmoPortraits(EmoPortraitsConfig.tiny()).save_pretrained(work / "main")
        main_dir = work / "main"
    whisper = args.whisper or component_path(main_dir, "whisper")
    if whisper is None:
        random_whisper(d_model=32, layers=1, heads=2, window_frames=100, seed=0).save_pretrained(work / "whisper")
        whisper = str(work / "whisper")
    return main_dir, whisper


def main() -> None:
    args = _arguments()
    try:
        grid = [(float(item.split(":")[0]), int(item.split(":")[1])) for item in args.grid.split(",")]
    except (ValueError, IndexError):
        raise SystemExit(f"--grid must look like 1e-4:100,3e-4:100 (learning rate:steps), got {args.grid!r}")
    videos = [v for v in sorted((SHARED / "media" / "driving").glob("*.mp4")) if v.name.startswith(SPEECH_CLIPS)]
    if not videos:
        raise SystemExit(f"no clips under {SHARED / 'media' / 'driving'}; set EMOPORTRAITS_SHARED")
    held = tuple(s.strip() for s in args.held_out.split(",") if s.strip())   # "" = only the clip ends
    split = {"train": [v for v in videos if not v.name.startswith(held)],
             "heldout": [v for v in videos if v.name.startswith(held)]}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        _prepare(split, work, args.frames_per_clip)
        main_dir, whisper = _teacher_and_whisper(args, work)
        run([sys.executable, REPO / "train" / "fit_mouth_pca.py", "--model", main_dir, "--data", work / "train",
             "--components", "8", "--out", work / "mouth_pca.safetensors", "--quiet",
             *(["--freeze-upper-face"] if args.freeze_upper_face else [])])
        pca = work / "mouth_pca.safetensors"
        if args.probe:
            sys.path.insert(0, str(REPO / "bench"))
            from _speech_probe import clip_arrays, report
            report(clip_arrays(main_dir, whisper, work / "train", pca),
                   clip_arrays(main_dir, whisper, work / "heldout", pca) if split["heldout"] else [])
            return

        def train(run_dir: Path, segment: tuple[float, float], lr: float, steps: int) -> Path:
            if run_dir.exists():          # a kept --work-dir: train again, not resume a finished run
                import shutil
                shutil.rmtree(run_dir)
            run([Path(sys.executable).with_name("accelerate"), "launch", "--cpu", "--num_processes", "1",
                 "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                 REPO / "train" / "train_speech.py", "--config", REPO / "train" / "configs" / "speech_tiny.yaml",
                 f"model.main={main_dir}", f"whisper.model={whisper}", f"data.path={work / 'train'}",
                 f"networks.mouth_pca={pca}", f"log.output_dir={run_dir}", f"data.segment=[{segment[0]}, {segment[1]}]",
                 f"optim.max_steps={steps}", f"optim.teacher_forcing_steps={steps // 2}", f"optim.lr={lr}",
                 f"log.checkpoint_every={steps}", *args.overrides])
            return run_dir / "final"

        # model selection on a validation part of the training clips only ([0.6, 0.75) after training on
        # [0, 0.6)); the held-out sets are looked at once, after the choice
        validation, best = {}, None
        for lr, steps in grid:
            final = train(work / f"val_{lr:g}_{steps}", (0.0, 0.6), lr, steps)
            validation[(lr, steps)] = evaluate(main_dir, final, whisper, work / "train", pca, (0.6, 0.75))["pca_mouth_l1"]
            best = (lr, steps) if best is None or validation[(lr, steps)] < validation[best] else best
        val_constant = evaluate(main_dir, None, whisper, work / "train", pca, (0.6, 0.75))["pca_mouth_l1"]
        lr, steps = best
        train(work / "run", (0.0, 0.75), lr, steps)
        sets = {"held-out ends of the training clips": (work / "train", (0.75, 1.0)),
                "held-out clips": (work / "heldout", (0.0, 1.0))}
        if not split["heldout"]:
            del sets["held-out clips"]
        rows = {}
        for name, (data, segment) in sets.items():
            rows[name] = (evaluate(main_dir, None, whisper, data, pca, segment),
                          evaluate(main_dir, work / "run" / "final", whisper, data, pca, segment))
    print("\nvalidation (train on [0, 0.6) of the training clips, score on [0.6, 0.75)): constant z_0 "
          f"{val_constant:.4f}; " + ", ".join(f"lr {a:g} × {b} steps {v:.4f}" for (a, b), v in validation.items()))
    unseen = f" and {', '.join(v.name for v in split['heldout'])}" if split["heldout"] else ""
    print(f"E_aud (lr {lr:g}) trained {steps} steps on the first 75 % of {len(split['train'])} clips; held out: the "
          f"rest of them{unseen}; teacher {main_dir}; whisper {whisper}")
    print(f"{'held-out set':<40}{'frames':>8}{'constant z_0':>14}{'E_aud':>10}   (mean |ΔPC_1..8|)")
    pooled = [0.0, 0.0, 0]
    for name, (constant, trained) in rows.items():
        print(f"{name:<40}{constant['frames']:>8}{constant['pca_mouth_l1']:>14.4f}{trained['pca_mouth_l1']:>10.4f}")
        pooled = [pooled[0] + constant["sum"], pooled[1] + trained["sum"], pooled[2] + constant["frames"]]
    print(f"{'pooled':<40}{pooled[2]:>8}{pooled[0] / pooled[2]:>14.4f}{pooled[1] / pooled[2]:>10.4f}")


if __name__ == "__main__":
    main()
