"""Speech-driven evaluation (SPEC §6) on a folder of audio-video clips (talking heads with sound).

Each clip's first frame is the source; E_aud animates it from the clip's audio and the result is
compared with the real frames: FID (with --fid-extractor), mouth/face landmark position and velocity
errors MP/MV/FP/FV after frontalisation, CSIM. Baselines: copy source, still head. Writes
OUT/speech.md and OUT/speech.png.

    python bench/eval_speech.py --model MODEL --clips ../shared/media/driving --out report/ --max-frames 50
"""
from __future__ import annotations

from pathlib import Path

import _eval_common as common


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--clips", required=True, type=Path, help="folder of videos with an audio track")
    p.add_argument("--speech-model", help="E_aud folder (default: MODEL/speech)")
    p.add_argument("--whisper", help="Whisper folder or Hub id (default: MODEL/whisper, else openai/whisper-tiny)")
    p.add_argument("--pose", default="gt", choices=["gt", "still"],
                   help="head poses: the clip's own (default) or still")
    p.add_argument("--max-clips", type=int, help="use the first N clips that have audio")
    args = p.parse_args()

    from emoportraits.audio import WhisperFeatures
    from emoportraits.bundle import component_path
    from emoportraits.errors import EmoPortraitsError
    from emoportraits.media.video import VIDEO_EXTENSIONS, has_audio
    from emoportraits.metrics.protocols import Scorers, list_files
    from emoportraits.metrics.report import write_report
    from emoportraits.metrics.speech import run_speech
    from emoportraits.models import SpeechEncoder

    cfg = common.config(args)
    clips = [c for c in list_files(args.clips, VIDEO_EXTENSIONS, "videos") if has_audio(c)][:args.max_clips]
    if not clips:
        raise EmoPortraitsError(f"{args.clips}: no video with an audio track")
    speech_dir = args.speech_model or component_path(args.model, "speech")
    if speech_dir is None:
        raise EmoPortraitsError(f"{args.model} has no speech/ part; pass --speech-model")
    whisper = args.whisper or component_path(args.model, "whisper") or "openai/whisper-tiny"
    pipe = common.pipeline(args)
    scorers = Scorers(cfg)
    result = run_speech(pipe, clips, SpeechEncoder.from_pretrained(speech_dir),
                        WhisperFeatures(whisper, device=args.device), cfg, scorers, pose=args.pose)
    notes = result["notes"] + [n for n in scorers.notes if not n.startswith("LPIPS")]   # no pixel metrics here
    path = write_report(args.out, "speech", f"Speech-driven evaluation — {args.model}",
                        [("Speech-driven reenactment", result["table"])], notes, grid=result["grid"],
                        command=common.command_line())
    print(path.read_text())


if __name__ == "__main__":
    common.run_main(main)
