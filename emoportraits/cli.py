"""The ``emoportraits`` command line: the parser of each subcommand; what a command does is in
``commands``, and ``console.run_command`` turns the errors a user can fix into one line on stderr with
exit status 2 — never a traceback (EMOPORTRAITS_DEBUG=1 shows it anyway).
"""
from __future__ import annotations

import argparse
import sys

from . import commands
from .console import run_command
from .data.prepare import add_arguments as add_prepare_arguments
from .download import DESCRIPTION as DOWNLOAD_DESCRIPTION, add_arguments as add_download_arguments

__all__ = ["build_parser", "main", "run_command"]


def _convert_parser(sub) -> None:
    """`convert`: the authors' released files → a from_pretrained folder."""
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
    p.set_defaults(func=commands.convert)


def _convert_whisper_parser(sub) -> None:
    """`convert-whisper`: a CTranslate2 Whisper → a transformers folder."""
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
    p.set_defaults(func=commands.convert_whisper)


def _reenact_parser(sub) -> None:
    """`reenact`: a photo animated by a driving video or image."""
    p = sub.add_parser(
        "reenact", help="animate a portrait photo with a driving video or image",
        description="Animate the face of a portrait photo with the head motion and expressions of a driving "
                    "video (→ mp4 with the driver's frame rate and audio) or image (→ image). Faces are "
                    "detected and cropped automatically; the source is encoded once.")
    p.add_argument("--source", required=True, metavar="IMG", help="portrait photo (jpg, png, webp, …)")
    p.add_argument("--driver", required=True, metavar="VIDEO|IMG", help="driving video or image")
    p.add_argument("--out", required=True, metavar="OUT", help="output .mp4 (video driver) or image file")
    _rendering_arguments(p)
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
    p.set_defaults(func=commands.reenact)


def _speak_parser(sub) -> None:
    """`speak`: a photo animated by speech."""
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
    _pose_generation_arguments(p, "with --pose generated: ")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of the output (default: 25)")
    _rendering_arguments(p)
    p.set_defaults(func=commands.speak)


def _poses_parser(sub) -> None:
    """`poses`: head poses generated from speech."""
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
    p.add_argument("--whisper", metavar="ID_OR_DIR",
                   help="the Whisper model the pose model was trained with (default: MODEL/whisper)")
    _pose_generation_arguments(p)
    p.add_argument("--fps", type=float, default=25.0, help="poses per second (default: 25)")
    p.add_argument("--device", help="cpu, cuda, mps … (default: cpu)")
    p.set_defaults(func=commands.poses)


def _download_parser(sub) -> None:
    """`download`: the authors' release, converted and cached (`--model official`)."""
    p = sub.add_parser("download", help="download, convert and cache the authors' released model (--model official)",
                       description=DOWNLOAD_DESCRIPTION)
    add_download_arguments(p)
    p.set_defaults(func=commands.download)


def _prepare_data_parser(sub) -> None:
    """`prepare-data`: videos → a training set."""
    p = sub.add_parser(
        "prepare-data", help="turn a folder of videos into a training set (crops, masks, head-pose labels)",
        description="Detect, track and crop the face in every video under --videos exactly as at inference, "
                    "compute portrait masks and head-pose labels, and write them as WebDataset tar shards (one sample "
                    "per frame) with a dataset.json. Resumable (rerun the same command), parallel (--workers) "
                    "and split over machines (--part I/N, then --merge); --convert rewrites an old folder.")
    add_prepare_arguments(p)
    p.set_defaults(func=commands.prepare_data)


def _evaluate_parser(sub) -> None:
    """`evaluate`: the acceptance figures of a model on folders of media."""
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
    p.set_defaults(func=commands.evaluate)


def _pose_generation_arguments(p: argparse.ArgumentParser, when: str = "") -> None:
    """The pose generator and its draw, shared by `poses` and `speak` (``when``: the help's condition)."""
    p.add_argument("--pose-model", metavar="DIR_OR_REPO",
                   help=f"{when}PoseGenerator folder or Hub repo (default: the model bundle's pose/)")
    p.add_argument("--seed", type=int, metavar="N", help=f"{when}seed of the motion (default: random)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help=f"{when}variety of the motion, 0 = deterministic (default: 1)")


def _rendering_arguments(p: argparse.ArgumentParser) -> None:
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
    for add in (_convert_parser, _convert_whisper_parser, _reenact_parser, _speak_parser, _poses_parser,
                _download_parser, _prepare_data_parser, _evaluate_parser):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args, f"emoportraits {args.command}")


if __name__ == "__main__":
    sys.exit(main())
