"""Training data for the main model: videos → sharded crops/masks/head-pose labels → training pairs.

* `prepare` — ``emoportraits prepare-data``: detect, track, crop (exactly as at inference), mask and
  label the frames of a folder of videos, into resumable, parallel-written shards (``--part I/N``
  splits it over machines; `parts` merges them into ``dataset.json``).
* `wds` — the shard format: WebDataset tar files, one sample per frame (`SampleWriter`, `iter_clips`).
* `stream` — `StreamingPairs`: each rank/worker streams its own shards through a shuffle buffer; its
  position (`StreamPosition`) is checkpointed and resumes exactly, or on another world size.
* `clips` — `ClipStore`: clip i by number (small data sets, tools); `shards` — the old (v1) layout,
  read only to convert it (``prepare-data --convert``).
* `pose_labels` — raw9 head-pose pseudo-labels from the face mesh; the canonical face template.
* `pairs` — `PairDataset` (source/driver pairs of one clip), `FrameDataset`, `MixedDataset` and the
  `MixingBatchSampler` (75 % VoxCeleb2 / 25 % FEED, mixed batches every second step, resumable, DDP).
* `augment` — `MotionAugment`: elastic warp + colour jitter of E_motion's driver input.

Submodules import torch / the media stack only when used.
"""
from __future__ import annotations

import importlib

__all__ = ["ShardDataset", "ShardWriter", "PairDataset", "FrameDataset", "MixedDataset", "MixingBatchSampler",
           "MotionAugment", "prepare_dataset", "merge", "fit_pose", "estimate_template", "default_template",
           "ClipStore", "StreamingPairs", "StreamPosition", "SampleWriter"]

_WHERE = {"ShardDataset": "shards", "ShardWriter": "shards", "PairDataset": "pairs", "FrameDataset": "pairs",
          "MixedDataset": "pairs", "MixingBatchSampler": "pairs", "MotionAugment": "augment",
          "ClipStore": "clips", "StreamingPairs": "stream", "StreamPosition": "stream", "SampleWriter": "wds",
          "prepare_dataset": "prepare", "merge": "parts", "fit_pose": "pose_labels",
          "estimate_template": "pose_labels", "default_template": "pose_labels"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
