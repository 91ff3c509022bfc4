"""Atomic, resumable training checkpoints on top of ``Accelerator.save_state``.

A checkpoint is ``<output_dir>/checkpoints/step-00001000/``: Accelerate's state (models,
optimisers, schedulers, every process's RNG states and registered objects such as the data
sampler and the EMA) plus ``trainer_state.json`` (the step). It is written as ``….tmp`` and renamed
only when complete, so a run killed while saving resumes from the previous checkpoint.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

_NAME = re.compile(r"^step-(\d{8})$")


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (``.tmp`` leftovers of an interrupted save are ignored)."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return None
    done = sorted(p for p in root.iterdir() if _NAME.match(p.name) and (p / "trainer_state.json").is_file())
    return done[-1] if done else None


def save_checkpoint(accelerator, output_dir: str | Path, step: int, keep: int = 3) -> Path:
    """Save on every process (Accelerate needs all ranks), publish atomically on the main one."""
    root = checkpoint_dir(output_dir)
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(p for p in root.iterdir() if _NAME.match(p.name))[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: str | Path) -> int:
    """Restore everything ``save_checkpoint`` saved; returns the step to continue from."""
    path = Path(path)
    accelerator.load_state(str(path))
    return int(json.loads((path / "trainer_state.json").read_text())["step"])
