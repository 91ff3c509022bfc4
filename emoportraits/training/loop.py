"""The run plumbing the training scripts in train/ share: the Accelerator, resuming, the metrics file,
checkpoints, the test crash hook and the final export. Each script keeps its own losses and updates."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


def make_accelerator(cfg, **kwargs):
    """An Accelerator logging to ``cfg.log`` (tracker, ``<output_dir>/logs``), then the seed set on
    every process; returns it with the output folder."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    out = Path(cfg.log.output_dir)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, log_with=cfg.log.tracker,
                              project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
                              **kwargs)
    set_seed(cfg.seed, device_specific=True)
    return accelerator, out


def begin_run(accelerator, cfg, out: Path, project: str, tracker_config: dict) -> int:
    """Resume from the newest complete checkpoint (the step to continue from, 0 if none), write the
    run's config.yaml and start the tracker. Call after ``prepare`` and ``register_for_checkpointing``."""
    step = 0
    resume = latest_checkpoint(out)
    if resume is not None:
        step = load_checkpoint(accelerator, resume)
        accelerator.print(f"resumed from {resume} at step {step}")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save_yaml(out / "config.yaml")
    if cfg.log.tracker:
        accelerator.init_trackers(project, config=tracker_config)
    return step


def to_device(raw: dict, device) -> dict:
    """A collated batch on the device (``fps`` stays where it is: bookkeeping, not model input)."""
    return {k: (v.to(device) if isinstance(v, torch.Tensor) and k != "fps" else v) for k, v in raw.items()}


def append_metrics(accelerator, out: Path, step: int, logs: dict) -> None:
    """One line of ``metrics.jsonl`` per step, by the main process."""
    if accelerator.is_main_process:
        with (out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, **logs}) + "\n")


def log_to_tracker(accelerator, cfg, step: int, logs: dict) -> None:
    if cfg.log.tracker and step % cfg.log.log_every == 0:
        accelerator.log(logs, step=step)


def checkpoint_if_due(accelerator, cfg, out: Path, step: int, max_steps: int, force: bool = False) -> None:
    """Every ``log.checkpoint_every`` steps, at the last step, or when ``force`` (e.g. out of time)."""
    if step % cfg.log.checkpoint_every == 0 or step == max_steps or force:
        save_checkpoint(accelerator, out, step, keep=cfg.log.keep_checkpoints)


def crash_step() -> int:
    """Tests: the step after which to simulate a kill (EMOPORTRAITS_TEST_CRASH_AT_STEP; 0 = never)."""
    return int(os.environ.get("EMOPORTRAITS_TEST_CRASH_AT_STEP", "0"))


def crash_if_asked(step: int, crash_at: int) -> None:
    if crash_at and step == crash_at:
        os._exit(3)          # no cleanup, like a killed process


def export_final(accelerator, model, out: Path, what: str) -> None:
    """Save ``model`` with ``save_pretrained`` to ``<output_dir>/final`` (main process) and end the run."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model.save_pretrained(out / "final")
        print(f"exported the {what} to {out / 'final'}")
    accelerator.end_training()
