"""Overlapping windows for sequence models that only take a fixed length (the Whisper encoder, the
pose generator): where the windows start, and the trapezoidal weights that crossfade them.

With a hop of ``length // 2``, a window's first and last ``length / 8`` frames weigh 0 (they lack
context on one side), the next ``length / 4`` ramp linearly to 1 and the middle weighs 1; the ramps
of neighbouring windows are complementary, so consecutive windows crossfade instead of meeting at
a seam. The outer edge of the first / last window weighs 1 (nothing else covers it).
"""
from __future__ import annotations

import torch


def window_weights(length: int, first: bool, last: bool) -> torch.Tensor:
    """(length,) float64 blending weights of one window."""
    pos = torch.arange(length, dtype=torch.float64) + 0.5
    margin, ramp = length / 8, length / 4
    up = ((pos - margin) / ramp).clamp(0, 1)
    down = ((length - pos - margin) / ramp).clamp(0, 1)
    if first:
        up = torch.ones_like(up)
    if last:
        down = torch.ones_like(down)
    return torch.minimum(up, down)


def window_starts(n: int, window: int) -> list[int]:
    """First frames of the windows covering n frames (hop window // 2, the last one flush with the end)."""
    if n <= window:
        return [0]
    hop = window // 2
    return sorted(set(list(range(0, n - window, hop)) + [n - window]))
