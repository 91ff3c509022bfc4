"""Exceptions with messages that say what went wrong and what to do about it."""
from __future__ import annotations


class EmoPortraitsError(Exception):
    """Base class of the package's own errors."""


class WeightsMismatchError(EmoPortraitsError, RuntimeError):
    """A checkpoint's tensors do not match the model: missing, unexpected or wrongly shaped keys."""

    def __init__(self, source: str, missing=(), unexpected=(), wrong_shape=(), layout: str | None = None):
        self.missing, self.unexpected, self.wrong_shape = list(missing), list(unexpected), list(wrong_shape)
        parts = []
        if self.missing:
            parts.append(f"missing keys {_short(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys {_short(self.unexpected)}")
        if self.wrong_shape:
            parts.append("wrong shapes " + _short([f"{k}: {a} != {b}" for k, a, b in self.wrong_shape]))
        # the hint: the key layout the module expects (a foreign network's file), else the usual cause
        hint = f"Expected layout: {layout}" if layout else "Was it saved for another configuration (config.json) or edited?"
        super().__init__(f"{source} does not match the model: " + "; ".join(parts) + ". " + hint)


def _short(items: list, limit: int = 12) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    more = f" … and {len(items) - limit} more" if len(items) > limit else ""
    return f"[{shown}{more}]"


class MediaError(EmoPortraitsError, ValueError):
    """An input image, video or audio cannot be used (unreadable, no face, bad option)."""


class DownloadError(EmoPortraitsError):
    """A download failed. ``resumable``: the partial file was kept and the next call continues it."""

    def __init__(self, message: str, resumable: bool = False):
        super().__init__(message)
        self.resumable = resumable
