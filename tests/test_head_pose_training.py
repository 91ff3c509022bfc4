"""train/train_head_pose.py on Accelerate: step-keyed batches, metrics, atomic checkpoints and an exact
resume after a kill (the same loss trajectory and the same weights as an uninterrupted run)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO, finish, metrics, start, two_speaker_clips


def _script():
    spec = importlib.util.spec_from_file_location("train_head_pose", REPO / "train" / "train_head_pose.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_batches_depend_on_seed_step_and_rank_only():
    StepBatches = _script().StepBatches
    whole = list(StepBatches(50, 4, 6, seed=1))
    later = StepBatches(50, 4, 6, seed=1)
    later.start = 3                                     # a run resumed after step 3
    assert list(later) == whole[3:] and len(later) == 3
    assert all(len(b) == 4 and all(0 <= i < 50 for i in b) for b in whole)
    assert len({tuple(b) for b in whole}) == 6
    assert list(StepBatches(50, 4, 6, seed=1, rank=1)) != whole
    assert list(StepBatches(50, 4, 6, seed=2)) != whole


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two short talking clips prepared at 32² (8 frames)."""
    pytest.importorskip("accelerate", reason="the training extras are not installed (pip install -e .[train])")
    return two_speaker_clips(tmp_path_factory.mktemp("head_pose"))


def _run(data, out, *extra, env=None):
    return start([sys.executable, str(REPO / "train" / "train_head_pose.py"), "--data", str(data), "--preset", "tiny",
                  "--steps", "6", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--lr", "1e-3",
                  "--checkpoint-every", "3", "--log-every", "1", "--out", str(out / "head_pose.safetensors"),
                  *extra], env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.slow          # three runs of the script: about half a minute on two CPU cores
def test_killed_run_resumes_to_the_same_losses_and_weights(data, tmp_path):
    from safetensors.torch import load_file

    whole, killed = map(finish, [_run(data, tmp_path / "whole"),
                                 _run(data, tmp_path / "killed", env={"EMOPORTRAITS_TEST_CRASH_AT_STEP": "4"})])
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert killed.returncode != 0 and not (tmp_path / "killed" / "head_pose.safetensors").exists()
    run_dir = tmp_path / "killed" / "head_pose_run"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-00000003"]
    resumed = finish(_run(data, tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 3" in resumed.stdout + resumed.stderr
    a = metrics(tmp_path / "whole" / "head_pose_run", "loss", "lr")
    b = metrics(run_dir, "loss", "lr")
    assert sorted(a) == list(range(1, 7)) and a == b          # step 4 ran twice; its last line counts
    assert all(np.isfinite(v).all() for v in a.values()) and a[6][1] < a[1][1]     # cosine decay
    wa, wb = (load_file(p / "head_pose.safetensors") for p in (tmp_path / "whole", tmp_path / "killed"))
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
    # a finished run resumes at its end (nothing to do); --fresh starts again
    again = finish(_run(data, tmp_path / "killed", "--fresh"))
    assert again.returncode == 0 and "resumed" not in again.stdout + again.stderr
    assert metrics(run_dir, "loss", "lr") == a
