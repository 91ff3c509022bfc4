"""Sharded storage of prepared training clips, and a lazy reader.

A prepared data set is a folder::

    DIR/index.json          clip table (columnar) + data set facts + face template
    DIR/prepare.json        the options the set was prepared with (checked when resuming)
    DIR/manifest.jsonl      one line per processed video (the resume log; source of index.json)
    DIR/shards/*.tar        uncompressed POSIX tar files, each holding many whole clips

Inside a shard, a clip ``KEY`` (its video's path under the video folder, without extension) is
a run of members — plain files that ``tar -xf`` extracts for inspection::

    KEY/000000.jpg …        the n crops, JPEG quality 95, RGB, resolution × resolution
    KEY/000000.png …        their portrait masks, 8-bit grayscale PNG (probability × 255)
    KEY/pose.npy            (n, 9) float32 raw9 head-pose labels (see pose_labels)
    KEY/landmarks.npy       (n, 468, 3) float16 face mesh in crop coordinates
    KEY/meta.json           the clip's header, written last: metadata (dataset, identity, video,
                            clip, fps, frame indices, crop boxes) and the absolute byte offset and
                            size of every member above within the shard

``index.json`` gives, for clip i, its shard and the offset/size of its ``meta.json``, so reading a
clip is one small read for the header and one ``pread`` per frame: shards are never loaded into
memory, files are opened lazily (again after a fork, e.g. in DataLoader workers).

Shards are written to a hidden temporary file and renamed into place when complete (fsync'd), so
a crash leaves either a whole shard or none.
"""
from __future__ import annotations

import collections
import io
import json
import os
import secrets
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FORMAT", "VERSION", "ShardWriter", "ShardDataset", "ClipInfo", "encode_jpeg", "encode_png",
           "decode_image", "read_json", "write_json_atomic"]

FORMAT = "emoportraits-shards"
VERSION = 1
_BLOCK = 512
JPEG_QUALITY = 95


# ---- small helpers ------------------------------------------------------------------------------

def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_png(mask: np.ndarray) -> bytes:
    """A float [0, 1] or uint8 (H, W) mask as 8-bit grayscale PNG."""
    from PIL import Image
    m = np.asarray(mask)
    if m.dtype != np.uint8:
        m = np.clip(np.round(m.astype(np.float32) * 255), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(m, mode="L").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes → uint8 array (H, W, 3) for colour, (H, W) for grayscale."""
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode not in ("RGB", "L"):
            im = im.convert("RGB")
        return np.asarray(im)


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def read_json(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json_atomic(path, data, indent: int | None = None) -> None:
    """Write JSON to a hidden temp file beside ``path``, fsync, rename over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=indent, separators=None if indent else (",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- writing ------------------------------------------------------------------------------------

class ShardWriter:
    """Append whole clips to tar shards of about ``max_bytes`` each.

    ``add_clip`` returns nothing durable by itself: a clip is durable once its shard is committed
    (when it grows past ``max_bytes``, on `commit` and on `close`); ``on_commit(shard, records)``
    is then called with the shard's path relative to ``root`` and the records of its clips. `abort`
    (or an exception inside a ``with`` block) deletes the unfinished shard.
    """

    def __init__(self, root, prefix: str, max_bytes: int = 256 << 20, on_commit=None):
        self.root = Path(root)
        self.dir = self.root / "shards"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.max_bytes, self.on_commit = prefix, int(max_bytes), on_commit
        self._seq = 0
        self._file = self._tar = self._tmp = self._name = None
        self._records: list[dict] = []
        self.committed: list[str] = []

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open(self) -> None:
        self._name = f"{self.prefix}-{self._seq:05d}.tar"
        self._seq += 1
        self._tmp = self.dir / f".{self._name}.{secrets.token_hex(4)}.tmp"
        self._file = open(self._tmp, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)
        self._records = []

    def _add(self, name: str, data: bytes) -> list[int]:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        info.mtime = 0
        self._tar.addfile(info, io.BytesIO(data))
        padded = -(-len(data) // _BLOCK) * _BLOCK
        return [self._tar.offset - padded, len(data)]

    @property
    def size(self) -> int:
        return self._tar.offset if self._tar is not None else 0

    def add_clip(self, key: str, frames: list[bytes], masks: list[bytes], poses: np.ndarray,
                 landmarks: np.ndarray, meta: dict, extra: dict | None = None) -> dict:
        """Write one clip (JPEG frames, PNG masks, (n, 9) poses, (n, 468, 3) landmarks, metadata).
        Returns its record — key, shard, header offset/size, n_frames, plus ``extra`` — which is
        also what ``on_commit`` receives."""
        n = len(frames)
        if n == 0 or len(masks) != n or len(poses) != n or len(landmarks) != n:
            raise ValueError(f"{key}: frames, masks, poses and landmarks must have the same length > 0")
        if self._tar is None:
            self._open()
        key = key.strip("/")
        header = dict(meta, key=key, n_frames=n)
        header["frames"] = [self._add(f"{key}/{i:06d}.jpg", b) for i, b in enumerate(frames)]
        header["masks"] = [self._add(f"{key}/{i:06d}.png", b) for i, b in enumerate(masks)]
        header["poses"] = self._add(f"{key}/pose.npy", npy_bytes(np.asarray(poses, np.float32)))
        header["landmarks"] = self._add(f"{key}/landmarks.npy", npy_bytes(np.asarray(landmarks, np.float16)))
        offset, size = self._add(f"{key}/meta.json", json.dumps(header, separators=(",", ":")).encode())
        record = dict(extra or {}, key=key, shard=f"shards/{self._name}", offset=offset, size=size, n_frames=n)
        self._records.append(record)
        if self.size >= self.max_bytes:
            self.commit()
        return record

    def commit(self) -> str | None:
        """Finish the current shard (if any clip went in) and move it into place atomically."""
        if self._tar is None:
            return None
        tar, f, tmp, name, records = self._tar, self._file, self._tmp, self._name, self._records
        self._tar = self._file = self._tmp = None
        self._records = []
        try:
            tar.close()                  # end-of-archive blocks; leaves the file object open
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(tmp, self.dir / name)
            fsync_dir(self.dir)
        except BaseException:
            f.close()
            tmp.unlink(missing_ok=True)
            raise
        self.committed.append(f"shards/{name}")
        if self.on_commit is not None:
            self.on_commit(f"shards/{name}", records)
        return f"shards/{name}"

    def close(self) -> None:
        self.commit()

    def abort(self) -> None:
        """Drop the unfinished shard (its clips were never committed)."""
        f, tmp = self._file, self._tmp
        self._tar = self._file = self._tmp = None
        self._records = []
        if f is not None:
            f.close()
        if tmp is not None:
            tmp.unlink(missing_ok=True)


# ---- reading ------------------------------------------------------------------------------------

@dataclass
class ClipInfo:
    index: int
    key: str
    dataset: str
    identity: str
    identity_id: int
    video: str
    clip: str
    n_frames: int
    fps: float
    frame_indices: list[int]


class ShardDataset:
    """Read-only access to a prepared data set: ``len()`` clips, each read by offset.

    ``ShardDataset(DIR)`` reads ``DIR/index.json`` only; shard files are opened on first use (per
    process) and read with ``os.pread``. ``template`` (a (468, 3) array or .npy path) relabels the
    head poses from the stored landmarks when it differs from the template the labels were made
    with (``self.template``).
    """

    def __init__(self, root, *, template=None, index: dict | None = None, cache_headers: int = 4096):
        self.root = Path(root)
        if index is None:
            path = self.root / "index.json"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no index; prepare the data set with `emoportraits prepare-data`")
            index = read_json(path)
        if index.get("format") != FORMAT or int(index.get("version", 0)) > VERSION:
            raise ValueError(f"{self.root}: not an {FORMAT} v{VERSION} index")
        self.info = index
        self.dataset: str = index["dataset"]
        self.resolution: int = int(index["resolution"])
        self.identities: list[str] = list(index["identities"])
        self.shards: list[str] = list(index["shards"])
        clips = index["clips"]
        self.keys: list[str] = list(clips["key"])
        self.identity_ids = np.asarray(clips["identity"], np.int64)
        self.shard_ids = np.asarray(clips["shard"], np.int64)
        self.offsets = np.asarray(clips["offset"], np.int64)
        self.sizes = np.asarray(clips["size"], np.int64)
        self.n_frames = np.asarray(clips["n_frames"], np.int64)
        self.template = np.asarray(index["template"], np.float64)
        self._relabel = None
        if template is not None:
            from .pose_labels import load_template
            t = load_template(template) if isinstance(template, (str, os.PathLike)) \
                else np.asarray(template, np.float64)
            if t.shape != self.template.shape:
                raise ValueError(f"template must be (468, 3), got {t.shape}")
            if not np.allclose(t, self.template, atol=1e-6):
                self._relabel = t
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()
        self._cache: collections.OrderedDict[int, dict] = collections.OrderedDict()
        self._cache_size = int(cache_headers)
        self._lock = threading.Lock()

    # -- pickling (DataLoader workers with spawn): file descriptors are per process --
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fds"], state["_cache"], state["_lock"] = {}, collections.OrderedDict(), None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return (f"ShardDataset({str(self.root)!r}: {self.dataset}, {len(self)} clips, "
                f"{int(self.n_frames.sum())} frames, {len(self.identities)} identities, {self.resolution}²)")

    @property
    def total_frames(self) -> int:
        return int(self.n_frames.sum())

    def _fd(self, shard: int) -> int:
        if os.getpid() != self._pid:            # forked: the parent's descriptors are not ours
            self._fds, self._pid = {}, os.getpid()
            self._cache = collections.OrderedDict()
        fd = self._fds.get(shard)
        if fd is None:
            with self._lock:
                fd = self._fds.get(shard)
                if fd is None:
                    fd = os.open(self.root / self.shards[shard], os.O_RDONLY)
                    self._fds[shard] = fd
        return fd

    def _read(self, shard: int, offset: int, size: int) -> bytes:
        fd = self._fd(shard)
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise OSError(f"{self.shards[shard]}: truncated shard (wanted {size} bytes at {offset})")
        return data

    def close(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = {}

    def __del__(self):
        if os.getpid() == getattr(self, "_pid", None):
            self.close()

    def _check(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"clip {i} out of range (0 … {n - 1})")
        return int(i) % n

    def header(self, i: int) -> dict:
        """The clip's ``meta.json`` (metadata + member offsets), cached."""
        i = self._check(i)
        h = self._cache.get(i)
        if h is None:
            h = json.loads(self._read(int(self.shard_ids[i]), int(self.offsets[i]), int(self.sizes[i])))
            with self._lock:
                self._cache[i] = h
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return h

    def clip_info(self, i: int) -> ClipInfo:
        i = self._check(i)
        h = self.header(i)
        return ClipInfo(index=i, key=self.keys[i], dataset=h["dataset"], identity=h["identity"],
                        identity_id=int(self.identity_ids[i]), video=h["video"], clip=h["clip"],
                        n_frames=int(self.n_frames[i]), fps=float(h["fps"]), frame_indices=list(h["frame_indices"]))

    def _members(self, i: int, field: str, which) -> list:
        h = self.header(i)
        entries = h[field]
        sel = range(len(entries)) if which is None else np.atleast_1d(np.asarray(which, np.int64))
        shard = int(self.shard_ids[self._check(i)])
        return [self._read(shard, *entries[int(k)]) for k in sel]

    def read_frames(self, i: int, which=None) -> np.ndarray:
        """uint8 (k, R, R, 3) crops of clip ``i`` (all, or the frame numbers in ``which``)."""
        return np.stack([decode_image(b) for b in self._members(i, "frames", which)])

    def read_masks(self, i: int, which=None) -> np.ndarray:
        """uint8 (k, R, R) portrait masks (probability × 255)."""
        return np.stack([decode_image(b) for b in self._members(i, "masks", which)])

    def read_landmarks(self, i: int, which=None) -> np.ndarray:
        """float32 (k, 468, 3) face mesh in crop coordinates."""
        h = self.header(i)
        lm = np.load(io.BytesIO(self._read(int(self.shard_ids[self._check(i)]), *h["landmarks"])))
        lm = lm.astype(np.float32)
        return lm if which is None else lm[np.asarray(which)]

    def read_poses(self, i: int, which=None) -> np.ndarray:
        """float32 (k, 9) raw9 head-pose labels (relabelled from the landmarks if a template was given)."""
        if self._relabel is not None:
            from .pose_labels import fit_pose
            return fit_pose(self.read_landmarks(i, which), self._relabel)
        h = self.header(i)
        poses = np.load(io.BytesIO(self._read(int(self.shard_ids[self._check(i)]), *h["poses"])))
        return poses if which is None else poses[np.asarray(which)]

    def read_clip(self, i: int, which=None) -> dict:
        """Everything about clip ``i``: frames, masks, poses, landmarks, info."""
        return {"frames": self.read_frames(i, which), "masks": self.read_masks(i, which),
                "poses": self.read_poses(i, which), "landmarks": self.read_landmarks(i, which),
                "info": self.clip_info(i)}

    def estimate_template(self, sample: int = 2000) -> np.ndarray:
        """Generalised-Procrustes template over up to ``sample`` frames spread evenly over the set."""
        from .pose_labels import estimate_template

        total = self.total_frames
        if total == 0:
            raise ValueError(f"{self.root}: the data set has no frames")
        picks = np.unique(np.linspace(0, total - 1, min(sample, total)).round().astype(np.int64))
        starts = np.concatenate([[0], np.cumsum(self.n_frames)[:-1]])
        clip_of = np.searchsorted(starts, picks, side="right") - 1
        shapes = []
        for c in np.unique(clip_of):
            lm = self.read_landmarks(int(c))
            shapes.append(lm[picks[clip_of == c] - starts[c]])
        return estimate_template(np.concatenate(shapes).astype(np.float64))
