"""What the ``emoportraits`` subcommands do (``cli`` parses the command line and calls one of these with
its arguments): each is a thin shell over the Python API. The parts a command needs are checked before
the (slow) main model loads, so a missing one fails at once, in one line (``console.run_command``).
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from .audio import WhisperFeatures, load_audio
from .bundle import component_path, default_model, looks_local
from .console import show_notes
from .convert import convert_to_pretrained
from .convert_whisper import convert_ctranslate2_whisper
from .data.prepare import run as prepare_run
from .download import command as download_command
from .errors import EmoPortraitsError, WeightsMismatchError
from .media import load_image
from .metrics.acceptance_report import AcceptanceEvaluator, dlib_embedder, find_pairs, write_summary
from .models import PoseGenerator, SpeechEncoder
from .pipelines import EmoPortraitsPipeline, ReenactOptions
from .poses import SUFFIXES, generate_poses

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def write_folder(out: Path, overwrite: bool, write):
    """``write(folder)`` into a sibling temporary folder, then move it to ``out``: never a half-written
    model folder. A non-empty ``out`` is replaced only with ``overwrite``. Returns what ``write`` returns."""
    if out.exists() and not out.is_dir():
        raise EmoPortraitsError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise EmoPortraitsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)            # mkdtemp's private 0700, made the usual mode of a new folder
    try:
        result = write(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def convert(args: argparse.Namespace) -> None:
    out = Path(args.out)

    def write(tmp: Path):
        print(f"reading {args.checkpoint} and {args.head_pose} …", file=sys.stderr)
        return convert_to_pretrained(args.checkpoint, args.head_pose, tmp, preset=args.preset)

    model = write_folder(out, args.overwrite, write)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out} ({n:,} parameters); load it with EmoPortraits.from_pretrained({str(out)!r})")
    if args.push_to_hub:
        print(f"pushing to the Hub as {args.push_to_hub} …", file=sys.stderr)
        model.push_to_hub(args.push_to_hub)
        print(f"pushed https://huggingface.co/{args.push_to_hub}")


def convert_whisper(args: argparse.Namespace) -> None:
    source, out = Path(args.ctranslate2), Path(args.out)
    if not source.is_dir():
        raise EmoPortraitsError(f"--ctranslate2 {source}: no such folder; pass the CTranslate2 model folder "
                                f"(model.bin, config.json)")

    def write(tmp: Path):
        print(f"reading {source / 'model.bin'} …", file=sys.stderr)
        return convert_ctranslate2_whisper(source, tmp)

    model = write_folder(out, args.overwrite, write)
    c = model.config
    print(f"wrote {out} (Whisper, {sum(p.numel() for p in model.parameters()):,} parameters: d_model {c.d_model}, "
          f"{c.encoder_layers}+{c.decoder_layers} layers, {c.num_mel_bins} mel bins); "
          f"use it with --whisper {out} or WhisperModel.from_pretrained({str(out)!r})")


def reenact(args: argparse.Namespace) -> None:
    show_notes(args.quiet)
    background = args.background
    if background not in ("transparent",):
        background = parse_colour(background)
    options = ReenactOptions(relative=args.relative, expression_scale=args.expression_scale,
                             paste_back=args.paste_back, background=background, smooth=args.smooth,
                             fixed_crop=args.fixed_crop, face_index=args.face_index, max_frames=args.max_frames,
                             render=args.render, min_motion=args.min_motion)
    options.validate()
    pipe = EmoPortraitsPipeline.from_pretrained(model_or_default(args.model), device=args.device,
                                                dtype=DTYPES[args.dtype], mask_model=args.mask_model)
    out = pipe.reenact(args.source, args.driver, args.out, options=options, audio=args.audio,
                       progress=not args.quiet)
    print(f"wrote {out}")


def speak(args: argparse.Namespace) -> None:
    show_notes(args.quiet)
    pose = args.pose if args.pose in ("still", "generated") or args.pose.startswith("driver:") else None
    if pose is None:
        raise EmoPortraitsError(f"--pose {args.pose!r}: use still, generated or driver:VIDEO")
    # every part is checked before the (slow) main model loads: a missing one fails at once
    speech_path = bundle_part(args.speech_model, args.model, "speech", "--speech-model", "speech model (E_aud)")
    whisper = bundle_part(args.whisper, args.model, "whisper", "--whisper", "Whisper encoder")
    pose_path = (bundle_part(args.pose_model, args.model, "pose", "--pose-model", "head-pose generator")
                 if pose == "generated" else None)
    speech = load_part(SpeechEncoder, speech_path, "--speech-model")
    pose_model = load_part(PoseGenerator, pose_path, "--pose-model") if pose_path else None
    background = args.background if args.background == "transparent" else parse_colour(args.background)
    options = ReenactOptions(paste_back=args.paste_back, background=background,
                             smooth=args.smooth, face_index=args.face_index, max_frames=args.max_frames,
                             render=args.render, min_motion=args.min_motion)
    pipe = EmoPortraitsPipeline.from_pretrained(model_or_default(args.model), device=args.device,
                                                dtype=DTYPES[args.dtype])
    out = pipe.speak(args.source, args.audio, args.out, speech_model=speech, whisper=whisper, pose=pose,
                     fps=args.fps, options=options, progress=not args.quiet, pose_model=pose_model,
                     pose_seed=args.seed, pose_temperature=args.temperature)
    print(f"wrote {out}")


def poses(args: argparse.Namespace) -> None:
    if Path(args.out).suffix.lower() not in SUFFIXES:
        raise EmoPortraitsError(f"--out {args.out}: unsupported pose file type; use .json or .npy")
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise EmoPortraitsError(f"--plot {args.plot}: the plot is a PNG image; use a .png file name")
    pose_path = bundle_part(args.pose_model, args.model, "pose", "--pose-model", "head-pose generator")
    whisper = bundle_part(args.whisper, args.model, "whisper", "--whisper", "Whisper encoder")
    samples = load_audio(args.audio)
    model = load_part(PoseGenerator, pose_path, "--pose-model")
    if args.device:
        model = model.to(args.device)
    initial = portrait_initial_pose(args, model) if args.source else None
    seq = generate_poses(model, whisper, samples, fps=args.fps, seed=args.seed, temperature=args.temperature,
                         initial_pose=initial)
    out = seq.save(args.out)
    print(f"wrote {out} ({len(seq)} frames at {seq.fps:g} fps)")
    if args.plot:
        print(f"wrote {seq.plot(args.plot)}")


def portrait_initial_pose(args: argparse.Namespace, pose_model):
    """``poses --source``: the portrait's head pose for a pose model trained to start from one, else None."""
    if not pose_model.config.initial_pose:
        print(f"note: this pose model was not trained with an initial head pose; --source {args.source} "
              f"is not used", file=sys.stderr)
        return None
    image = load_image(args.source)          # a bad photo fails before the main model loads
    pipe = EmoPortraitsPipeline.from_pretrained(model_or_default(args.model), device=args.device or "cpu")
    return pipe.initial_pose_for(pipe.prepare_source(image, name=args.source), pose_model)


def bundle_part(given: str | None, model: str | None, component: str, flag: str, what: str) -> str:
    """``given``, else the ``component`` folder of the model bundle (``--model`` or the default model);
    a one-line error saying how to supply it when the bundle has none."""
    if given:
        return given
    name = model_or_default(model)
    path = component_path(name, component)
    if path is None:
        raise EmoPortraitsError(f"{name} has no {what} ({component}/ folder); pass {flag} DIR_OR_REPO "
                                f"or add one to the model bundle")
    return path


def load_part(cls, name: str, flag: str):
    """``cls.from_pretrained(name)`` with one-line errors (no such folder, offline Hub, bad weights)."""
    local = looks_local(name)
    path = os.path.expanduser(name)
    if local and not os.path.isdir(path):
        raise EmoPortraitsError(f"{flag} {name}: no such model folder")
    try:
        return cls.from_pretrained(path if local else name)
    except (WeightsMismatchError, FileNotFoundError):
        raise
    except Exception as e:  # Hub errors (offline, unknown repo), another model's config
        first = str(e).splitlines()[0] if str(e) else ""
        raise EmoPortraitsError(f"{flag} {name}: could not load a {cls.__name__} "
                                f"({type(e).__name__}: {first})") from None


def download(args: argparse.Namespace) -> None:
    download_command(args)


def prepare_data(args: argparse.Namespace) -> None:
    prepare_run(args)


def evaluate(args: argparse.Namespace) -> None:
    show_notes(quiet=True)                  # the table is the output
    limits = {"portraits": args.max_portraits, "videos": args.max_videos, "audio": args.max_audio, "pairs": args.pairs}
    # folders, dlib and the speech parts are checked before the (slow) main model loads
    pairs = find_pairs(args.portraits, args.videos, args.audio, limits)
    embedder = dlib_embedder()
    speech = whisper = None
    if any(p.kind == "speech" for p in pairs):
        speech = load_part(SpeechEncoder, bundle_part(args.speech_model, args.model, "speech", "--speech-model",
                                                        "speech model (E_aud)"), "--speech-model")
        whisper = WhisperFeatures(bundle_part(args.whisper, args.model, "whisper", "--whisper", "Whisper encoder"))
    model = model_or_default(args.model)
    pipe = EmoPortraitsPipeline.from_pretrained(model, device=args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    evaluator = AcceptanceEvaluator(pipe, embedder, speech_model=speech, whisper=whisper, max_frames=args.max_frames,
                                    log=lambda line: print(line, file=sys.stderr))
    rows = evaluator.run(pairs, out)
    given = [f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in vars(args).items()
             if v is not None and k not in ("command", "func")]
    table, md, js = write_summary(out, rows, {"model": model, "max_frames": args.max_frames, "limits": limits},
                                  " ".join(["emoportraits evaluate", *given]), time.perf_counter() - start)
    print(table)
    print(f"wrote {md}, {js} and {len(rows)} contact sheets in {out / 'sheets'}")


def parse_colour(text: str) -> tuple[int, int, int]:
    named = {"white": (255, 255, 255), "black": (0, 0, 0), "green": (0, 255, 0), "gray": (128, 128, 128)}
    if text in named:
        return named[text]
    hexa = text.lstrip("#")
    if len(hexa) == 6:
        try:
            return tuple(int(hexa[i:i + 2], 16) for i in (0, 2, 4))
        except ValueError:
            pass
    raise EmoPortraitsError(f"--background {text!r}: use transparent, white, black, green, gray or #RRGGBB")


def model_or_default(model: str | None) -> str:
    return model or default_model()
