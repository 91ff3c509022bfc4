"""Named inspection points inside the model.

The forward code calls ``record("name", tensor)`` at the boundaries the paper (and the authors'
code) talks about: e_s, the aligned expression crop, z, the warp fields, the canonical volume, ...
Normally that is a no-op. Inside ``with capture() as tensors:`` every recorded tensor lands in
the dict, keyed ``<scope>.<name>`` (the scopes are ``src``, ``drv`` and ``hpr.src``/``hpr.drv``),
which is how the parity test compares us with the authors' numbers and how a user can look inside.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch

_store: contextvars.ContextVar[dict | None] = contextvars.ContextVar("emoportraits_trace", default=None)
_scope: contextvars.ContextVar[str] = contextvars.ContextVar("emoportraits_trace_scope", default="")


def record(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Store ``tensor`` under the current scope when a capture is active; returns it unchanged."""
    store = _store.get()
    if store is not None:
        prefix = _scope.get()
        store[f"{prefix}.{name}" if prefix else name] = tensor.detach()
    return tensor


def is_capturing() -> bool:
    return _store.get() is not None


@contextlib.contextmanager
def capture() -> Iterator[dict[str, torch.Tensor]]:
    """Collect every recorded tensor in the returned dict while the block runs."""
    token = _store.set({})
    try:
        yield _store.get()
    finally:
        _store.reset(token)


@contextlib.contextmanager
def scope(name: str) -> Iterator[None]:
    """Prefix the names recorded inside the block (nested scopes join with '.')."""
    outer = _scope.get()
    token = _scope.set(f"{outer}.{name}" if outer else name)
    try:
        yield
    finally:
        _scope.reset(token)
