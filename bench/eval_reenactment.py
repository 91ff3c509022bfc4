"""Reenactment evaluation (SPEC §6): cross-reenactment grid and self-reenactment on held-out frames.

Cross: every photo of --sources is driven by every video of --drivers (N × M pairs); self: each
driver video (or --self-videos) is reenacted from its own first frame and compared with the
following frames. Writes OUT/reenactment.md (tables in the layout of the paper's) and
OUT/reenactment_cross.png + OUT/reenactment_self.png (image grids).

    python bench/eval_reenactment.py --model MODEL --sources ../shared/media/portraits \\
        --drivers ../shared/media/driving --out report/ --max-frames 16
"""
from __future__ import annotations

from pathlib import Path

import _eval_common as common


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--sources", required=True, type=Path, help="folder of source photos")
    p.add_argument("--drivers", required=True, type=Path, help="folder of driver videos")
    p.add_argument("--self-videos", type=Path, help="folder of videos for self-reenactment (default: --drivers)")
    p.add_argument("--max-sources", type=int, help="use the first N sources (sorted by name)")
    p.add_argument("--max-drivers", type=int, help="use the first M drivers")
    p.add_argument("--skip-self", action="store_true", help="cross-reenactment only")
    args = p.parse_args()

    from emoportraits.media.image import IMAGE_EXTENSIONS, save_image
    from emoportraits.media.video import VIDEO_EXTENSIONS
    from emoportraits.metrics.protocols import Scorers, list_files
    from emoportraits.metrics.reenactment import run_cross, run_self
    from emoportraits.metrics.report import write_report

    cfg = common.config(args)
    sources = list_files(args.sources, IMAGE_EXTENSIONS, "source images", args.max_sources)
    drivers = list_files(args.drivers, VIDEO_EXTENSIONS, "driver videos", args.max_drivers)
    pipe = common.pipeline(args)
    scorers = Scorers(cfg)
    cross = run_cross(pipe, sources, drivers, cfg, scorers)
    sections = [("Cross-reenactment", cross["table"])]
    notes = ["Cross: " + n for n in cross["notes"]]
    args.out.mkdir(parents=True, exist_ok=True)
    save_image(cross["grid"], args.out / "reenactment_cross.png")
    if not args.skip_self:
        videos = list_files(args.self_videos or args.drivers, VIDEO_EXTENSIONS, "videos", args.max_drivers)
        own = run_self(pipe, videos, cfg, scorers)
        sections.append(("Self-reenactment (held-out frames)", own["table"]))
        notes += ["Self: " + n for n in own["notes"][1:]]
        save_image(own["grid"], args.out / "reenactment_self.png")
    if scorers.landmarks is not None and scorers.landmarks.calls:
        lm = scorers.landmarks
        notes.append(f"Landmarks: no face detected in {lm.fallbacks}/{lm.calls} crops; the mesh ran on the "
                     f"expected face box there.")
    notes += scorers.notes
    path = write_report(args.out, "reenactment", f"Reenactment evaluation — {args.model}", sections, notes,
                        command=common.command_line())
    text = path.read_text()
    text += "\n![cross-reenactment](reenactment_cross.png)\n" + \
        ("" if args.skip_self else "\n![self-reenactment](reenactment_self.png)\n")
    path.write_text(text)
    print(text)


if __name__ == "__main__":
    common.run_main(main)
