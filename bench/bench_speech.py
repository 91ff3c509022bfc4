"""Train a tiny E_aud on the CPU and test it on held-out clips in the PCA-mouth space of z.

1. Prepares consecutive frames + audio of the shared driving clips that have speech
   (`prepare-data --with-audio --stride 1`), holding out --held-out clips entirely and the last
   25 % of the others (E_aud trains on their first 75 %), as bench_pose.py does.
2. The teacher (E_motion of a main model: --main, default the bundled demo checkpoint, else a
   random tiny model) and Whisper (--whisper, default the demo's random-weight one, else a tiny
   random one: no Whisper weights are reachable offline; pass a real one when you have it).
3. Fits the mouth PCA basis on the training clips (train/fit_mouth_pca.py --data).
4. Trains E_aud with train/train_speech.py for --steps.
5. On every held-out clip / clip end: ẑ = E_aud(z_0, audio) rolled out autoregressively (no teacher) against
   E_motion's z of each frame, as the mean |PC_k(ẑ) − PC_k(z)| over the first 8 mouth components;
   baseline: the constant z_0 (the first frame's expression for every frame).

    python bench/bench_speech.py --steps 300
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
SPEECH_CLIPS = ("d01", "d03", "d05", "d06")      # the shared clips whose audio track is speech or sound


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
        z = model.expression_encoder(item["images"], item["thetas"])            # (T, Z) teacher
        z_hat = speech(z[:1], item["audio"][None])[0] if speech else z[:1].expand_as(z)
        errors.append(float(pca_loss(z_hat[1:], z[1:], pca, n=8)) * (len(z) - 1))
        frames += len(z) - 1
    return {"pca_mouth_l1": sum(errors) / frames, "frames": frames, "sum": sum(errors)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300, help="E_aud training steps (default: 300)")
    p.add_argument("--held-out", default="d06", help="clip name prefixes held out (default: d06)")
    p.add_argument("--frames-per-clip", type=int, default=120)
    p.add_argument("--main", type=Path, help="main model folder (default: assets/default-model, else random tiny)")
    p.add_argument("--whisper", help="a Whisper model id/folder (default: the main bundle's, else tiny random)")
    p.add_argument("--work-dir", type=Path, help="keep everything here (default: a temporary folder)")
    args = p.parse_args()
    videos = [v for v in sorted((SHARED / "media" / "driving").glob("*.mp4")) if v.name.startswith(SPEECH_CLIPS)]
    if not videos:
        raise SystemExit(f"no clips under {SHARED / 'media' / 'driving'}; set EMOPORTRAITS_SHARED")
    held = tuple(s.strip() for s in args.held_out.split(","))
    split = {"train": [v for v in videos if not v.name.startswith(held)],
             "heldout": [v for v in videos if v.name.startswith(held)]}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        for name, vids in split.items():
            folder = work / f"{name}_videos"
            for v in vids:
                (folder / v.stem).mkdir(parents=True, exist_ok=True)
                if not (folder / v.stem / v.name).exists():
                    (folder / v.stem / v.name).symlink_to(v.resolve())
            run([sys.executable, "-m", "emoportraits", "prepare-data", "--videos", folder, "--out", work / name,
                 "--dataset-name", "voxceleb2", "--resolution", "64", "--frames-per-clip", args.frames_per_clip,
                 "--stride", "1", "--with-audio", "--quiet"])
        from emoportraits import EmoPortraits, EmoPortraitsConfig
        from emoportraits.bundle import DEFAULT_MODEL, component_path
        main_dir = args.main or (DEFAULT_MODEL if DEFAULT_MODEL.is_dir() else None)
        if main_dir is None:
            torch.manual_seed(0)
            EmoPortraits(EmoPortraitsConfig.tiny()).save_pretrained(work / "main")
            main_dir = work / "main"
        whisper = args.whisper or component_path(main_dir, "whisper")
        if whisper is None:
            sys.path.insert(0, str(REPO / "tests"))
            from helpers import tiny_whisper
            tiny_whisper().save_pretrained(work / "whisper")
            whisper = str(work / "whisper")
        run([sys.executable, REPO / "train" / "fit_mouth_pca.py", "--model", main_dir, "--data", work / "train",
             "--components", "8", "--out", work / "mouth_pca.safetensors", "--quiet"])
        run([Path(sys.executable).with_name("accelerate"), "launch", "--cpu", "--num_processes", "1",
             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
             REPO / "train" / "train_speech.py", "--config", REPO / "train" / "configs" / "speech_tiny.yaml",
             f"model.main={main_dir}", f"whisper.model={whisper}", f"data.path={work / 'train'}",
             f"networks.mouth_pca={work / 'mouth_pca.safetensors'}", f"log.output_dir={work / 'run'}",
             "data.segment=[0.0, 0.75]", f"optim.max_steps={args.steps}", f"optim.teacher_forcing_steps={args.steps // 2}",
             "optim.lr=1.0e-3", f"log.checkpoint_every={args.steps}"])
        pca = work / "mouth_pca.safetensors"
        sets = {"held-out ends of the training clips": (work / "train", (0.75, 1.0)),
                "held-out clips": (work / "heldout", (0.0, 1.0))}
        rows = {}
        for name, (data, segment) in sets.items():
            rows[name] = (evaluate(main_dir, None, whisper, data, pca, segment),
                          evaluate(main_dir, work / "run" / "final", whisper, data, pca, segment))
    print(f"\nE_aud trained {args.steps} steps on the first 75 % of {len(split['train'])} clips; held out: the "
          f"rest of them and {', '.join(v.name for v in split['heldout'])}; teacher {main_dir}; whisper {whisper}")
    print(f"{'held-out set':<40}{'frames':>8}{'constant z_0':>14}{'E_aud':>10}   (mean |ΔPC_1..8|)")
    pooled = [0.0, 0.0, 0]
    for name, (constant, trained) in rows.items():
        print(f"{name:<40}{constant['frames']:>8}{constant['pca_mouth_l1']:>14.4f}{trained['pca_mouth_l1']:>10.4f}")
        pooled = [pooled[0] + constant["sum"], pooled[1] + trained["sum"], pooled[2] + constant["frames"]]
    print(f"{'pooled':<40}{pooled[2]:>8}{pooled[0] / pooled[2]:>14.4f}{pooled[1] / pooled[2]:>10.4f}")


if __name__ == "__main__":
    main()
