"""Streaming the WebDataset shards of prepared folders: each rank and each DataLoader worker reads
only its own shards, sequentially, through a shuffle buffer of clips — no global index in memory.

    data = StreamingPairs([PairSource("data/vox", 0.75), PairSource("data/feed", 0.25)], batch_size=2,
                          rank=rank, world_size=world, num_workers=8, seed=0, resolution=512)
    loader = DataLoader(data, batch_size=None, num_workers=8)      # batches come whole, with their position

**Streams.** With R ranks and W workers (W = 1 without worker processes) there are S = R·W streams;
stream j = rank·W + worker. Per data set and epoch e the shard *units* are shuffled (seeded by seed
and e) and stream j reads units j, j+S, …. A unit is a shard, or — when a data set has fewer shards
than streams — every m-th clip of a shard (m = ⌈S / shards⌉), so every stream has data. A stream
reads its units in order, fills a buffer of ``buffer`` clips, then emits a random buffered clip for
every clip it reads (an epoch ends by draining the buffer). Each emitted clip gives one item (a
source/driver pair); all randomness of the item is seeded by (seed, data set, stream, epoch, count).

**Batches.** Batch s of a rank is made by worker s mod W; which data set each sample comes from
follows `MixingBatchSampler` (75/25 overall, every second batch mixed). Every batch carries
``_position``: the worker's stream states after it (epoch, unit cursor, byte offset in the shard,
the buffered clips as byte ranges, the RNG state) — a few hundred bytes.

**Resuming** (`StreamPosition`, registered for checkpointing; its state holds every rank's).
*Same world size and workers:* every stream is restored from its last consumed batch — it seeks to
its byte offset and rereads its buffered clips — so the run continues with exactly the batches
it would have seen. *Different world size (or workers):* the run continues at the same number of
samples seen (the step count carries on) with the shards reassigned: the data set's current epoch
goes on with the shards that no old stream had finished in it (a shard that was partly read is
read again from its start, the old buffers are dropped), spread over the new streams; later epochs
use the new layout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, default_collate, get_worker_info

from .parts import read_dataset
from .wds import iter_clips, read_clip_at

__all__ = ["PairSource", "ShardStream", "StreamingPairs", "StreamPosition"]


def _units(n_shards: int, n_streams: int, shards=None) -> list[list[int]]:
    """[shard, r, m] units: every shard, split into m clip-interleaved parts when shards are few."""
    shards = list(range(n_shards)) if shards is None else list(shards)
    m = max(1, math.ceil(n_streams / max(len(shards), 1)))
    return [[s, r, m] for s in shards for r in range(m)]


def epoch_units(seed: int, key: int, epoch: int, n_shards: int, stream: int, n_streams: int) -> list[list[int]]:
    """The units stream ``stream`` of ``n_streams`` reads in a regular epoch of data set ``key``."""
    units = _units(n_shards, n_streams)
    order = np.random.default_rng([seed, key, epoch, 0x5A4D]).permutation(len(units))
    return [units[k] for k in order[stream::n_streams]]


class ShardStream:
    """The clips of one stream of one data set, endless over epochs, with a snapshot of its position."""

    def __init__(self, root, shards: list[str], *, stream: int, n_streams: int, seed: int, buffer: int = 32,
                 key: int = 0):
        self.root, self.shards = root, shards
        self.stream, self.n_streams, self.seed, self.key = stream, n_streams, seed, key
        self.size = max(1, int(buffer))
        self.buffer: list = []
        self._source = None
        self._start_epoch(0)

    def _start_epoch(self, epoch: int, units=None) -> None:
        self.epoch = epoch
        self.units = epoch_units(self.seed, self.key, epoch, len(self.shards), self.stream, self.n_streams) \
            if units is None else units
        self.cursor, self.offset, self.ordinal, self.emitted, self.read = 0, 0, 0, 0, 0
        self.rng = np.random.default_rng([self.seed, self.key, self.stream, epoch, 0xB0F])
        self._source = None

    def _clips(self):
        """The clips of the units from the current (cursor, offset, ordinal) on."""
        while self.cursor < len(self.units):
            shard, r, m = self.units[self.cursor]
            with open(self.root / self.shards[shard], "rb") as f:
                f.seek(self.offset)
                for clip in iter_clips(f, self.offset, keep=lambda o: o % m == r, first_ordinal=self.ordinal):
                    self.offset, self.ordinal, clip.shard = clip.span[1], clip.ordinal + 1, shard
                    yield clip
            self.cursor, self.offset, self.ordinal = self.cursor + 1, 0, 0

    def next_clip(self):
        """The next clip of the stream (the buffer refilled from the shards first)."""
        for _ in range(3):
            if self._source is None:
                self._source = self._clips()
            for clip in self._source:
                self.read += 1
                self.buffer.append(clip)
                if len(self.buffer) >= self.size:
                    break
            if self.buffer:
                k = int(self.rng.integers(len(self.buffer)))
                self.buffer[k], self.buffer[-1] = self.buffer[-1], self.buffer[k]
                self.emitted += 1
                return self.buffer.pop()
            self._start_epoch(self.epoch + 1)
        raise RuntimeError(f"{self.root}: stream {self.stream} of {self.n_streams} found no clips in three epochs; "
                           f"the data set has too few clips for this many ranks × workers")

    # -- position ---------------------------------------------------------------------------------
    def state(self) -> dict:
        refs = [[c.shard, int(c.span[0]), int(c.span[1])] for c in self.buffer]
        return {"stream": self.stream, "n_streams": self.n_streams, "epoch": self.epoch, "units": self.units, "cursor": self.cursor, "offset": self.offset,
                "ordinal": self.ordinal, "emitted": self.emitted, "read": self.read, "buffer": refs,
                "rng": self.rng.bit_generator.state}

    def restore(self, st: dict) -> None:
        self.epoch, self.units = int(st["epoch"]), [list(u) for u in st["units"]]
        self.cursor, self.offset, self.ordinal = int(st["cursor"]), int(st["offset"]), int(st["ordinal"])
        self.emitted, self.read = int(st["emitted"]), int(st["read"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = st["rng"]
        self.buffer = []
        for shard, start, end in st["buffer"]:
            clip = read_clip_at(self.root / self.shards[shard], start, end)
            clip.shard = shard
            self.buffer.append(clip)
        self._source = None


# ---- batches of pairs -------------------------------------------------------------------------------

@dataclass
class PairSource:
    path: str
    weight: float = 1.0
    pair_jitter: float = 0.0
    dataset_id: int | None = None       # default: its position in pairs.KNOWN_DATASETS (FEED = 1)


class StreamingPairs(IterableDataset):
    """Endless batches (dicts of stacked tensors, as `PairDataset` items collated) for one rank,
    each with ``_position`` = {"role": worker role, "batch": the rank's batch number, "streams": …}."""

    def __init__(self, sources, *, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, buffer: int = 32, resolution: int | None = None, augment="default",
                 every_second_mixed: bool = True):
        from .augment import MotionAugment
        from .pairs import KNOWN_DATASETS, MixingBatchSampler

        self.sources = [s if isinstance(s, PairSource) else PairSource(*s) for s in sources]
        self.infos = [read_dataset(s.path) for s in self.sources]
        self.shards = [[sh["path"] for sh in info["shards"]] for info in self.infos]
        self.ids = [s.dataset_id if s.dataset_id is not None else
                    (KNOWN_DATASETS.index(i["dataset"]) if i["dataset"] in KNOWN_DATASETS else 0)
                    for s, i in zip(self.sources, self.infos)]
        self.identities = [{name: k for k, name in enumerate(i["identities"])} for i in self.infos]
        self.batch_size, self.seed, self.rank, self.world = int(batch_size), int(seed), int(rank), int(world_size)
        self.workers = max(1, int(num_workers))
        self.buffer, self.resolution = int(buffer), resolution
        self.augment = MotionAugment() if augment == "default" else augment
        # which data set each sample of batch s comes from: exactly the index sampler's choices
        self._mixer = MixingBatchSampler([world_size] * len(self.sources), [s.weight for s in self.sources],
                                         batch_size=batch_size, every_second_mixed=every_second_mixed,
                                         seed=seed, rank=rank, world_size=world_size)
        self._resume: dict | None = None      # set by StreamPosition.load_state_dict

    @property
    def layout(self) -> dict:
        return {"world": self.world, "workers": self.workers}

    def _streams(self, role: int, resume: dict | None) -> list[ShardStream]:
        S, j = self.world * self.workers, self.rank * self.workers + role
        streams = [ShardStream(self._root(d), self.shards[d], stream=j, n_streams=S, seed=self.seed,
                               buffer=self.buffer, key=d) for d in range(len(self.sources))]
        if resume is None:
            return streams
        if resume.get("streams") is not None:                   # same layout: exact
            for stream, st in zip(streams, resume["streams"]):
                stream.restore(st)
        elif resume.get("reassign") is not None:                # another layout: remaining shards
            for d, (stream, left) in enumerate(zip(streams, resume["reassign"])):
                epoch, remaining = left
                units = _units(len(self.shards[d]), S, remaining)
                order = np.random.default_rng([self.seed, d, epoch, len(remaining), 0x4EA5]).permutation(len(units))
                mine = [units[k] for k in order[j::S]]
                stream._start_epoch(epoch, mine if mine else [])
        return streams

    def _root(self, d: int):
        from pathlib import Path
        return Path(self.sources[d].path)

    def __iter__(self):
        info = get_worker_info()
        worker = 0 if info is None else info.id
        resume = self._resume or {}
        # after a resume the loader starts with worker 0, which must make the rank's next batch
        role = (worker + int(resume.get("next_batch", 0))) % self.workers
        streams = self._streams(role, (resume.get("roles") or {}).get(role))
        start = (resume.get("roles") or {}).get(role, {}).get("batch")
        s = role if start is None else int(start) + self.workers
        if start is None and resume.get("next_batch") is not None:
            first = int(resume["next_batch"])               # the first batch of this role not yet consumed
            s = first + (role - first) % self.workers
        while True:
            choices = self._mixer._choices(s)
            items = []
            for j, d in enumerate(choices):
                stream = streams[int(d)]
                clip = stream.next_clip()
                rng = np.random.default_rng([self.seed, int(d), stream.stream, stream.epoch, stream.emitted])
                items.append(self._item(clip, rng, int(d)))
            batch = default_collate(items)
            batch["_position"] = {"role": role, "batch": s, "streams": [st.state() for st in streams]}
            yield batch
            s += self.workers

    def _item(self, clip, rng, d: int) -> dict:
        from .pairs import make_pair

        item = make_pair(clip, rng, resolution=self.resolution, augment=self.augment,
                         pair_jitter=self.sources[d].pair_jitter)
        return dict(item, identity=self.identities[d].get(clip.info[0]["identity"], -1), dataset=self.ids[d])


# ---- the checkpointed position ------------------------------------------------------------------

class StreamPosition:
    """The data position for ``accelerator.register_for_checkpointing``: the stream states of every
    rank (gathered, since Accelerate saves custom state from the main process only) after the
    batches the training loop consumed. Call `consumed` with each batch's ``_position``."""

    def __init__(self, data: StreamingPairs, gather=None):
        self.data, self.gather = data, gather
        self.roles: dict[int, dict] = {}
        self.batches = 0

    def consumed(self, position: dict) -> None:
        self.roles[int(position["role"])] = {"batch": int(position["batch"]), "streams": position["streams"]}
        self.batches = int(position["batch"]) + 1

    def state_dict(self) -> dict:
        mine = {"rank": self.data.rank, "batches": self.batches, "roles": self.roles}
        ranks = self.gather([mine]) if self.gather is not None else [mine]
        return {"layout": self.data.layout, "batch_size": self.data.batch_size, "ranks": sorted(
            ranks, key=lambda r: r["rank"]), "samples_seen": sum(r["batches"] for r in ranks) * self.data.batch_size}

    def load_state_dict(self, state: dict) -> None:
        ranks = state["ranks"]
        self.batches = int(ranks[0]["batches"])            # every rank consumed the same number
        if state["layout"] == self.data.layout and len(ranks) == self.data.world:
            mine = ranks[self.data.rank]
            self.roles = {int(k): v for k, v in mine["roles"].items()}
            self.data._resume = {"next_batch": self.batches, "roles": self.roles}
            return
        self.roles = {}
        self.data._resume = {"next_batch": self.batches, "roles": {
            role: {"reassign": reassign(state, self.data.seed, [len(s) for s in self.data.shards])}
            for role in range(self.data.workers)}}


def reassign(state: dict, seed: int, n_shards: list[int]) -> list:
    """Per data set, (epoch, shards still to read in it) from the old streams' states: the oldest
    epoch any old stream is in, without the shards all of whose units old streams had finished
    (a stream already in a later epoch finished all of its units of that one)."""
    out = []
    for d, n in enumerate(n_shards):
        streams = [role["streams"][d] for r in state["ranks"] for role in r["roles"].values()]
        if not streams:
            out.append((0, list(range(n))))
            continue
        epoch = min(int(s["epoch"]) for s in streams)
        done: set[tuple] = set()
        for s in streams:
            if int(s["epoch"]) == epoch:
                done.update(tuple(u) for u in s["units"][:int(s["cursor"])])
            else:
                done.update(tuple(u) for u in epoch_units(seed, d, epoch, n, int(s["stream"]), int(s["n_streams"])))
        finished = {sh for sh, _, m in done if sum(1 for u in done if u[0] == sh) == m}
        left = [sh for sh in range(n) if sh not in finished]
        out.append((epoch, left) if left else (epoch + 1, list(range(n))))
    return out
