"""Videos → a sharded training set of aligned crops, masks and head-pose labels.

    emoportraits prepare-data --videos DIR --out DIR --dataset-name voxceleb2 [--resolution 512]
        [--frames-per-clip 32] [--stride 5] [--workers W] [--shard-size-mb 256] [--with-audio]
    (or: python -m emoportraits.data.prepare …)

Every video file under ``--videos`` (any nesting; VoxCeleb2's ``id/video/clip.mp4`` or FEED's
per-camera recordings alike) is one clip. Its identity is the first path component under the
folder (the file's stem for files directly in it), its video the relative parent folder, its key
the relative path without extension.

Per video, frames are streamed and every ``stride``-th one is used, up to ``frames-per-clip`` frames
with a face: face detection with the face mesh (`FaceDetector`, verify on), the face tracked from
frame to frame (largest face first, then the one overlapping the previous face), the crop box
smoothed (`BoxSmoother` over the sampled frames), then EXACTLY the inference crop
(`square_crop_box` with scale 2.2, `crop` to the resolution), the portrait mask of the crop
(`PortraitMasker`) and the raw9 head-pose label (`pose_labels.fit_pose`, from the mesh in crop
coordinates against the data set's template). Sampled frames without a (tracked) face are skipped
and counted. Clips with fewer than two usable frames are recorded as empty (no pair can be made).

``--with-audio`` (for the speech mode, SPEC §4; use it with ``--stride 1`` so the frames are
consecutive) also stores each clip's audio track as ``KEY/audio.npy`` in its shard: the whole
video's audio, 16 kHz mono int16 (``emoportraits.audio.load_audio``), its [offset, size] in the
clip header as ``audio`` (with ``audio_sample_rate`` and ``audio_samples``). Frame i of the clip is
source frame ``frame_indices[i]``, at ``frame_indices[i] / fps`` seconds into that audio. A video
without an audio track then fails (reported, recorded in the manifest).

Resumable: a video is appended to ``manifest.jsonl`` once the shard holding it is committed (shards
are written atomically), so a rerun skips finished videos and a crash loses at most the unfinished
shard of each worker. Parallel: ``--workers`` processes, each writing its own shards. At the end
``index.json`` is rebuilt from the manifest, with a template estimated (generalised Procrustes)
over a sample of the prepared frames, stored as ``template_estimate``.
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

from ..errors import EmoPortraitsError
from .shards import FORMAT, VERSION, ShardDataset, ShardWriter, _npy_bytes, read_json, write_json_atomic

__all__ = ["prepare_dataset", "build_index", "discover_videos", "describe_video", "PrepareSummary",
           "add_arguments", "run", "main", "CROP_SCALE"]

CROP_SCALE = 2.2                 # the inference crop (ReenactOptions.crop_scale)
MIN_FRAMES = 2                   # a clip must give a (source, driver) pair
_CHECKED = ("dataset", "resolution", "frames_per_clip", "stride", "crop_scale", "smooth")
AUDIO_RATE = 16000               # --with-audio: stored sample rate (Whisper's)


def _add_member(writer: ShardWriter, name: str, data: bytes) -> list[int]:
    """Append one extra member to the writer's current shard (opened if needed), before the clip's
    ``add_clip``, so it lands in the same shard; returns its [offset, size]."""
    if writer._tar is None:
        writer._open()
    return writer._add(name, data)


# ---- videos -------------------------------------------------------------------------------------

def discover_videos(root) -> list[str]:
    """Relative POSIX paths of all video files under ``root`` (hidden entries skipped), sorted."""
    from ..media.video import VIDEO_EXTENSIONS

    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


def describe_video(rel: str) -> dict:
    """identity / video / clip / key of a video's relative path."""
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
        self.writer = ShardWriter(self.out, prefix, int(cfg["shard_size_mb"] * (1 << 20)),
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
        desc = describe_video(rel)
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
                "clip": desc["clip"], "source": rel, "fps": fps, "source_size": [width, height],
                "resolution": size, "crop_scale": float(cfg["crop_scale"]), "frame_indices": indices,
                "boxes": boxes, "scores": scores, "skipped": skipped,
                "template_digest": cfg["template_digest"]}
        extra = {"path": rel, "status": "ok", "identity": desc["identity"], "skipped": skipped}
        if pcm is not None:
            key = desc["key"].strip("/")
            meta.update(audio=_add_member(self.writer, f"{key}/audio.npy", _npy_bytes(pcm)),
                        audio_sample_rate=AUDIO_RATE, audio_samples=int(pcm.size))
        self.writer.add_clip(desc["key"], frames, masks, fit_pose(lm, self.template), lm, meta, extra=extra)
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

    def __str__(self) -> str:
        if self.processed == 0:
            head = (f"nothing to do: all {self.videos_found} video(s) under the folder are already in "
                    f"{self.out} ({self.already_done} recorded)")
        else:
            rate = self.frames / self.seconds if self.seconds > 0 else 0.0
            head = (f"prepared {self.processed} video(s) of {self.dataset} in {self.seconds:.1f} s: {self.ok} ok, "
                    f"{self.empty} empty (< {MIN_FRAMES} frames with a face), {self.failed} failed; "
                    f"{self.frames} frames written ({rate:.1f}/s), {self.skipped} sampled frames without a face; "
                    f"{len(self.shards)} shard(s), {self.bytes_written / 1e6:.1f} MB")
        lines = [head]
        if self.index is not None:
            st = self.index["stats"]
            lines.append(f"data set {self.out}: {st['clips']} clips, {st['frames']} frames, "
                         f"{st['identities']} identities, {len(self.index['shards'])} shard(s), "
                         f"{self.index['resolution']}² crops")
            est = self.index.get("template_estimate_pose")
            if est is not None:
                lines.append("its mean face vs the label template: scale {:.3f}, yaw/pitch/roll "
                             "{:.1f}/{:.1f}/{:.1f}°, translation {:.3f}/{:.3f}/{:.3f}"
                             .format(est[0], *np.degrees(est[3:6]), *est[6:9]))
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


class _Manifest:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # a torn last line from a crash: start the next record on a fresh line
        torn = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
        self._f = open(path, "a", encoding="utf-8")
        if torn:
            self._f.write("\n")

    def append(self, records: list[dict]) -> None:
        for r in records:
            self._f.write(json.dumps(r, separators=(",", ":")) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


@contextlib.contextmanager
def _lock(out: Path):
    """One prepare run per output folder at a time."""
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


def _collect_garbage(out: Path, records: dict[str, dict]) -> None:
    """Delete temp files of crashed runs and shards no finished video refers to."""
    shards = out / "shards"
    if not shards.is_dir():
        return
    used = {r.get("shard") for r in records.values()}
    for p in shards.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)
        elif p.suffix == ".tar" and f"shards/{p.name}" not in used:
            p.unlink(missing_ok=True)


def _settings(videos: Path, out: Path, dataset: str, resolution: int, frames_per_clip: int, stride: int,
              smooth: float, template, with_audio: bool = False) -> dict:
    """The run's options; on a resumed folder, checked against prepare.json (template reused)."""
    from .pose_labels import default_template, load_template, template_digest

    new = {"format": FORMAT, "version": VERSION, "dataset": dataset, "resolution": int(resolution),
           "frames_per_clip": int(frames_per_clip), "stride": int(stride), "crop_scale": CROP_SCALE,
           "smooth": float(smooth)}
    path = out / "prepare.json"
    if path.is_file():
        old = read_json(path)
        diff = [f"{k} {old.get(k)!r} → {new[k]!r}" for k in _CHECKED if old.get(k) != new[k]]
        if bool(old.get("with_audio", False)) != bool(with_audio):
            diff.append(f"with_audio {bool(old.get('with_audio', False))!r} → {bool(with_audio)!r}")
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
    settings = dict(new, template=np.asarray(t, np.float32).astype(np.float64).tolist(),
                    template_digest=template_digest(t),
                    template_source="emoportraits/weights/face_template.npy" if template is None else str(template),
                    created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_json_atomic(path, {k: v for k, v in settings.items() if k not in ("videos", "out")}, indent=1)
    return dict(settings, videos=str(videos), out=str(out))


def build_index(out, estimate_sample: int = 2000) -> dict:
    """Rebuild ``out/index.json`` from the manifest (clips sorted by key) and return it."""
    from .pose_labels import fit_pose

    out = Path(out)
    settings = read_json(out / "prepare.json")
    records = sorted((r for r in _read_manifest(out / "manifest.jsonl").values() if r.get("status") == "ok"),
                     key=lambda r: r["key"])
    identities = sorted({r["identity"] for r in records})
    ident_id = {name: i for i, name in enumerate(identities)}
    shards = sorted({r["shard"] for r in records})
    shard_id = {name: i for i, name in enumerate(shards)}
    index = {
        "format": FORMAT, "version": VERSION, "dataset": settings["dataset"],
        "resolution": settings["resolution"], "crop_scale": settings["crop_scale"],
        "frames_per_clip": settings["frames_per_clip"], "stride": settings["stride"], "smooth": settings["smooth"],
        "image": "JPEG q95 RGB", "mask": "PNG 8-bit (selfie segmentation probability × 255)",
        "pose": "raw9 float32 (scale×3, yaw, pitch, roll, translation×3); "
                "theta_from_raw9(raw9) maps posed → canonical",
        "landmarks": "MediaPipe 468-point face mesh, crop coordinates ([-1, 1] on x and y; z scaled like x), float16",
        "template_digest": settings["template_digest"], "template_source": settings["template_source"],
        "template": settings["template"],
        "identities": identities, "shards": shards,
        "clips": {"key": [r["key"] for r in records],
                  "identity": [ident_id[r["identity"]] for r in records],
                  "shard": [shard_id[r["shard"]] for r in records],
                  "offset": [r["offset"] for r in records],
                  "size": [r["size"] for r in records],
                  "n_frames": [r["n_frames"] for r in records]},
        "stats": {"clips": len(records), "frames": int(sum(r["n_frames"] for r in records)),
                  "identities": len(identities),
                  "skipped_frames": int(sum(r.get("skipped", 0) for r in records))},
        "template_estimate": None, "template_estimate_pose": None,
    }
    if settings.get("with_audio"):
        index["with_audio"] = True
        index["audio"] = "KEY/audio.npy: the video's whole audio track, 16 kHz mono int16 (header: audio)"
    if records:
        est = ShardDataset(out, index=index).estimate_template(estimate_sample)
        index["template_estimate"] = np.round(est, 6).tolist()
        # where the data set's mean face sits relative to the label template (θ of the estimate)
        index["template_estimate_pose"] = [round(float(v), 6) for v in fit_pose(est, settings["template"])]
    write_json_atomic(out / "index.json", index)
    return index


def prepare_dataset(videos, out, dataset_name: str, *, resolution: int = 512, frames_per_clip: int = 32,
                    stride: int = 5, workers: int = 1, shard_size_mb: float = 256, smooth: float = 0.5,
                    template=None, retry_failed: bool = False, progress: bool = True,
                    with_audio: bool = False) -> PrepareSummary:
    """Prepare (or resume preparing) the training set ``out`` from the videos under ``videos``."""
    videos, out = Path(videos), Path(out)
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
    found = discover_videos(videos)
    if not found:
        raise EmoPortraitsError(f"{videos}: no video files found (looked for .mp4, .mov, .mkv, … in all subfolders)")

    t0 = time.perf_counter()
    summary = PrepareSummary(out=out, dataset=dataset_name, videos_found=len(found))
    with _lock(out):
        cfg = _settings(videos, out, dataset_name, resolution, frames_per_clip, stride, smooth, template,
                        with_audio)
        cfg["with_audio"] = bool(with_audio)
        cfg["shard_size_mb"] = float(shard_size_mb)
        done = _read_manifest(out / "manifest.jsonl")
        _collect_garbage(out, done)
        pending = [r for r in found if r not in done or (retry_failed and done[r].get("status") == "failed")]
        summary.already_done = len(found) - len(pending)
        if not pending:
            if not (out / "index.json").is_file():
                summary.index = build_index(out)
            summary.seconds = time.perf_counter() - t0
            return summary
        manifest = _Manifest(out / "manifest.jsonl")
        bar = _bar(progress, len(pending), dataset_name)
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)

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
            summary.index = build_index(out)
        summary.seconds = time.perf_counter() - t0
    return summary


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
    p.add_argument("--videos", required=True, metavar="DIR",
                   help="folder of videos, any nesting (VoxCeleb2: id/video/clip.mp4); identity = first folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; reruns resume it)")
    p.add_argument("--dataset-name", required=True, metavar="NAME", help="e.g. voxceleb2 or feed")
    p.add_argument("--resolution", type=int, default=512, metavar="R", help="crop side in pixels (default: 512)")
    p.add_argument("--frames-per-clip", type=int, default=32, metavar="N",
                   help="at most N frames with a face per video (default: 32)")
    p.add_argument("--stride", type=int, default=5, metavar="K", help="use every K-th frame (default: 5)")
    p.add_argument("--workers", type=int, default=1, metavar="W",
                   help="parallel processes, each writing its own shards (default: 1)")
    p.add_argument("--shard-size-mb", type=float, default=256, metavar="MB", help="shard size (default: 256)")
    p.add_argument("--smooth", type=float, default=0.5, metavar="S",
                   help="crop-box smoothing over the sampled frames, as at inference (default: 0.5; 0 = off)")
    p.add_argument("--template", metavar="FILE.npy",
                   help="(468, 3) face template for the pose labels (default: the shipped one; "
                        "kept when resuming)")
    p.add_argument("--with-audio", action="store_true",
                   help="also store each video's audio (16 kHz mono) for the speech mode; use with --stride 1")
    p.add_argument("--retry-failed", action="store_true", help="process again the videos that failed before")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> None:
    import logging

    logging.getLogger("emoportraits").setLevel(logging.WARNING)
    summary = prepare_dataset(args.videos, args.out, args.dataset_name, resolution=args.resolution,
                              frames_per_clip=args.frames_per_clip, stride=args.stride, workers=args.workers,
                              shard_size_mb=args.shard_size_mb, smooth=args.smooth, template=args.template,
                              retry_failed=args.retry_failed, progress=not args.quiet,
                              with_audio=getattr(args, "with_audio", False))
    print(summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emoportraits.data.prepare",
                                     description="Prepare a training set (crops, masks, head-pose labels) from videos.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    from ..cli import run_command
    return run_command(run, args, parser.prog, "interrupted; rerun the command to resume")


if __name__ == "__main__":
    sys.exit(main())
