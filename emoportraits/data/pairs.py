"""Training samples from prepared shards: source/driver pairs, single frames, and the batch sampler
that mixes data sets as the paper trains (SPEC §3).

    vox, feed = PairDataset("data/vox", seed=0), PairDataset("data/feed", seed=0)
    data = MixedDataset([vox, feed])
    sampler = MixingBatchSampler([vox, feed], weights=(0.75, 0.25), batch_size=2, seed=0,
                                 rank=rank, world_size=world_size, with_seeds=True)
    loader = DataLoader(data, batch_sampler=sampler, num_workers=8)

Reproducibility: everything random about an item (which two frames, the augmentation) is a
function of (the data set's seed, the item index, the per-draw seed the sampler attaches when
``with_seeds=True``), so a run resumed from ``sampler.state_dict()`` sees exactly the same batches.
"""
from __future__ import annotations

import bisect
import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from ..models.geometry import theta_from_raw9
from .augment import MotionAugment, color_jitter
from .clips import ClipStore
from .pose_labels import eye_centers
from .shards import ShardDataset

__all__ = ["KNOWN_DATASETS", "PairDataset", "FrameDataset", "MixedDataset", "MixingBatchSampler"]

KNOWN_DATASETS = ("voxceleb2", "feed")        # default dataset ids: their position here

_M64 = (1 << 64) - 1


def _mix(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (splitmix64 steps)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _M64)) & _M64
        h = (h + 0x9E3779B97F4A7C15) & _M64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _M64
        h ^= h >> 31
    return h >> 1


def split_key(key) -> tuple[int, int | None]:
    if isinstance(key, (tuple, list)):
        return int(key[0]), int(key[1])
    return int(key), None


def as_shards(shards):
    """A prepared folder for random access (`ClipStore`); a reader given as is is kept."""
    return shards if isinstance(shards, (ShardDataset, ClipStore)) else ClipStore(shards)


class _StoreClip:
    """Clip ``i`` of a random-access reader, with the interface of `wds.Clip` (frames(which) …)."""

    def __init__(self, store, i: int):
        self.store, self.i = store, i
        self.n_frames = int(store.n_frames[i])

    def frames(self, which):
        return self.store.read_frames(self.i, which)

    def masks(self, which):
        return self.store.read_masks(self.i, which)

    def poses(self, which):
        return self.store.read_poses(self.i, which)

    def landmarks(self, which):
        return self.store.read_landmarks(self.i, which)


def make_pair(clip, rng: np.random.Generator, *, resolution: int | None = None,
              augment: MotionAugment | None = None, pair_jitter: float = 0.0) -> dict:
    """Two different frames (source, driver) of ``clip`` (a `wds.Clip` or anything with its
    frames/masks/poses/landmarks(which) and n_frames), all randomness from ``rng``: the item of
    `PairDataset` without its identity/dataset/clip numbers."""
    n = int(clip.n_frames)
    a = int(rng.integers(n))
    b = int(rng.integers(n - 1))
    b += b >= a
    which = [a, b]
    images = frames_to_tensor(clip.frames(which), resolution)
    masks = frames_to_tensor(clip.masks(which), resolution)
    poses = torch.from_numpy(np.asarray(clip.poses(which), np.float32))
    eyes = torch.from_numpy(eye_centers(clip.landmarks(which)).astype(np.float32))
    thetas = theta_from_raw9(poses)
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
    if pair_jitter > 0:   # side by side = one image, so both frames get the same factors
        j = pair_jitter
        pair = color_jitter(torch.cat([images[0], images[1]], dim=-1)[None], j, j, j, j / 5, gen)[0]
        images = torch.stack(pair.chunk(2, dim=-1))
    driver = images[1]
    motion = augment(driver[None], generator=gen)[0] if augment is not None else driver.clone()
    return {"source": images[0], "driver": driver, "source_mask": masks[0], "driver_mask": masks[1],
            "source_pose": poses[0], "driver_pose": poses[1], "source_theta": thetas[0],
            "driver_theta": thetas[1], "driver_motion": motion,
            "source_eye_centers": eyes[0], "driver_eye_centers": eyes[1], "frames": torch.tensor(which)}


def frames_to_tensor(images: np.ndarray, resolution: int | None) -> torch.Tensor:
    """uint8 (k, H, W, 3) or (k, H, W) → float (k, C, R, R) in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x[:, None]
    x = x.float().div_(255)
    if resolution is not None and x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                          antialias=True).clamp_(0, 1)
    return x


class PairDataset(Dataset):
    """Item i: two different frames (source, driver) of clip i of a prepared data set.

    Returns a dict: ``source``, ``driver`` (3, R, R) float in [0, 1]; ``source_mask``,
    ``driver_mask`` (1, R, R) soft portrait masks; ``source_pose``, ``driver_pose`` (9,) raw9
    labels and ``source_theta``, ``driver_theta`` (4, 4); ``driver_motion`` — E_motion's input, the
    driver augmented by ``augment`` (a plain copy when ``augment`` is None); ``source_eye_centers``,
    ``driver_eye_centers`` (2, 2) (x, y) in [-1, 1], image-left eye first (from the face mesh, for
    L_gaze); ``identity`` (id within the data set), ``dataset`` (``dataset_id``; 1 = FEED), ``clip``
    (i) and ``frames`` (the two frame numbers).

    ``shards``: a `ShardDataset` or the prepared folder. ``resolution``: resize the crops (default:
    as stored). Keys are ``i`` or ``(i, seed)`` (the sampler's per-draw seed; without it clip i
    always gives the same pair). Clips with fewer than two frames are left out.

    ``pair_jitter``: strength of one colour jitter applied to source *and* driver alike (0 = off).
    Both frames change together, so the pair stays a valid reconstruction target, while the model
    sees more skin tones and lightings than the data set has identities — on small data sets this
    is what keeps the appearance path from memorising them.
    """

    def __init__(self, shards, resolution: int | None = None, augment: MotionAugment | None = MotionAugment(),
                 *, seed: int = 0, dataset_id: int | None = None, pair_jitter: float = 0.0):
        self.shards = as_shards(shards)
        self.resolution = resolution
        self.augment = augment
        self.pair_jitter = float(pair_jitter)
        self.seed = int(seed)
        name = self.shards.dataset
        self.dataset_id = int(dataset_id) if dataset_id is not None else (
            KNOWN_DATASETS.index(name) if name in KNOWN_DATASETS else 0)
        self.clips = np.flatnonzero(self.shards.n_frames >= 2)
        if len(self.clips) == 0:
            raise ValueError(f"{self.shards.root}: no clip with two or more frames")

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key) -> dict:
        i, draw = split_key(key)
        if not 0 <= i < len(self):
            raise IndexError(f"pair {i} out of range (0 … {len(self) - 1})")
        clip = int(self.clips[i])
        rng = np.random.default_rng([self.seed, i] + ([draw] if draw is not None else []))
        item = make_pair(_StoreClip(self.shards, clip), rng, resolution=self.resolution, augment=self.augment,
                         pair_jitter=self.pair_jitter)
        return dict(item, identity=int(self.shards.identity_ids[clip]), dataset=self.dataset_id, clip=clip)


class FrameDataset(Dataset):
    """Every frame of a prepared data set on its own: ``image`` (3, R, R), ``mask`` (1, R, R),
    ``pose`` (9,) raw9, ``theta`` (4, 4), ``identity``, ``clip``, ``frame`` — e.g. to train the
    head-pose network."""

    def __init__(self, shards, resolution: int | None = None):
        self.shards = as_shards(shards)
        self.resolution = resolution
        self.starts = np.concatenate([[0], np.cumsum(self.shards.n_frames)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, key) -> dict:
        j, _ = split_key(key)
        if not 0 <= j < len(self):
            raise IndexError(f"frame {j} out of range (0 … {len(self) - 1})")
        clip = int(np.searchsorted(self.starts, j, side="right") - 1)
        k = int(j - self.starts[clip])
        image = frames_to_tensor(self.shards.read_frames(clip, [k]), self.resolution)[0]
        mask = frames_to_tensor(self.shards.read_masks(clip, [k]), self.resolution)[0]
        pose = torch.from_numpy(self.shards.read_poses(clip, [k]).astype(np.float32))
        return {"image": image, "mask": mask, "pose": pose[0], "theta": theta_from_raw9(pose)[0],
                "identity": int(self.shards.identity_ids[clip]), "clip": clip, "frame": k}


class MixedDataset(Dataset):
    """Concatenation of data sets that passes ``(index, seed)`` keys through (for
    `MixingBatchSampler` with ``with_seeds=True``; plain integer keys work too)."""

    def __init__(self, datasets: Sequence[Dataset]):
        self.datasets = list(datasets)
        self.offsets = np.concatenate([[0], np.cumsum([len(d) for d in self.datasets])]).tolist()

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, key):
        i, draw = split_key(key)
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range (0 … {len(self) - 1})")
        d = bisect.bisect_right(self.offsets, i) - 1
        local = i - self.offsets[d]
        return self.datasets[d][local if draw is None else (local, draw)]


class MixingBatchSampler(Sampler):
    """Batches of indices into the concatenation of ``datasets`` (`MixedDataset` or torch's
    ``ConcatDataset``), mixing them as the paper trains (SPEC §3).

    * Overall, a fraction ``weights[d]`` of all samples comes from data set d (default 75 % / 25 %
      for two data sets, uniform otherwise).
    * With ``every_second_mixed`` (and several data sets), every second batch (steps 1, 3, 5, …) is
      mixed: sample j comes from data set j mod D — for batch_size 2 and [VoxCeleb2, FEED] that is
      one pair of each. The other batches draw each sample's data set so that the overall
      fractions are ``weights`` (for 75/25 they are all-VoxCeleb2).
    * Within a data set, indices follow a random permutation per pass (reshuffled each pass).
    * DDP: each ``rank`` of ``world_size`` takes the strided slice perm[rank::world_size] of every
      permutation (truncated to an equal length), so ranks see disjoint indices; all ranks share
      the data-set choices, hence stay in the same pass.
    * Deterministic given ``seed``, and resumable: ``state_dict()`` / ``load_state_dict()`` hold
      the position (step and per-data-set cursors). With a prefetching DataLoader, save
      ``state_dict(step=number_of_batches_consumed)``: the position after that many batches.
    * ``with_seeds``: yield ``(index, seed)`` pairs instead of indices; the seed (a function of
      seed, step, rank, position) makes each draw's frame pair and augmentation differ.

    Iterating continues from the current position until ``num_batches`` batches have been made
    (forever when None). ``datasets`` may also be plain lengths.
    """

    def __init__(self, datasets: Sequence, weights: Sequence[float] | None = None, *, batch_size: int = 2,
                 every_second_mixed: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 num_batches: int | None = None, with_seeds: bool = False):
        self.lengths = [int(d) if isinstance(d, (int, np.integer)) else len(d) for d in datasets]
        n_sets = len(self.lengths)
        if n_sets == 0:
            raise ValueError("MixingBatchSampler needs at least one data set")
        if weights is None:
            weights = (0.75, 0.25) if n_sets == 2 else (1.0,) * n_sets
        w = np.asarray(weights, np.float64)
        if w.shape != (n_sets,) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be {n_sets} non-negative numbers, got {tuple(weights)}")
        self.weights = w / w.sum()
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if not (0 <= rank < world_size):
            raise ValueError(f"rank must be in [0, world_size), got rank {rank}, world_size {world_size}")
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, int(seed), int(rank), int(world_size)
        self.num_batches, self.with_seeds = num_batches, with_seeds
        self.mixed = bool(every_second_mixed) and n_sets > 1
        if self.mixed and batch_size < n_sets:
            raise ValueError(f"a mixed batch holds one sample of each of the {n_sets} data sets: "
                             f"batch_size must be >= {n_sets}")
        self.local = [n // self.world_size for n in self.lengths]
        for n, loc in zip(self.lengths, self.local):
            if loc == 0:
                raise ValueError(f"a data set of {n} item(s) cannot be split over {self.world_size} ranks")
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        # dataset fractions of the non-mixed batches, so that the overall fractions are `weights`
        self._pattern = np.arange(batch_size) % n_sets
        if self.mixed:
            share = np.bincount(self._pattern, minlength=n_sets) / batch_size
            q = np.clip(2 * self.weights - share, 0, None)
            q = q / q.sum() if q.sum() > 0 else np.full(n_sets, 1 / n_sets)
            achieved = (share + q) / 2
            if not np.allclose(achieved, self.weights, atol=1e-6):
                warnings.warn(f"weights {self.weights.round(3).tolist()} cannot be reached with mixed batches "
                              f"every second step; the fractions will be {achieved.round(3).tolist()}")
        else:
            q = self.weights
        self.plain_weights = q
        self._step = 0
        self._cursors = [0] * n_sets
        self._perms: dict[int, tuple[int, np.ndarray]] = {}

    # -- the stream ------------------------------------------------------------------------------
    def _choices(self, step: int) -> np.ndarray:
        """Data set of each sample of batch ``step`` (the same on every rank)."""
        if self.mixed and step % 2 == 1:
            return self._pattern
        if len(self.lengths) == 1:
            return np.zeros(self.batch_size, np.int64)
        rng = np.random.default_rng([self.seed, step, 0x5EED])
        return rng.choice(len(self.lengths), size=self.batch_size, p=self.plain_weights)

    def _perm(self, d: int, epoch: int) -> np.ndarray:
        cached = self._perms.get(d)
        if cached is None or cached[0] != epoch:
            perm = np.random.default_rng([self.seed, d, epoch, 0xBA7C4]).permutation(self.lengths[d])
            self._perms[d] = cached = (epoch, perm)
        return cached[1]

    def _take(self, d: int) -> int:
        epoch, pos = divmod(self._cursors[d], self.local[d])
        self._cursors[d] += 1
        return int(self.offsets[d] + self._perm(d, epoch)[pos * self.world_size + self.rank])

    def _batch(self, step: int) -> list:
        out = []
        for j, d in enumerate(self._choices(step)):
            index = self._take(int(d))
            out.append((index, _mix(self.seed, step, self.rank, j)) if self.with_seeds else index)
        return out

    def __iter__(self):
        while self.num_batches is None or self._step < self.num_batches:
            batch = self._batch(self._step)
            self._step += 1
            yield batch

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("this MixingBatchSampler is endless (num_batches=None) and has no length")
        return max(0, self.num_batches - self._step)

    @property
    def step(self) -> int:
        return self._step

    # -- resuming ---------------------------------------------------------------------------------
    def _cursors_at(self, step: int) -> list[int]:
        counts = np.zeros(len(self.lengths), np.int64)
        for s in range(step):
            counts += np.bincount(self._choices(s), minlength=len(self.lengths))
        return counts.tolist()

    def state_dict(self, step: int | None = None) -> dict:
        """The position after ``step`` batches (default: after the batches yielded so far)."""
        cursors = list(self._cursors) if step is None or step == self._step else self._cursors_at(int(step))
        return {"step": self._step if step is None else int(step), "cursors": cursors, "seed": self.seed,
                "lengths": list(self.lengths), "batch_size": self.batch_size, "world_size": self.world_size,
                "rank": self.rank, "weights": self.weights.tolist(), "mixed": self.mixed}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where ``state`` was taken (same data sets, seed, batch size, ranks)."""
        for k in ("seed", "lengths", "batch_size", "world_size", "rank", "mixed"):
            mine = getattr(self, k)
            if state.get(k) != mine:
                raise ValueError(f"sampler state was saved with {k}={state.get(k)!r}, this sampler has {mine!r}")
        if not np.allclose(state["weights"], self.weights):
            raise ValueError(f"sampler state was saved with weights {state['weights']}")
        self._step = int(state["step"])
        self._cursors = [int(c) for c in state["cursors"]]
