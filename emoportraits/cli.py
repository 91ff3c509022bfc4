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


def _cmd_convert(args: argparse.Namespace) -> None:
    from .convert import convert_to_pretrained

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise EmoPortraitsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    # write into a sibling temporary folder, then move it into place: no half-written model folder
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        print(f"reading {args.checkpoint} and {args.head_pose} …", file=sys.stderr)
        model = convert_to_pretrained(args.checkpoint, args.head_pose, tmp, preset=args.preset)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out} ({n:,} parameters); load it with EmoPortraits.from_pretrained({str(out)!r})")
    if args.push_to_hub:
        print(f"pushing to the Hub as {args.push_to_hub} …", file=sys.stderr)
        model.push_to_hub(args.push_to_hub)
        print(f"pushed https://huggingface.co/{args.push_to_hub}")


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (EmoPortraitsError, ValueError, FileNotFoundError, OSError) as e:
        if os.environ.get("EMOPORTRAITS_DEBUG"):
            raise
        print(f"emoportraits {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
