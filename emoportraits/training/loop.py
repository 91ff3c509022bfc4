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
    # schedulers step once per optimisation step, whatever the number of processes: a run resumed on
    # another world size keeps its learning-rate curve (Accelerate's default steps them once per process)
    kwargs.setdefault("step_scheduler_with_optimizer", False)
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


class LogMean:
    """The logged numbers of one optimisation step: averaged over its micro-batches (gradient
    accumulation) and over all processes, so the metrics describe the whole batch, not rank 0's part."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, logs: dict) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1

    def reduce(self, accelerator) -> dict:
        """The mean over micro-batches and ranks (every rank must call it; keys are the same on all)."""
        keys = sorted(self.sums)
        local = torch.tensor([self.sums[k] / max(self.count, 1) for k in keys], dtype=torch.float64,
                             device=accelerator.device)
        if accelerator.num_processes > 1:
            local = accelerator.reduce(local, reduction="mean")
        self.sums, self.count = {}, 0
        return {k: float(v) for k, v in zip(keys, local.tolist())}


def unused_parameters(module: torch.nn.Module, forward) -> list[str]:
    """Trainable parameters of ``module`` that one ``forward(module)`` → loss, backward, leaves
    without a gradient (so DDP needs ``find_unused_parameters``). Gradients, buffers (e.g. a pose
    pool) and the global RNG are left as they were."""
    buffers = {k: v.detach().clone() for k, v in module.named_buffers()}
    with torch.random.fork_rng(devices=[]):
        forward(module).backward()
    unused = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    module.zero_grad(set_to_none=True)
    with torch.no_grad():
        for k, v in module.named_buffers():
            v.copy_(buffers[k])
    return unused


def configure_ddp(accelerator, module: torch.nn.Module, forward, setting="auto") -> bool:
    """Set DDP's ``find_unused_parameters`` before ``prepare``: on only where a network really skips
    parameters (``setting="auto"``: checked with one forward/backward of ``forward``), or as given."""
    from accelerate.utils import DistributedDataParallelKwargs

    if accelerator.num_processes == 1:
        return False
    if setting == "auto":
        unused = unused_parameters(module, forward)
        find = bool(unused)
        if unused:
            accelerator.print(f"DDP: {len(unused)} trainable parameter(s) get no gradient (e.g. {unused[0]}); "
                              f"find_unused_parameters on")
    else:
        find = bool(setting)
    accelerator.ddp_handler = DistributedDataParallelKwargs(find_unused_parameters=find)
    return find


def accumulated_update(accelerator, module, loss_fn, optimizer, clip_params=None, grad_clip: float = 0.0):
    """One micro-batch of gradient accumulation: ``loss_fn()`` → (loss, logs) under autocast, backward,
    gradient clipping on the synchronising micro-batch, optimiser step (Accelerate makes it a no-op
    until the accumulation is complete). Returns the logs."""
    with accelerator.accumulate(module):
        with accelerator.autocast():
            loss, logs = loss_fn()
        accelerator.backward(loss)
        if grad_clip and clip_params is not None and accelerator.sync_gradients:
            accelerator.clip_grad_norm_(clip_params, grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return logs


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


def report_digest_if_asked(accelerator, module: torch.nn.Module) -> None:
    """Tests: write every rank's parameter digest to ``$EMOPORTRAITS_TEST_DIGEST/rank-R.txt``, to check
    that the replicas of a distributed run ended identical."""
    folder = os.environ.get("EMOPORTRAITS_TEST_DIGEST")
    if folder:
        import hashlib

        h = hashlib.sha256()
        # parameters only: buffers such as the pose pool are per-rank state on purpose
        for name, p in sorted(accelerator.unwrap_model(module).named_parameters()):
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"rank-{accelerator.process_index}.txt").write_text(h.hexdigest())


def export_final(accelerator, model, out: Path, what: str) -> None:
    """Save ``model`` with ``save_pretrained`` to ``<output_dir>/final`` (main process) and end the run."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model.save_pretrained(out / "final")
        print(f"exported the {what} to {out / 'final'}")
    accelerator.end_training()
