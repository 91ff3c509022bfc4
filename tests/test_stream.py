"""The streaming loader: each rank/worker reads only its own shards, exact resume from a checkpointed
position, resume on another world size (shards reassigned, finished shards not read again), and the
loader's throughput against the old random-access one (slow)."""
from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import DataLoader

from emoportraits.data.parts import finish_part, merge, part_dir
from emoportraits.data.shards import encode_jpeg, encode_png, write_json_atomic
from emoportraits.data.stream import PairSource, StreamingPairs, StreamPosition
from emoportraits.data.wds import SampleWriter

CLIPS, FRAMES = 24, 4


def synthetic_set(root, clips=CLIPS, frames=FRAMES, shard_bytes=20_000):
    """A prepared folder of ``clips`` tiny clips (8×8, frame value = clip*16 + frame) over several shards."""
    from emoportraits.data.pose_labels import default_template, template_digest

    part = (1, 1)
    part_dir(root, part).mkdir(parents=True)
    t = default_template()
    settings = {"dataset": "voxceleb2", "resolution": 8, "frames_per_clip": frames, "stride": 1, "crop_scale": 2.2,
                "smooth": 0.5, "template": t.tolist(), "template_digest": template_digest(t)}
    write_json_atomic(part_dir(root, part) / "prepare.json", settings)
    records = {}
    with SampleWriter(root, "p1of1-synth", shard_bytes,
                      on_commit=lambda s, r: records.update({x["key"]: dict(x, path=x["key"]) for x in r})) as w:
        for c in range(clips):
            images = [encode_jpeg(np.full((8, 8, 3), c * 8 + f, np.uint8), quality=100) for f in range(frames)]
            masks = [encode_png(np.ones((8, 8), np.float32))] * frames
            lm = np.tile(t[None], (frames, 1, 1))
            meta = {"dataset": "voxceleb2", "identity": f"id{c % 5}", "video": f"v{c}", "fps": 25.0,
                    "frame_indices": list(range(frames))}
            w.add_clip(f"id{c % 5}/v{c}/{c:03d}", images, masks, np.tile([1, 1, 1, 0, 0, 0, 0, 0, 0], (frames, 1)),
                       lm, meta, extra={"status": "ok", "identity": f"id{c % 5}"})
    for r in records.values():
        r["path"] = r["key"]
    finish_part(root, part, records, settings)
    return merge(root)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    index = synthetic_set(root)
    assert len(index["shards"]) >= 4          # several shards: streams get whole shards
    return root


def make(root, rank=0, world=1, workers=0, buffer=4, batch=2):
    return StreamingPairs([PairSource(str(root))], batch_size=batch, seed=3, rank=rank, world_size=world,
                          num_workers=workers, buffer=buffer, augment=None)


def clip_ids(batch) -> list[int]:
    """The clip of every sample: its source frame's value // 8 (frames are constant images)."""
    return [int(round(float(x.mean()) * 255)) // 8 for x in batch["source"]]


def take(data, n, position=None, workers=0):
    loader = DataLoader(data, batch_size=None, num_workers=workers)
    out = []
    for batch in loader:
        if position is not None:
            position.consumed(batch.pop("_position"))
        out.append((clip_ids(batch), batch["frames"].tolist()))
        if len(out) == n:
            break
    return out


def test_each_stream_reads_its_own_shards_and_an_epoch_sees_every_clip(synth):
    streams = []
    for rank in range(2):
        data = make(synth, rank=rank, world=2, workers=2)
        seen = {}
        for batch in take(data, 6, workers=2):       # 2 ranks × 6 batches × 2 = one epoch of 24 clips
            for c in batch[0]:
                seen[c] = seen.get(c, 0) + 1
        streams.append(seen)
    assert not set(streams[0]) & set(streams[1])                     # ranks read disjoint clips
    assert sorted(set(streams[0]) | set(streams[1])) == list(range(CLIPS))
    assert all(v == 1 for s in streams for v in s.values())


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_with_the_same_layout_is_exact(synth, workers):
    whole = take(make(synth, workers=workers), 20, workers=workers)
    data = make(synth, workers=workers)
    pos = StreamPosition(data)
    head = take(data, 7, pos, workers=workers)
    state = pos.state_dict()
    again = make(synth, workers=workers)
    StreamPosition(again).load_state_dict(state)
    tail = take(again, 13, workers=workers)
    assert head + tail == whole
    assert state["samples_seen"] == 7 * 2


def test_resume_on_another_world_size_reassigns_the_unread_shards(synth):
    """Two ranks, then one: the epoch goes on with the shards no old stream had finished; the
    finished ones come back only in the next epoch."""
    ranks = [make(synth, rank=r, world=2) for r in range(2)]
    positions = [StreamPosition(d) for d in ranks]
    seen_before = set()
    for d, p in zip(ranks, positions):
        for ids, _ in take(d, 3, p):
            seen_before.update(ids)
    states = [p.state_dict() for p in positions]
    state = dict(states[0], ranks=[s["ranks"][0] for s in states], samples_seen=12)
    finished = {u[0] for r in state["ranks"] for role in r["roles"].values() for s in role["streams"]
                for u in s["units"][:s["cursor"]]}
    one = make(synth, world=1)
    pos = StreamPosition(one)
    pos.load_state_dict(state)
    assert pos.batches == 3                     # the step count carries on
    rest = [c for ids, _ in take(one, 12, pos) for c in ids]
    shards = [p["path"] for p in one.infos[0]["shards"]]
    from emoportraits.data.clips import scan_shard
    clips_of = {i: {int(k.rsplit("/", 1)[1]) for k, *_ in scan_shard(synth / shards[i])} for i in range(len(shards))}
    done_clips = set().union(*(clips_of[i] for i in finished)) if finished else set()
    remaining = set(range(CLIPS)) - done_clips
    first_epoch = rest[:len(remaining)]
    assert finished and set(first_epoch) == remaining     # exactly the unfinished shards' clips, once each
    assert len(first_epoch) == len(set(first_epoch))


def test_item_randomness_is_reproducible(synth):
    a = take(make(synth), 4)
    b = take(make(synth), 4)
    assert a == b
    assert all(f0 != f1 for _, frames in a for f0, f1 in frames)         # two different frames per pair


# ---- the speech/pose trainings' draw-numbered sampler ----------------------------------------------

def test_clip_sampler_resumes_exactly_and_on_another_world_size():
    from emoportraits.data.sampling import ClipSampler, DrawPosition

    def run(world, batches, state=None):
        """Per rank, the first ``batches`` batches (after resuming from ``state``) and the position."""
        samplers = [ClipSampler(7, 3, seed=1, rank=r, world_size=world) for r in range(world)]
        positions = [DrawPosition(s) for s in samplers]
        if state is not None:
            for p in positions:
                p.load_state_dict(state)
        out = []
        for s, p in zip(samplers, positions):
            it = iter(s)
            out.append([next(it) for _ in range(batches)])
            p.used += batches
        return out, positions[0].state_dict()

    whole, _ = run(2, 10)
    head, state = run(2, 4)
    tail, _ = run(2, 6, state)
    assert [h + t for h, t in zip(head, tail)] == whole                      # same world size: exact
    draws = lambda ranks: sorted(d for rank in ranks for batch in rank for _, d in batch)  # noqa: E731
    assert state["draws"] == 4 * 2 * 3
    one, _ = run(1, 12, state)                                                 # one rank goes on from draw 24
    assert draws(one) == list(range(24, 60)) and draws(head) == list(range(24))
    # every epoch (7 draws) visits every clip once
    keys = sorted((d, c) for rank in whole for batch in rank for c, d in batch)
    for e in range(len(keys) // 7):
        assert sorted(c for _, c in keys[7 * e:7 * e + 7]) == list(range(7))
