"""Preparation split across machines, the merged description of a prepared folder, and the
conversion of folders prepared in the old (v1, index.json) layout.

    OUT/shards/p3of8-*.tar          WebDataset shards (`wds`), each written by one part
    OUT/parts/3-of-8/               one part's private state: prepare.json (its options),
                                    manifest.jsonl (resume log), stats.json + landmarks.npy (its summary)
    OUT/dataset.json                the merge: options, face template, identities, the shard list with
                                    clip/frame counts, totals and the template estimate

``prepare-data --part I/N`` processes the videos whose path hashes to part I (crc32 mod N, stable
when videos are added) and touches only its own files, so N machines can write into one shared
folder (or N folders copied together afterwards). The last part to finish merges; ``prepare-data
--merge --out OUT`` merges explicitly (e.g. after copying the parts together).
"""
from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import EmoPortraitsError
from .shards import read_json, write_json_atomic
from .wds import FORMAT, VERSION, SampleWriter, read_clip_at

__all__ = ["parse_part", "part_name", "part_of", "part_dir", "finish_part", "merge", "read_dataset",
           "convert_v1", "OPTIONS"]

OPTIONS = ("dataset", "resolution", "frames_per_clip", "stride", "crop_scale", "smooth", "template_digest")
ESTIMATE_SAMPLE = 2000
_FIELDS = {
    "jpg": "the crop, JPEG q95 RGB", "mask.png": "portrait mask, PNG 8-bit (selfie-segmentation probability × 255)",
    "landmarks.npy": "MediaPipe 468-point face mesh, crop coordinates ([-1, 1] on x and y; z scaled like x), float16",
    "json": "frame metadata; pose = raw9 (scale×3, yaw, pitch, roll, translation×3), "
            "theta_from_raw9(raw9) maps posed → canonical",
    "audio.npy": "with_audio: int16 16 kHz mono, this frame's slice of the video's audio (slices concatenate "
                 "to the whole track)",
}


def parse_part(text: str | None) -> tuple[int, int]:
    """``"3/8"`` → (3, 8); None → (1, 1)."""
    if text is None:
        return 1, 1
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise EmoPortraitsError(f"--part {text!r}: write it as I/N, e.g. 3/8") from None
    if not 1 <= i <= n:
        raise EmoPortraitsError(f"--part {text!r}: I must be between 1 and N")
    return i, n


def part_name(part: tuple[int, int]) -> str:
    return f"{part[0]}-of-{part[1]}"


def shard_prefix(part: tuple[int, int]) -> str:
    return f"p{part[0]}of{part[1]}-"


def part_dir(out, part: tuple[int, int]) -> Path:
    return Path(out) / "parts" / part_name(part)


def part_of(rel: str, n: int) -> int:
    """The part (1 … n) that prepares the video at relative path ``rel``."""
    return zlib.crc32(rel.encode("utf-8")) % n + 1


def _landmark_sample(out: Path, records: list[dict], sample: int) -> np.ndarray:
    """Landmarks spread over the part's clips for the template estimate: frame 0 of up to
    ``sample`` clips, or every frame of every clip when the part is small."""
    if not records:
        return np.zeros((0, 468, 3), np.float16)
    picks = np.unique(np.linspace(0, len(records) - 1, min(sample, len(records))).round().astype(int))
    shapes = []
    for k in picks:
        r = records[int(k)]
        if len(records) * 4 < sample:                      # small: whole clips
            shapes.append(read_clip_at(out / r["shard"], r["start"], r["end"]).landmarks())
        else:
            import io
            off, size = r["landmarks"]
            with open(out / r["shard"], "rb") as f:
                f.seek(off)
                shapes.append(np.load(io.BytesIO(f.read(size)))[None])
    return np.concatenate(shapes).astype(np.float16)


def finish_part(out, part: tuple[int, int], records: dict[str, dict], settings: dict) -> dict:
    """Write the part's stats.json and landmark sample from its manifest ``records`` (path →
    record); returns the stats."""
    out = Path(out)
    ok = sorted((r for r in records.values() if r.get("status") == "ok"), key=lambda r: r["key"])
    shards: dict[str, list[int]] = {}
    for r in ok:
        c = shards.setdefault(r["shard"], [0, 0])
        c[0] += 1
        c[1] += int(r["n_frames"])
    stats = {"part": part_name(part), "options": {k: settings.get(k) for k in OPTIONS},
             "with_audio": bool(settings.get("with_audio")), "clips": len(ok),
             "frames": int(sum(r["n_frames"] for r in ok)), "identities": sorted({r["identity"] for r in ok}),
             "skipped_frames": int(sum(r.get("skipped", 0) for r in ok)),
             "empty": sum(r.get("status") == "empty" for r in records.values()),
             "failed": sum(r.get("status") == "failed" for r in records.values()),
             "shards": [{"path": p, "clips": c, "frames": f} for p, (c, f) in sorted(shards.items())]}
    d = part_dir(out, part)
    np.save(d / ".landmarks.npy.tmp.npy", _landmark_sample(out, ok, ESTIMATE_SAMPLE))
    (d / ".landmarks.npy.tmp.npy").replace(d / "landmarks.npy")
    write_json_atomic(d / "stats.json", stats, indent=1)
    return stats


def _parts(out: Path) -> list[tuple[Path, dict | None]]:
    folders = sorted((out / "parts").glob("*-of-*")) if (out / "parts").is_dir() else []
    return [(f, read_json(f / "stats.json") if (f / "stats.json").is_file() else None) for f in folders]


def merge(out, *, required: bool = True) -> dict | None:
    """Combine every part's stats into ``OUT/dataset.json`` (returned). With ``required=False``,
    return None (and write nothing) while parts are missing or unfinished."""
    from .pose_labels import estimate_template, fit_pose

    out = Path(out)
    parts = _parts(out)
    counts = {int(f.name.split("-of-")[1]) for f, _ in parts}
    if not parts or len(counts) != 1:
        if not required:
            return None
        raise EmoPortraitsError(f"{out}: no prepared parts found" if not parts else
                                f"{out}: parts of different splits ({sorted(counts)} parts); keep one --part I/N split")
    n = counts.pop()
    done = {f.name: s for f, s in parts if s is not None}
    missing = [f"{i}/{n}" for i in range(1, n + 1) if f"{i}-of-{n}" not in done]
    if missing:
        if not required:
            return None
        raise EmoPortraitsError(f"{out}: part(s) {', '.join(missing)} not finished; run prepare-data --part for them, "
                                f"then --merge")
    stats = [done[f"{i}-of-{n}"] for i in range(1, n + 1)]
    first = stats[0]
    for s in stats[1:]:
        diff = [k for k in OPTIONS if s["options"].get(k) != first["options"].get(k)]
        if diff or s["with_audio"] != first["with_audio"]:
            raise EmoPortraitsError(f"{out}: part {s['part']} was prepared with other options "
                                    f"({', '.join(diff) or 'with_audio'}) than part {first['part']}")
    settings = read_json(out / "parts" / first["part"] / "prepare.json")
    shards = sorted((sh for s in stats for sh in s["shards"]), key=lambda sh: sh["path"])
    index = {"format": FORMAT, "version": VERSION, **{k: settings[k] for k in OPTIONS},
             "with_audio": first["with_audio"], "fields": {k: v for k, v in _FIELDS.items()
                                                           if first["with_audio"] or k != "audio.npy"},
             "template_source": settings.get("template_source"), "template": settings["template"],
             "parts": n, "identities": sorted({i for s in stats for i in s["identities"]}), "shards": shards,
             "stats": {"clips": sum(s["clips"] for s in stats), "frames": sum(s["frames"] for s in stats),
                       "identities": 0, "skipped_frames": sum(s["skipped_frames"] for s in stats),
                       "empty": sum(s["empty"] for s in stats), "failed": sum(s["failed"] for s in stats)},
             "template_estimate": None, "template_estimate_pose": None}
    index["stats"]["identities"] = len(index["identities"])
    lm = [np.load(out / "parts" / s["part"] / "landmarks.npy") for s in stats]
    lm = np.concatenate(lm) if lm else np.zeros((0, 468, 3))
    if len(lm):
        lm = lm[np.unique(np.linspace(0, len(lm) - 1, min(ESTIMATE_SAMPLE, len(lm))).round().astype(int))]
        est = estimate_template(lm.astype(np.float64))
        index["template_estimate"] = np.round(est, 6).tolist()
        # where the data set's mean face sits relative to the label template (θ of the estimate)
        index["template_estimate_pose"] = [round(float(v), 6) for v in fit_pose(est, settings["template"])]
    write_json_atomic(out / "dataset.json", index)
    return index


def read_dataset(root) -> dict:
    """``dataset.json`` of a prepared folder; an old (v1) folder or an unmerged one is refused with
    the command that fixes it."""
    root = Path(root)
    path = root / "dataset.json"
    if path.is_file():
        info = read_json(path)
        if info.get("format") == FORMAT and int(info.get("version", 0)) <= VERSION:
            return info
        raise EmoPortraitsError(f"{root}: dataset.json of an unknown format {info.get('format')!r} "
                                f"v{info.get('version')}; prepare it again with this version")
    if (root / "index.json").is_file():
        raise EmoPortraitsError(f"{root} was prepared in the old layout (index.json); convert it once with "
                                f"`emoportraits prepare-data --convert {root} --out NEW_DIR` and use NEW_DIR")
    if (root / "parts").is_dir():
        raise EmoPortraitsError(f"{root}: the parts are not merged yet; run `emoportraits prepare-data --merge "
                                f"--out {root}` once every part is done")
    raise EmoPortraitsError(f"{root}: not a prepared data set (no dataset.json); prepare it with "
                            f"`emoportraits prepare-data`")


def convert_v1(old, new, *, shard_size_mb: float = 256) -> dict:
    """Rewrite a v1 folder (index.json + our own tar layout) as WebDataset shards in ``new``; the
    stored JPEG/PNG bytes, labels and audio are copied as they are (no re-encoding)."""
    import io

    from .shards import FORMAT as V1, ShardDataset

    old, new = Path(old), Path(new)
    if not (old / "index.json").is_file() or read_json(old / "index.json").get("format") != V1:
        raise EmoPortraitsError(f"{old}: not a folder of the old layout (no index.json); nothing to convert")
    if (new / "dataset.json").is_file() or (new / "parts").is_dir():
        raise EmoPortraitsError(f"{new} already holds a prepared data set; choose an empty --out")
    src = ShardDataset(old)
    part = (1, 1)
    d = part_dir(new, part)
    d.mkdir(parents=True)
    settings = {k: v for k, v in read_json(old / "prepare.json").items()}
    settings.update(format=FORMAT, version=VERSION, converted_from=str(old))
    write_json_atomic(d / "prepare.json", settings, indent=1)
    records: dict[str, dict] = {}
    manifest = Manifest(d / "manifest.jsonl")

    def commit(shard, recs):
        manifest.append(recs)
        records.update({r["path"]: r for r in recs})

    with SampleWriter(new, shard_prefix(part) + "converted", int(shard_size_mb * (1 << 20)), on_commit=commit) as w:
        for i in range(len(src)):
            h = src.header(i)
            meta = {k: v for k, v in h.items() if k not in ("frames", "masks", "poses", "landmarks", "audio", "key",
                                                            "n_frames", "audio_samples", "audio_sample_rate")}
            audio = None
            if "audio" in h:
                audio = np.load(io.BytesIO(src._read(int(src.shard_ids[i]), *h["audio"])))
            w.add_clip(src.keys[i], src._members(i, "frames", None), src._members(i, "masks", None),
                       src.read_poses(i), src.read_landmarks(i).astype(np.float16), meta,
                       extra={"path": h.get("source", src.keys[i]), "status": "ok", "identity": h["identity"],
                              "skipped": h.get("skipped", 0)},
                       audio=audio, audio_rate=int(h.get("audio_sample_rate", 16000)))
    manifest.close()
    finish_part(new, part, records, settings)
    return merge(new)


class Manifest:
    """The append-only, fsynced record of finished videos (one json line each) of a prepare run."""

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
