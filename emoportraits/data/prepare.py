"""Videos → a sharded training set of aligned crops, masks and head-pose labels.

    emoportraits prepare-data --videos DIR --out DIR --dataset-name voxceleb2 [--resolution 512]
        [--frames-per-clip 32] [--stride 5] [--workers W] [--shard-size-mb 256] [--with-audio] [--part I/N]
    emoportraits prepare-data --recipe hdtf|voxceleb2 --videos ROOT --out DIR [options]   (`.recipes`)
    emoportraits prepare-data --merge --out DIR             (after all --part runs)
    emoportraits prepare-data --convert OLD_DIR --out DIR   (a folder of the old index.json layout)
    (or: python -m emoportraits.data.prepare …)

The output is WebDataset tar shards, one sample per frame (layout: `emoportraits.data.wds`; folder
layout, parts and merging: `emoportraits.data.parts`).

Every video file under ``--videos`` (any nesting; VoxCeleb2's ``id/video/clip.mp4`` or FEED's
per-camera recordings alike) is one clip. Its identity is the first path component under the
folder (the file's stem for files directly in it), its video the relative parent folder, its key
the relative path without extension. ``--recipe`` replaces this for a known data set's layout
(VoxCeleb2: the ``idNNNNN`` speaker folder; HDTF: the file name without ``_NNN``) and sets speech
defaults (`emoportraits.data.recipes`).

Per video, frames are streamed and every ``stride``-th one is used, up to ``frames-per-clip`` frames
with a face: face detection with the face mesh (`FaceDetector`, verify on), the face tracked from
frame to frame (largest face first, then the one overlapping the previous face), the crop box
smoothed (`BoxSmoother` over the sampled frames), then EXACTLY the inference crop
(`square_crop_box` with scale 2.2, `crop` to the resolution), the portrait mask of the crop
(`PortraitMasker`) and the raw9 head-pose label (`pose_labels.fit_pose`, from the mesh in crop
coordinates against the data set's template). Sampled frames without a (tracked) face are skipped
and counted. Clips with fewer than two usable frames are recorded as empty (no pair can be made).

``--with-audio`` (for the speech mode, SPEC §4; use it with ``--stride 1`` so the frames are
consecutive) also stores each video's audio track, 16 kHz mono int16 (``emoportraits.audio.load_audio``),
sliced over its frames (``audio.npy`` members; concatenated they give the whole track). Frame i of
the clip is source frame ``frame_index``, at ``frame_index / fps`` seconds into that audio. A video
without an audio track then fails (reported, recorded in the manifest).

Resumable: a video is appended to the part's ``manifest.jsonl`` once the shard holding it is
committed (shards are written atomically), so a rerun skips finished videos and a crash loses at
most the unfinished shard of each worker. Parallel: ``--workers`` processes, each writing its own
shards; ``--part I/N`` splits the videos over machines. At the end the part's statistics are written
and, once every part is done, ``dataset.json`` (shard list, counts, a template estimated by
generalised Procrustes over a sample of the prepared frames, ``template_estimate``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..console import run_command
from ..errors import EmoPortraitsError
from . import parts as _parts
from .parts import Manifest
from .recipes import discover_videos
from .shards import read_json, write_json_atomic
from .wds import FORMAT, VERSION, SampleWriter

__all__ = ["prepare_dataset", "discover_videos", "describe_video", "PrepareSummary",
           "add_arguments", "run", "main", "CROP_SCALE"]

CROP_SCALE = 2.2                 # the inference crop (ReenactOptions.crop_scale)
MIN_FRAMES = 2                   # a clip must give a (source, driver) pair
_CHECKED = ("dataset", "resolution", "frames_per_clip", "stride", "crop_scale", "smooth")
AUDIO_RATE = 16000               # --with-audio: stored sample rate (Whisper's)


# ---- videos -------------------------------------------------------------------------------------

def describe_video(rel: str, recipe: str | None = None) -> dict:
    """identity / video / clip / key of a video's relative path (under ``recipe``'s layout if given)."""
    if recipe:
        from .recipes import describe
        return describe(recipe, rel)
    parts = rel.split("/")
    stem = Path(parts[-1]).stem
    return {"identity": parts[0] if len(parts) > 1 else stem,
            "video": "/".join(parts[:-1]) or stem,
            "clip": stem,
            "key": "/".join(parts[:-1] + [stem])}


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# ---- the per-process worker -----------------------------------------------------------------------

class _VideoProcessor:
    """Turns videos into clips in its own shards; reports through ``emit(message)``:
    ("video", rel, stats) after each video, ("commit", shard, records) when a shard is durable."""

    def __init__(self, cfg: dict, prefix: str, emit, threads: int | None = None):
        from ..media.faces import FaceDetector
        from ..media.mask import PortraitMasker

        self.cfg, self.emit = cfg, emit
        self.root, self.out = Path(cfg["videos"]), Path(cfg["out"])
        self.template = np.asarray(cfg["template"], np.float64)
        self.detector = FaceDetector(num_threads=threads)
        self.masker = PortraitMasker(num_threads=threads)
        self.writer = SampleWriter(self.out, prefix, int(cfg["shard_size_mb"] * (1 << 20)),
                                  on_commit=lambda shard, records: emit(("commit", shard, records)))

    def process(self, rel: str) -> None:
        t0 = time.perf_counter()
        try:
            stats = self._process(rel)
        except Exception as e:            # one bad video must not stop a data set of millions
            first = str(e).splitlines()[0] if str(e) else ""
            stats = {"status": "failed", "error": f"{type(e).__name__}: {first}", "frames": 0, "skipped": 0}
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        self.emit(("video", rel, stats))

    def _process(self, rel: str) -> dict:
        from ..errors import MediaError
        from ..media.crop import BoxSmoother, crop, square_crop_box
        from ..media.video import iter_frames, probe_video
        from .pose_labels import fit_pose, landmarks_to_crop
        from .shards import encode_jpeg, encode_png

        cfg = self.cfg
        path = self.root / rel
        desc = describe_video(rel, cfg.get("recipe"))
        try:
            fps = float(probe_video(path).fps)
        except MediaError as e:
            if "variable frame rate" not in str(e):
                raise
            fps = 0.0                    # frames are still usable; the rate is just not constant
        pcm = None
        if cfg.get("with_audio"):        # first: a video without sound fails before face detection
            from ..audio import load_audio
            samples = load_audio(path, AUDIO_RATE)
            pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)
        size, n_max, stride = int(cfg["resolution"]), int(cfg["frames_per_clip"]), int(cfg["stride"])
        smoother = BoxSmoother(float(cfg["smooth"]))
        frames, masks, landmarks, indices, boxes, scores = [], [], [], [], [], []
        prev = None
        skipped = decoded = 0
        width = height = 0
        with contextlib.closing(iter_frames(path)) as stream:
            for index, frame in enumerate(stream):
                decoded += 1
                if index % stride:
                    continue
                height, width = frame.shape[:2]
                faces = [f for f in self.detector.detect(frame) if f.landmarks is not None]
                face = None
                if faces:
                    if prev is None:
                        face = faces[0]
                    else:
                        best = max(faces, key=lambda f: _iou(f.box, prev))
                        face = best if _iou(best.box, prev) >= 0.2 else None
                if face is None:
                    skipped += 1
                    continue
                prev = face.box
                box = smoother.update(square_crop_box(face, (width, height), float(cfg["crop_scale"])))
                image = crop(frame, box, size)
                frames.append(encode_jpeg(image))
                masks.append(encode_png(self.masker(image)))
                landmarks.append(landmarks_to_crop(face.landmarks, box))
                indices.append(index)
                boxes.append([round(float(v), 3) for v in box])
                scores.append(round(float(face.score), 4))
                if len(frames) >= n_max:
                    break
        if decoded == 0:
            raise MediaError(f"{rel}: the video has no frames")
        stats = {"frames": len(frames), "skipped": skipped}
        if len(frames) < MIN_FRAMES:
            return dict(stats, status="empty")
        lm = np.stack(landmarks)
        meta = {"dataset": cfg["dataset"], "identity": desc["identity"], "video": desc["video"],
                "source": rel, "fps": fps, "source_size": [width, height],
                "resolution": size, "crop_scale": float(cfg["crop_scale"]), "frame_indices": indices,
                "boxes": boxes, "scores": scores, "skipped": skipped,
                "template_digest": cfg["template_digest"]}
        extra = {"path": rel, "status": "ok", "identity": desc["identity"], "skipped": skipped}
        self.writer.add_clip(desc["key"], frames, masks, fit_pose(lm, self.template), lm, meta, extra=extra,
                             audio=pcm, audio_rate=AUDIO_RATE)
        return dict(stats, status="ok")

    def finish(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


def _worker_main(wid: int, cfg: dict, prefix: str, tasks, results) -> None:
    """Process entry point: take video paths from ``tasks`` until None; report on ``results``."""
    import torch

    torch.set_num_threads(1)
    try:
        proc = _VideoProcessor(cfg, prefix, results.put, threads=1)
    except Exception as e:
        results.put(("fatal", wid, f"{type(e).__name__}: {e}"))
        return
    try:
        while (rel := tasks.get()) is not None:
            proc.process(rel)
        proc.finish()
    except BaseException as e:
        proc.abort()
        results.put(("fatal", wid, f"{type(e).__name__}: {e}"))
        return
    results.put(("done", wid, None))


# ---- the run -------------------------------------------------------------------------------------

@dataclass
class PrepareSummary:
    out: Path
    dataset: str
    videos_found: int = 0
    already_done: int = 0
    processed: int = 0
    ok: int = 0
    empty: int = 0
    failed: int = 0
    frames: int = 0
    skipped: int = 0
    shards: list[str] = field(default_factory=list)
    bytes_written: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    index: dict | None = None
    part: tuple = (1, 1)

    def __str__(self) -> str:
        where = f"{self.out}" if self.part == (1, 1) else f"{self.out} (part {self.part[0]}/{self.part[1]})"
        if self.processed == 0:
            head = (f"nothing to do: all {self.videos_found} video(s) under the folder are already in "
                    f"{where} ({self.already_done} recorded)")
        else:
            rate = self.frames / self.seconds if self.seconds > 0 else 0.0
            head = (f"prepared {self.processed} video(s) of {self.dataset} in {self.seconds:.1f} s: {self.ok} ok, "
                    f"{self.empty} empty (< {MIN_FRAMES} frames with a face), {self.failed} failed; "
                    f"{self.frames} frames written ({rate:.1f}/s), {self.skipped} sampled frames without a face; "
                    f"{len(self.shards)} shard(s), {self.bytes_written / 1e6:.1f} MB")
        lines = [head]
        if self.index is not None:
            st = self.index["stats"]
            lines.append(f"data set {self.out}: {st['clips']} clips, {st['frames']} frames (WebDataset samples), "
                         f"{st['identities']} identities, {len(self.index['shards'])} shard(s), "
                         f"{self.index['resolution']}² crops")
            est = self.index.get("template_estimate_pose")
            if est is not None:
                lines.append("its mean face vs the label template: scale {:.3f}, yaw/pitch/roll "
                             "{:.1f}/{:.1f}/{:.1f}°, translation {:.3f}/{:.3f}/{:.3f}"
                             .format(est[0], *np.degrees(est[3:6]), *est[6:9]))
        elif self.part[1] > 1:
            lines.append(f"part {self.part[0]}/{self.part[1]} done; dataset.json is written when the last part "
                         f"finishes (or: emoportraits prepare-data --merge --out {self.out})")
        for e in self.errors[:5]:
            lines.append(f"failed: {e}")
        if len(self.errors) > 5:
            lines.append(f"… and {len(self.errors) - 5} more failures (see manifest.jsonl)")
        return "\n".join(lines)


def _read_manifest(path: Path) -> dict[str, dict]:
    """path → its latest record; a torn last line (crash while appending) is ignored."""
    records: dict[str, dict] = {}
    if not path.is_file():
        return records
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "path" in rec:
                records[rec["path"]] = rec
    return records


@contextlib.contextmanager
def _lock(out: Path):
    """One prepare run per output folder (per part folder) at a time."""
    out.mkdir(parents=True, exist_ok=True)
    f = open(out / ".lock", "a")
    try:
        try:
            import fcntl
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:      # not POSIX: no lock
            pass
        except OSError:
            raise EmoPortraitsError(f"{out} is being prepared by another process; wait for it or use "
                                    f"another --out") from None
        yield
    finally:
        f.close()


def _collect_garbage(out: Path, records: dict[str, dict], prefix: str = "") -> None:
    """Delete temp files of crashed runs and shards no finished video refers to — only this part's
    (names starting with ``prefix``): other parts may be writing into the same folder."""
    shards = out / "shards"
    if not shards.is_dir():
        return
    used = {r.get("shard") for r in records.values()}
    for p in shards.iterdir():
        if not p.name.lstrip(".").startswith(prefix):
            continue
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)
        elif p.suffix == ".tar" and f"shards/{p.name}" not in used:
            p.unlink(missing_ok=True)


def _settings(videos: Path, out: Path, dataset: str, resolution: int, frames_per_clip: int, stride: int,
              smooth: float, template, with_audio: bool = False, state: Path | None = None,
              recipe: str | None = None) -> dict:
    """The run's options; on a resumed folder, checked against prepare.json (template reused)."""
    from .pose_labels import default_template, load_template, template_digest

    new = {"format": FORMAT, "version": VERSION, "dataset": dataset, "resolution": int(resolution),
           "frames_per_clip": int(frames_per_clip), "stride": int(stride), "crop_scale": CROP_SCALE,
           "smooth": float(smooth)}
    path = (state or out) / "prepare.json"
    if path.is_file():
        old = read_json(path)
        diff = [f"{k} {old.get(k)!r} → {new[k]!r}" for k in _CHECKED if old.get(k) != new[k]]
        if bool(old.get("with_audio", False)) != bool(with_audio):
            diff.append(f"with_audio {bool(old.get('with_audio', False))!r} → {bool(with_audio)!r}")
        if old.get("recipe") != recipe:
            diff.append(f"recipe {old.get('recipe')!r} → {recipe!r}")
        if diff:
            raise EmoPortraitsError(f"{out} was prepared with other options ({'; '.join(diff)}); rerun with the "
                                    f"same options to resume, or choose another --out")
        stored = np.asarray(old["template"], np.float64)
        if template is not None:
            t = load_template(template)
            if template_digest(t) != old["template_digest"]:
                raise EmoPortraitsError(f"{out} was prepared with another face template ({old['template_source']}); "
                                        f"drop --template to resume with it, or choose another --out")
        return dict(old, videos=str(videos), out=str(out), template=stored.tolist())
    t = default_template() if template is None else load_template(template)
    if with_audio:
        new["with_audio"] = True
    if recipe:
        new["recipe"] = recipe
    settings = dict(new, template=np.asarray(t, np.float32).astype(np.float64).tolist(),
                    template_digest=template_digest(t),
                    template_source="emoportraits/weights/face_template.npy" if template is None else str(template),
                    created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_json_atomic(path, {k: v for k, v in settings.items() if k not in ("videos", "out")}, indent=1)
    return dict(settings, videos=str(videos), out=str(out))


def prepare_dataset(videos, out, dataset_name: str, *, resolution: int = 512, frames_per_clip: int = 32,
                    stride: int = 5, workers: int = 1, shard_size_mb: float = 256, smooth: float = 0.5,
                    template=None, retry_failed: bool = False, progress: bool = True,
                    with_audio: bool = False, part: tuple[int, int] = (1, 1),
                    recipe: str | None = None) -> PrepareSummary:
    """Prepare (or resume preparing) the training set ``out`` — or its part ``part`` = (I, N) — from
    the videos under ``videos`` (found and named by ``recipe``'s layout if given; its defaults are
    applied by the command line, not here)."""
    videos, out = Path(videos), Path(out)
    if (out / "index.json").is_file():
        raise EmoPortraitsError(f"{out} was prepared in the old layout (index.json); convert it with "
                                f"`emoportraits prepare-data --convert {out} --out NEW_DIR`, or choose another --out")
    if not videos.is_dir():
        raise EmoPortraitsError(f"{videos}: no such folder; --videos must be a folder of videos")
    if not dataset_name or any(c in dataset_name for c in "/\\ "):
        raise EmoPortraitsError(f"--dataset-name {dataset_name!r}: use a plain name such as voxceleb2 or feed")
    for name, value, low in (("--resolution", resolution, 16), ("--frames-per-clip", frames_per_clip, MIN_FRAMES),
                             ("--stride", stride, 1), ("--workers", workers, 1)):
        if int(value) != value or value < low:
            raise EmoPortraitsError(f"{name} must be an integer >= {low}, got {value}")
    if not shard_size_mb > 0:
        raise EmoPortraitsError(f"--shard-size-mb must be > 0, got {shard_size_mb}")
    if not 0 <= smooth < 1:
        raise EmoPortraitsError(f"--smooth must be in [0, 1), got {smooth}")
    if recipe:
        from .recipes import discover
        found = discover(recipe, videos)
    else:
        found = discover_videos(videos)
    if not found:
        raise EmoPortraitsError(f"{videos}: no video files found (looked for .mp4, .mov, .mkv, … in all subfolders)")

    found = [r for r in found if _parts.part_of(r, part[1]) == part[0]]
    t0 = time.perf_counter()
    summary = PrepareSummary(out=out, dataset=dataset_name, videos_found=len(found))
    state = _parts.part_dir(out, part)
    with _lock(state):
        cfg = _settings(videos, out, dataset_name, resolution, frames_per_clip, stride, smooth, template,
                        with_audio, state=state, recipe=recipe)
        cfg["with_audio"] = bool(with_audio)
        cfg["recipe"] = recipe
        cfg["shard_size_mb"] = float(shard_size_mb)
        done = _read_manifest(state / "manifest.jsonl")
        _collect_garbage(out, done, _parts.shard_prefix(part))
        pending = [r for r in found if r not in done or (retry_failed and done[r].get("status") == "failed")]
        summary.already_done = len(found) - len(pending)
        if pending:
            _process_all(cfg, out, state, part, pending, workers, summary, progress)
        if pending or not (state / "stats.json").is_file():
            _parts.finish_part(out, part, _read_manifest(state / "manifest.jsonl"), cfg)
    if pending or not (out / "dataset.json").is_file():
        summary.index = _parts.merge(out, required=False)     # the last part to finish merges
    elif summary.index is None:
        summary.index = read_json(out / "dataset.json")
    summary.part = part
    summary.seconds = time.perf_counter() - t0
    return summary


def _process_all(cfg: dict, out: Path, state: Path, part, pending: list[str], workers: int,
                 summary: PrepareSummary, progress: bool) -> None:
    """Run the videos ``pending`` through ``workers`` processes, logging each finished one."""
    manifest = Manifest(state / "manifest.jsonl")
    bar = _bar(progress, len(pending), cfg["dataset"])
    # a shard name never reused: the part, then the run's time and a random tag
    run_id = _parts.shard_prefix(part) + time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)

    def handle(msg) -> None:
        kind = msg[0]
        if kind == "video":
            _, rel, st = msg
            summary.processed += 1
            summary.frames += st["frames"]
            summary.skipped += st["skipped"]
            status = st["status"]
            setattr(summary, status, getattr(summary, status) + 1)
            if status == "failed":
                summary.errors.append(f"{rel}: {st['error']}")
            if status != "ok":              # nothing in a shard: durable right away
                manifest.append([{"path": rel, **st}])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(frames=summary.frames, no_face=summary.skipped, failed=summary.failed,
                                refresh=False)
        elif kind == "commit":
            _, shard, records = msg
            manifest.append(records)
            summary.shards.append(shard)
            summary.bytes_written += (out / shard).stat().st_size

    workers = min(workers, len(pending))
    try:
        if workers == 1:
            proc = _VideoProcessor(cfg, f"{run_id}-w00", handle)
            try:
                for rel in pending:
                    proc.process(rel)
                proc.finish()
            except BaseException:
                proc.abort()
                raise
        else:
            _run_parallel(cfg, run_id, pending, workers, handle)
    finally:
        manifest.close()
        if bar is not None:
            bar.close()


def _run_parallel(cfg: dict, run_id: str, pending: list[str], workers: int, handle) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")       # fresh interpreters: no forked threads / TFLite state
    tasks, results = ctx.Queue(), ctx.Queue()
    for rel in pending:
        tasks.put(rel)
    for _ in range(workers):
        tasks.put(None)
    procs = [ctx.Process(target=_worker_main, args=(w, cfg, f"{run_id}-w{w:02d}", tasks, results), daemon=True)
             for w in range(workers)]
    for p in procs:
        p.start()
    finished: set[int] = set()
    try:
        while len(finished) < workers:
            try:
                msg = results.get(timeout=1.0)
            except queue.Empty:
                dead = [w for w, p in enumerate(procs) if w not in finished and p.exitcode is not None]
                if dead:
                    try:                      # a last message may still be in the pipe
                        msg = results.get(timeout=2.0)
                    except queue.Empty:
                        raise EmoPortraitsError(f"worker {dead[0]} stopped unexpectedly (exit code "
                                                f"{procs[dead[0]].exitcode}); rerun the command to resume") from None
                else:
                    continue
            if msg[0] == "done":
                finished.add(msg[1])
            elif msg[0] == "fatal":
                raise EmoPortraitsError(f"worker {msg[1]} failed: {msg[2]}; rerun the command to resume")
            else:
                handle(msg)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=10)


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="video", file=sys.stderr, dynamic_ncols=True)


# ---- command line -------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--videos", metavar="DIR",
                      help="folder of videos, any nesting (VoxCeleb2: id/video/clip.mp4); identity = first folder")
    what.add_argument("--merge", action="store_true",
                      help="only merge the finished --part runs of --out into its dataset.json")
    what.add_argument("--convert", metavar="OLD_DIR",
                      help="rewrite a folder prepared in the old layout (index.json) as WebDataset shards in --out")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; reruns resume it)")
    p.add_argument("--recipe", choices=("hdtf", "voxceleb2"),
                   help="a known layout under --videos, with speech defaults (audio, --stride 1, long clips, "
                        "--dataset-name); voxceleb2: ROOT/{dev,test}/mp4/idNNNNN/VIDEO/CLIP.mp4, identity = "
                        "idNNNNN; hdtf: SPEAKER_NNN.mp4 anywhere below (a local copy, or a Hub snapshot: "
                        "huggingface-cli download global-optima-research/HDTF --repo-type dataset "
                        "--local-dir DIR), identity = SPEAKER; options given here override its defaults")
    p.add_argument("--dataset-name", metavar="NAME",
                   help="e.g. voxceleb2, feed or hdtf (required with --videos unless --recipe sets it)")
    p.add_argument("--part", metavar="I/N",
                   help="prepare only part I of N (videos split by a hash of their path): one part per machine, "
                        "each writing its own shards; the last one to finish merges")
    p.add_argument("--resolution", type=int, default=512, metavar="R", help="crop side in pixels (default: 512)")
    p.add_argument("--frames-per-clip", type=int, metavar="N",
                   help="at most N frames with a face per video (default: 32; recipes 250 or 500)")
    p.add_argument("--stride", type=int, metavar="K", help="use every K-th frame (default: 5; recipes 1)")
    p.add_argument("--workers", type=int, default=1, metavar="W",
                   help="parallel processes, each writing its own shards (default: 1)")
    p.add_argument("--shard-size-mb", type=float, default=256, metavar="MB", help="shard size (default: 256)")
    p.add_argument("--smooth", type=float, default=0.5, metavar="S",
                   help="crop-box smoothing over the sampled frames, as at inference (default: 0.5; 0 = off)")
    p.add_argument("--template", metavar="FILE.npy",
                   help="(468, 3) face template for the pose labels (default: the shipped one; "
                        "kept when resuming)")
    p.add_argument("--with-audio", action=argparse.BooleanOptionalAction,
                   help="also store each video's audio (16 kHz mono) for the speech mode; use with --stride 1 "
                        "(default: off; on with a recipe)")
    p.add_argument("--retry-failed", action="store_true", help="process again the videos that failed before")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> None:
    import logging

    logging.getLogger("emoportraits").setLevel(logging.WARNING)
    if args.merge or args.convert:
        index = _parts.merge(args.out) if args.merge else _parts.convert_v1(args.convert, args.out,
                                                                            shard_size_mb=args.shard_size_mb)
        st = index["stats"]
        print(f"data set {args.out}: {st['clips']} clips, {st['frames']} frames (WebDataset samples), "
              f"{st['identities']} identities, {len(index['shards'])} shard(s), {index['resolution']}² crops")
        return
    from .recipes import apply_defaults
    apply_defaults(args)
    if not args.dataset_name:
        raise EmoPortraitsError("--dataset-name is required with --videos (e.g. voxceleb2, feed or hdtf)")
    summary = prepare_dataset(args.videos, args.out, args.dataset_name, resolution=args.resolution,
                              frames_per_clip=args.frames_per_clip, stride=args.stride, workers=args.workers,
                              shard_size_mb=args.shard_size_mb, smooth=args.smooth, template=args.template,
                              retry_failed=args.retry_failed, progress=not args.quiet,
                              with_audio=bool(args.with_audio), part=_parts.parse_part(args.part),
                              recipe=getattr(args, "recipe", None))
    print(summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emoportraits.data.prepare",
                                     description="Prepare a training set (crops, masks, head-pose labels) from videos.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_command(run, args, parser.prog, "interrupted; rerun the command to resume")


if __name__ == "__main__":
    sys.exit(main())
