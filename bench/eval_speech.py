"""Speech-driven evaluation (SPEC §6) on a folder of audio-video clips (talking heads with sound).

Each clip's first frame is the source; E_aud animates it from the clip's audio and the result is
compared with the real frames: FID (with --fid-extractor), mouth/face landmark position and velocity
errors MP/MV/FP/FV after frontalisation, CSIM. Baselines: copy source, still head. Writes
OUT/speech.md and OUT/speech.png.

    python bench/eval_speech.py --model MODEL --clips ../shared/media/driving --out report/ --max-frames 50
"""
from __future__ import annotations


import _eval_common as common


def main() -> None:
    p = common.parser(__doc__)
    common.add_clip_arguments(p, "speech", "E_aud (SpeechEncoder)")
    p.add_argument("--pose", default="gt", choices=["gt", "still"],
                   help="head poses: the clip's own (default) or still")
    args = p.parse_args()

    from emoportraits.audio import WhisperFeatures
    from emoportraits.metrics.protocols import Scorers
    from emoportraits.metrics.report import write_report
    from emoportraits.metrics.speech import run_speech
    from emoportraits.models import SpeechEncoder

    cfg = common.config(args)
    clips, speech_dir, whisper = common.audio_clips(args, "speech")
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
