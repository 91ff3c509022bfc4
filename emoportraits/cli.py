"""The ``emoportraits`` command line. Each subcommand is a thin shell over the Python API.

Errors the user can fix (bad files, wrong options) are printed as one line on stderr with exit
status 2 — never a traceback; set EMOPORTRAITS_DEBUG=1 to see the traceback anyway.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .errors import EmoPortraitsError


def _write_folder(out: Path, overwrite: bool, write):
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


def _cmd_convert(args: argparse.Namespace) -> None:
    from .convert import convert_to_pretrained

    out = Path(args.out)

    def write(tmp: Path):
        print(f"reading {args.checkpoint} and {args.head_pose} …", file=sys.stderr)
        return convert_to_pretrained(args.checkpoint, args.head_pose, tmp, preset=args.preset)

    model = _write_folder(out, args.overwrite, write)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out} ({n:,} parameters); load it with EmoPortraits.from_pretrained({str(out)!r})")
    if args.push_to_hub:
        print(f"pushing to the Hub as {args.push_to_hub} …", file=sys.stderr)
        model.push_to_hub(args.push_to_hub)
        print(f"pushed https://huggingface.co/{args.push_to_hub}")


def _cmd_convert_whisper(args: argparse.Namespace) -> None:
    from .convert_whisper import convert_ctranslate2_whisper

    source, out = Path(args.ctranslate2), Path(args.out)
    if not source.is_dir():
        raise EmoPortraitsError(f"--ctranslate2 {source}: no such folder; pass the CTranslate2 model folder "
                                f"(model.bin, config.json)")

    def write(tmp: Path):
        print(f"reading {source / 'model.bin'} …", file=sys.stderr)
        return convert_ctranslate2_whisper(source, tmp)

    model = _write_folder(out, args.overwrite, write)
    c = model.config
    print(f"wrote {out} (Whisper, {sum(p.numel() for p in model.parameters()):,} parameters: d_model {c.d_model}, "
          f"{c.encoder_layers}+{c.decoder_layers} layers, {c.num_mel_bins} mel bins); "
          f"use it with --whisper {out} or WhisperModel.from_pretrained({str(out)!r})")


def _cmd_reenact(args: argparse.Namespace) -> None:
    import logging

    import torch

    from .pipelines import EmoPortraitsPipeline, ReenactOptions

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="note: %(message)s")
    background = args.background
    if background not in ("transparent",):
        background = _parse_colour(background)
    options = ReenactOptions(relative=args.relative, expression_scale=args.expression_scale,
                             paste_back=args.paste_back, background=background, smooth=args.smooth,
                             fixed_crop=args.fixed_crop, face_index=args.face_index, max_frames=args.max_frames,
                             render=args.render, min_motion=args.min_motion)
    options.validate()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    pipe = EmoPortraitsPipeline.from_pretrained(_model_or_default(args.model), device=args.device, dtype=dtype,
                                                mask_model=args.mask_model)
    out = pipe.reenact(args.source, args.driver, args.out, options=options, audio=args.audio,
                       progress=not args.quiet)
    print(f"wrote {out}")


def _cmd_speak(args: argparse.Namespace) -> None:
    import logging

    import torch

    from .models import PoseGenerator, SpeechEncoder
    from .pipelines import EmoPortraitsPipeline, ReenactOptions

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="note: %(message)s")
    pose = args.pose if args.pose in ("still", "generated") or args.pose.startswith("driver:") else None
    if pose is None:
        raise EmoPortraitsError(f"--pose {args.pose!r}: use still, generated or driver:VIDEO")
    # every part is checked before the (slow) main model loads: a missing one fails at once
    speech_path = _bundle_part(args.speech_model, args.model, "speech", "--speech-model", "speech model (E_aud)")
    whisper = _bundle_part(args.whisper, args.model, "whisper", "--whisper", "Whisper encoder")
    pose_path = (_bundle_part(args.pose_model, args.model, "pose", "--pose-model", "head-pose generator")
                 if pose == "generated" else None)
    speech = _load_part(SpeechEncoder, speech_path, "--speech-model")
    pose_model = _load_part(PoseGenerator, pose_path, "--pose-model") if pose_path else None
    background = args.background if args.background == "transparent" else _parse_colour(args.background)
    options = ReenactOptions(paste_back=args.paste_back, background=background,
                             smooth=args.smooth, face_index=args.face_index, max_frames=args.max_frames,
                             render=args.render, min_motion=args.min_motion)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    pipe = EmoPortraitsPipeline.from_pretrained(_model_or_default(args.model), device=args.device, dtype=dtype)
    out = pipe.speak(args.source, args.audio, args.out, speech_model=speech, whisper=whisper, pose=pose,
                     fps=args.fps, options=options, progress=not args.quiet, pose_model=pose_model,
                     pose_seed=args.seed, pose_temperature=args.temperature)
    print(f"wrote {out}")


def _cmd_poses(args: argparse.Namespace) -> None:
    from .audio import load_audio
    from .models import PoseGenerator
    from .poses import SUFFIXES, generate_poses

    if Path(args.out).suffix.lower() not in SUFFIXES:
        raise EmoPortraitsError(f"--out {args.out}: unsupported pose file type; use .json or .npy")
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise EmoPortraitsError(f"--plot {args.plot}: the plot is a PNG image; use a .png file name")
    pose_path = _bundle_part(args.pose_model, args.model, "pose", "--pose-model", "head-pose generator")
    whisper = _bundle_part(args.whisper, args.model, "whisper", "--whisper", "Whisper encoder")
    samples = load_audio(args.audio)
    model = _load_part(PoseGenerator, pose_path, "--pose-model")
    if args.device:
        model = model.to(args.device)
    initial = _portrait_initial_pose(args, model) if args.source else None
    seq = generate_poses(model, whisper, samples, fps=args.fps, seed=args.seed, temperature=args.temperature,
                         initial_pose=initial)
    out = seq.save(args.out)
    print(f"wrote {out} ({len(seq)} frames at {seq.fps:g} fps)")
    if args.plot:
        print(f"wrote {seq.plot(args.plot)}")


def _portrait_initial_pose(args: argparse.Namespace, pose_model):
    """``poses --source``: the portrait's head pose for a pose model trained to start from one, else None."""
    if not pose_model.config.initial_pose:
        print(f"note: this pose model was not trained with an initial head pose; --source {args.source} "
              f"is not used", file=sys.stderr)
        return None
    from .media.image import load_image
    from .pipelines import EmoPortraitsPipeline

    image = load_image(args.source)          # a bad photo fails before the main model loads
    pipe = EmoPortraitsPipeline.from_pretrained(_model_or_default(args.model), device=args.device or "cpu")
    return pipe.initial_pose_for(pipe.prepare_source(image, name=args.source), pose_model)


def _bundle_part(given: str | None, model: str | None, component: str, flag: str, what: str) -> str:
    """``given``, else the ``component`` folder of the model bundle (``--model`` or the default model);
    a one-line error saying how to supply it when the bundle has none."""
    if given:
        return given
    from .bundle import component_path

    name = _model_or_default(model)
    path = component_path(name, component)
    if path is None:
        raise EmoPortraitsError(f"{name} has no {what} ({component}/ folder); pass {flag} DIR_OR_REPO "
                                f"or add one to the model bundle")
    return path


def _load_part(cls, name: str, flag: str):
    """``cls.from_pretrained(name)`` with one-line errors (no such folder, offline Hub, bad weights)."""
    from .bundle import looks_local
    from .errors import WeightsMismatchError

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
        raise EmoPortraitsError(f"{flag} {name}: could not load a {cls.__name__} ({type(e).__name__}: {first})") from None


def _cmd_download(args: argparse.Namespace) -> None:
    from .download import command

    command(args)


def _cmd_prepare_data(args: argparse.Namespace) -> None:
    from .data.prepare import run

    run(args)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    import logging
    import shlex
    import time

    from .metrics.acceptance_report import AcceptanceEvaluator, dlib_embedder, find_pairs, write_summary
    from .pipelines import EmoPortraitsPipeline

    logging.basicConfig(level=logging.WARNING, format="note: %(message)s")   # the table is the output
    limits = {"portraits": args.max_portraits, "videos": args.max_videos, "audio": args.max_audio, "pairs": args.pairs}
    # folders, dlib and the speech parts are checked before the (slow) main model loads
    pairs = find_pairs(args.portraits, args.videos, args.audio, limits)
    embedder = dlib_embedder()
    speech = whisper = None
    if any(p.kind == "speech" for p in pairs):
        from .audio import WhisperFeatures
        from .models import SpeechEncoder

        speech = _load_part(SpeechEncoder, _bundle_part(args.speech_model, args.model, "speech", "--speech-model",
                                                        "speech model (E_aud)"), "--speech-model")
        whisper = WhisperFeatures(_bundle_part(args.whisper, args.model, "whisper", "--whisper", "Whisper encoder"))
    model = _model_or_default(args.model)
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


def _parse_colour(text: str) -> tuple[int, int, int]:
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


def _model_or_default(model: str | None) -> str:
    from .bundle import default_model

    return model or default_model()


def _add_rendering_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by the commands that animate a photo (reenact, speak)."""
    p.add_argument("--model", metavar="DIR_OR_REPO",
                   help="EmoPortraits folder, Hub repo, or 'official' (the authors' released model, downloaded once "
                        "by `emoportraits download`) (default: $EMOPORTRAITS_MODEL, else the official model when "
                        "it is cached, else the bundled demo)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps … (default: the best available)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="model precision (default: fp32)")
    p.add_argument("--paste-back", action=argparse.BooleanOptionalAction, default=True,
                   help="paste the animated head back into the original photo (default); "
                        "--no-paste-back outputs the crop on --background")
    p.add_argument("--background", default="white",
                   help="with --no-paste-back: transparent (images only), white, black, green, gray or #RRGGBB")
    p.add_argument("--smooth", type=float, default=0.5, metavar="S",
                   help="temporal smoothing of the face crop and head pose, 0 (off) … 0.95 (default: 0.5)")
    p.add_argument("--face-index", type=int, default=0, metavar="I",
                   help="which face of the photo to animate, 0 = largest (default: 0)")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--render", default="auto", choices=["auto", "photo", "network"],
                   help="photo: move the portrait's own pixels along the model's warps and add what the network "
                        "draws beyond them (sharp, the person stays recognisable); network: the model's image as "
                        "is; auto (default): photo for models below 256², network otherwise")
    p.add_argument("--min-motion", type=float, default=0.5, metavar="M",
                   help="refuse a video whose face changes by less than M/255 (it would look like the photo); "
                        "0 = write it anyway (default: 0.5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or notes")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emoportraits",
        description="EMOPortraits one-shot head avatars: convert weights, animate portraits.",
        epilog="Run 'emoportraits COMMAND --help' for the options of a command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "convert", help="convert the authors' released checkpoint into a from_pretrained folder",
        description="Convert the authors' released files (logs.zip → checkpoints/*_model.pth and "
                    "repos.zip → head_pose_regressor.pth) into a folder with config.json, "
                    "model.safetensors and a model card, loadable with EmoPortraits.from_pretrained. "
                    "Checkpoints are read with torch.load(weights_only=True); every key must be understood.")
    p.add_argument("--checkpoint", required=True, metavar="MODEL.pth", help="the authors' generator state_dict")
    p.add_argument("--head-pose", required=True, metavar="HEAD_POSE.pth",
                   help="the authors' head_pose_regressor.pth (torchvision ResNet-18, 9 outputs)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--preset", default="released", choices=["released", "small", "tiny"],
                   help="architecture of the checkpoint (default: released, the authors' 512² model)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    p.add_argument("--push-to-hub", metavar="REPO", help="also upload the folder to this Hub repo (needs a login)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser(
        "convert-whisper", help="convert a CTranslate2 (faster-whisper) Whisper into a transformers folder",
        description="Convert a Whisper model in CTranslate2 format (a folder with model.bin, config.json and "
                    "vocabulary.txt / tokenizer.json, as faster-whisper uses) into a transformers WhisperModel "
                    "folder (config.json, model.safetensors, preprocessor_config.json) for --whisper. Works "
                    "offline, without CTranslate2; float32, float16, bfloat16 and int8 files are read (int8 is "
                    "dequantised). Every variable must be understood and every weight filled.")
    p.add_argument("--ctranslate2", required=True, metavar="DIR", help="the CTranslate2 Whisper folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    p.set_defaults(func=_cmd_convert_whisper)

    p = sub.add_parser(
        "reenact", help="animate a portrait photo with a driving video or image",
        description="Animate the face of a portrait photo with the head motion and expressions of a driving "
                    "video (→ mp4 with the driver's frame rate and audio) or image (→ image). Faces are "
                    "detected and cropped automatically; the source is encoded once.")
    p.add_argument("--source", required=True, metavar="IMG", help="portrait photo (jpg, png, webp, …)")
    p.add_argument("--driver", required=True, metavar="VIDEO|IMG", help="driving video or image")
    p.add_argument("--out", required=True, metavar="OUT", help="output .mp4 (video driver) or image file")
    _add_rendering_arguments(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--relative", dest="relative", action="store_true", default=True,
                      help="transfer the driver's motion since its first frame onto the source pose (default)")
    mode.add_argument("--absolute", dest="relative", action="store_false",
                      help="use the driver's head pose and expression as they are")
    p.add_argument("--expression-scale", type=float, default=1.0, metavar="A",
                   help="multiply the transferred expression change (default: 1.0)")
    p.add_argument("--fixed-crop", action="store_true", help="one crop box for the whole video (static camera)")
    p.add_argument("--audio", metavar="AUDIO", help="audio track for the video (default: the driver's, if any)")
    p.add_argument("--mask-model", metavar="FILE",
                   help="portrait/face-parsing mask model (.tflite or TorchScript) instead of the built-in one")
    p.set_defaults(func=_cmd_reenact)

    p = sub.add_parser(
        "speak", help="animate a portrait photo from speech (audio → talking video)",
        description="Animate a portrait photo from an audio file (or a video's audio track): Whisper features → "
                    "E_aud → one expression per video frame. The mp4 carries the audio and lasts as long. The "
                    "head stays still, or follows a driver video's head motion (--pose driver:VIDEO).")
    p.add_argument("--source", required=True, metavar="IMG", help="portrait photo")
    p.add_argument("--audio", required=True, metavar="AUDIO", help="speech: wav, mp3, flac, … or a video with audio")
    p.add_argument("--out", required=True, metavar="OUT.mp4", help="output video")
    p.add_argument("--speech-model", metavar="DIR_OR_REPO",
                   help="SpeechEncoder (E_aud) folder or Hub repo (default: the model bundle's speech/)")
    p.add_argument("--whisper", metavar="ID_OR_DIR",
                   help="the Whisper model the speech (and pose) model was trained with "
                        "(default: the model bundle's whisper/)")
    p.add_argument("--pose", default="still",
                   help="still (default), generated (head motion generated from the speech, starting from the "
                        "portrait's head pose) or driver:VIDEO (head motion of a video)")
    p.add_argument("--pose-model", metavar="DIR_OR_REPO",
                   help="with --pose generated: PoseGenerator folder or Hub repo (default: the model bundle's pose/)")
    p.add_argument("--seed", type=int, metavar="N", help="with --pose generated: seed of the motion (default: random)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="with --pose generated: variety of the motion, 0 = deterministic (default: 1)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of the output (default: 25)")
    _add_rendering_arguments(p)
    p.set_defaults(func=_cmd_speak)

    p = sub.add_parser(
        "poses", help="generate head poses from speech (audio → poses.json / .npy)",
        description="Generate a natural head motion for an audio file (or a video's audio track): Whisper "
                    "features → PoseGenerator → one pose per video frame, the motion since the first frame "
                    "(yaw/pitch/roll in degrees and translation, in the model's θ convention). .json holds "
                    "angles, translations, rotation matrices and 6D poses; .npy the (T, 9) 6D poses.")
    p.add_argument("--audio", required=True, metavar="AUDIO", help="speech: wav, mp3, flac, … or a video with audio")
    p.add_argument("--out", required=True, metavar="POSES.json|.npy", help="output pose file")
    p.add_argument("--plot", metavar="PLOT.png", help="also plot yaw/pitch/roll and translation over time")
    p.add_argument("--source", metavar="PHOTO",
                   help="portrait photo: the motion starts from its head pose (for a pose model trained with an "
                        "initial pose; uses the model bundle's main model to find the face)")
    p.add_argument("--model", metavar="DIR_OR_REPO",
                   help="model bundle whose pose/ and whisper/ parts are used (default: $EMOPORTRAITS_MODEL, "
                        "else the bundled model)")
    p.add_argument("--pose-model", metavar="DIR_OR_REPO", help="PoseGenerator folder or Hub repo (default: MODEL/pose)")
    p.add_argument("--whisper", metavar="ID_OR_DIR",
                   help="the Whisper model the pose model was trained with (default: MODEL/whisper)")
    p.add_argument("--seed", type=int, metavar="N", help="seed of the motion (default: random)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="variety of the motion, 0 = deterministic (default: 1)")
    p.add_argument("--fps", type=float, default=25.0, help="poses per second (default: 25)")
    p.add_argument("--device", help="cpu, cuda, mps … (default: cpu)")
    p.set_defaults(func=_cmd_poses)

    from .download import DESCRIPTION as _download_description, add_arguments as _download_arguments
    p = sub.add_parser("download", help="download, convert and cache the authors' released model (--model official)",
                       description=_download_description)
    _download_arguments(p)
    p.set_defaults(func=_cmd_download)

    from .data.prepare import add_arguments as _prepare_arguments
    p = sub.add_parser(
        "prepare-data", help="turn a folder of videos into a training set (crops, masks, head-pose labels)",
        description="Detect, track and crop the face in every video under --videos exactly as at inference, "
                    "compute portrait masks and head-pose labels, and write them as WebDataset tar shards (one sample "
                    "per frame) with a dataset.json. Resumable (rerun the same command), parallel (--workers) "
                    "and split over machines (--part I/N, then --merge); --convert rewrites an old folder.")
    _prepare_arguments(p)
    p.set_defaults(func=_cmd_prepare_data)

    p = sub.add_parser(
        "evaluate", help="score a model's outputs on folders of photos, videos and speech (acceptance figures)",
        description="Animate every portrait with every driving video (reenact) and every audio file (speak, still "
                    "head), with the pipeline's default options, and score each output: identity (dlib face "
                    "distance), face detection rate, motion ratio to the driver, mouth–loudness correlation, "
                    "seam along the crop box, and a no-op check. Writes OUT/summary.md, OUT/summary.json, "
                    "OUT/sheets/PAIR.png contact sheets and OUT/videos/PAIR.mp4, and prints the table. "
                    "Needs dlib (pip install 'emoportraits[eval]').")
    p.add_argument("--model", metavar="DIR_OR_REPO",
                   help="model bundle (default: $EMOPORTRAITS_MODEL, else the bundled model); speech pairs use its "
                        "speech/ and whisper/ parts")
    p.add_argument("--portraits", metavar="DIR", help="folder of portrait photos (jpg, png, …)")
    p.add_argument("--videos", metavar="DIR", help="folder of driving videos: portrait × video pairs")
    p.add_argument("--audio", metavar="DIR", help="folder of speech (wav, mp3, …): portrait × audio pairs")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; files in it are replaced)")
    p.add_argument("--max-frames", type=int, default=100, metavar="N", help="frames per output (default: 100)")
    p.add_argument("--max-portraits", type=int, metavar="N", help="use the first N portraits (sorted by name)")
    p.add_argument("--max-videos", type=int, metavar="N", help="use the first N videos")
    p.add_argument("--max-audio", type=int, metavar="N", help="use the first N audio files")
    p.add_argument("--pairs", type=int, metavar="N", help="evaluate at most N pairs in all (video pairs first)")
    p.add_argument("--speech-model", metavar="DIR_OR_REPO", help="SpeechEncoder (default: the bundle's speech/)")
    p.add_argument("--whisper", metavar="ID_OR_DIR", help="Whisper encoder (default: the bundle's whisper/)")
    p.add_argument("--device", help="cpu, cuda, mps … (default: the best available)")
    p.set_defaults(func=_cmd_evaluate)
    return parser


def run_command(func, args: argparse.Namespace, prog: str, interrupted: str = "interrupted") -> int:
    """Run a command: errors the user can fix become one line on stderr and exit status 2."""
    try:
        func(args)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    # ImportError: an optional dependency the command needs, its message naming the extra to install
    except (EmoPortraitsError, ValueError, FileNotFoundError, OSError, ImportError) as e:
        if os.environ.get("EMOPORTRAITS_DEBUG"):
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args, f"emoportraits {args.command}")


if __name__ == "__main__":
    sys.exit(main())
