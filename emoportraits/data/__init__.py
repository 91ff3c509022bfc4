"""Training data for the main model: videos → sharded crops/masks/head-pose labels → training pairs.

* `prepare` — ``emoportraits prepare-data``: detect, track, crop (exactly as at inference), mask and
  label the frames of a folder of videos, into resumable, parallel-written shards.
* `shards` — the storage format (`ShardWriter`) and its lazy reader (`ShardDataset`).
* `pose_labels` — raw9 head-pose pseudo-labels from the face mesh; the canonical face template.
* `pairs` — `PairDataset` (source/driver pairs of one clip), `FrameDataset`, `MixedDataset` and the
  `MixingBatchSampler` (75 % VoxCeleb2 / 25 % FEED, mixed batches every second step, resumable, DDP).
* `augment` — `MotionAugment`: elastic warp + colour jitter of E_motion's driver input.

Submodules import torch / the media stack only when used.
"""
from __future__ import annotations

import importlib

__all__ = ["ShardDataset", "ShardWriter", "PairDataset", "FrameDataset", "MixedDataset", "MixingBatchSampler",
           "MotionAugment", "prepare_dataset", "build_index", "fit_pose", "estimate_template", "default_template"]

_WHERE = {"ShardDataset": "shards", "ShardWriter": "shards", "PairDataset": "pairs", "FrameDataset": "pairs",
          "MixedDataset": "pairs", "MixingBatchSampler": "pairs", "MotionAugment": "augment",
          "prepare_dataset": "prepare", "build_index": "prepare", "fit_pose": "pose_labels",
          "estimate_template": "pose_labels", "default_template": "pose_labels"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
