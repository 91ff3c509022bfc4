"""Draw-numbered batches of clip windows for the speech and pose trainings (random access to a
small prepared set, `ClipStore`), resumable exactly and on another world size.

Draw d (counted over all ranks) takes clip perm_e[d mod n] of epoch e = d // n, a fresh permutation
per epoch. The run's position is the number of draws consumed, D. From a position D0, batch s of
rank r of W holds draws D0 + (s·W + r)·bs … + bs − 1; after s batches per rank the position is
D0 + s·W·bs. So a run resumed with the same world size makes exactly the batches it would have
made, and one resumed with another world size continues with draw D: every clip window is drawn
once, no draw is repeated or skipped.
"""
from __future__ import annotations

import numpy as np
from torch.utils.data import Sampler

__all__ = ["ClipSampler", "DrawPosition"]


class ClipSampler(Sampler):
    """Endless batches of (clip, draw) keys for rank ``rank`` of ``world_size``; ``start(D0)`` sets the
    position (draws consumed so far, over all ranks)."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if n < 1:
            raise ValueError("ClipSampler needs at least one clip")
        self.n, self.bs, self.seed, self.rank, self.world = n, batch_size, seed, rank, world_size
        self.base = 0
        self._cache: tuple[int, np.ndarray] | None = None

    def start(self, draws: int) -> None:
        self.base = int(draws)

    def _perm(self, epoch: int) -> np.ndarray:
        # one permutation per epoch, kept while draws stay in it (not rebuilt per item)
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, np.random.default_rng([self.seed, 7, epoch]).permutation(self.n))
        return self._cache[1]

    def batch(self, s: int) -> list:
        first = self.base + (s * self.world + self.rank) * self.bs
        return [(int(self._perm(d // self.n)[d % self.n]), d) for d in range(first, first + self.bs)]

    def __iter__(self):
        s = 0
        while True:
            yield self.batch(s)
            s += 1

    def draws_after(self, batches: int) -> int:
        """The position after ``batches`` batches per rank."""
        return self.base + batches * self.world * self.bs


class DrawPosition:
    """Checkpointed data position: the draws consumed over all ranks (the same number on every rank,
    so the main process's copy is everyone's)."""

    def __init__(self, sampler: ClipSampler):
        self.sampler, self.used = sampler, 0

    def state_dict(self) -> dict:
        return {"draws": self.sampler.draws_after(self.used), "world_size": self.sampler.world,
                "batch_size": self.sampler.bs}

    def load_state_dict(self, state: dict) -> None:
        if "draws" not in state:                       # a checkpoint of the old sampler (one layout only)
            raise ValueError("this checkpoint's data position predates world-size-independent positions; "
                             "start a new output folder")
        self.sampler.start(int(state["draws"]))
        self.used = 0
