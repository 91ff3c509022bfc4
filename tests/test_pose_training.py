"""Training the head-pose generator: pose windows with aligned audio from prepared data, and real runs
of train/train_pose.py through `accelerate launch` (export, TensorBoard, exact resume)."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import REPO, finish, launch_command, metrics, prepare_speech_data, start, tiny_whisper

IDENTITY = torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0, 0])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pose")
    prepare_speech_data(root, resolution=32)
    tiny_whisper().save_pretrained(root / "whisper")
    return root


def test_pose_windows_with_aligned_audio(setup):
    from emoportraits.audio import WhisperFeatures, align_to_frames
    from emoportraits.data.pose_clips import PoseClipDataset, collate_pose_clips
    from emoportraits.data.clips import ClipStore as ShardDataset
    from emoportraits.models.geometry import pose9_from_raw9, pose9_to_matrix

    shards = ShardDataset(setup / "data")
    data = PoseClipDataset(shards, WhisperFeatures(setup / "whisper"), clip_frames=(10, 20), seed=3)
    assert len(data) == 2
    for key in (0, 1, (0, 5), (1, 9)):
        item = data[key]
        T = item["poses"].shape[0]
        assert 10 <= T <= 20 and item["motion"].shape == (T, 9) and item["audio"].shape == (T, 2, 32)
        assert torch.allclose(item["motion"][0], IDENTITY, atol=1e-6)                 # motion since frame 0
        p = pose9_to_matrix(pose9_from_raw9(item["poses"]))
        assert torch.allclose(pose9_to_matrix(item["motion"]), torch.linalg.inv(p[:1]) @ p, atol=1e-5)
        full = align_to_frames(data.features(item["clip"]), int(item["frame_indices"].max()) + 1, item["fps"])
        assert torch.allclose(item["audio"], full[item["frame_indices"]])
        assert data[key]["start"] == item["start"]                                   # deterministic
    # a segment keeps every window inside its part of the clips
    tail = PoseClipDataset(shards, data.whisper, clip_frames=(5, 8), segment=(0.75, 1.0))
    for i in range(len(tail)):
        first, end = tail.segment_range(int(tail.clips[i]))
        assert first == round(0.75 * shards.n_frames[int(tail.clips[i])])
        for draw in range(5):
            item = tail[(i, draw)]
            assert first <= item["start"] and item["start"] + item["poses"].shape[0] <= end
    with pytest.raises(ValueError, match="segment"):
        PoseClipDataset(shards, data.whisper, segment=(0.5, 0.5))
    batch = collate_pose_clips([data[0], data[1]])
    T = batch["motion"].shape[1]
    assert batch["audio"].shape == (2, T, 2, 32) and batch["poses"].shape == (2, T, 9)


def run(setup, out, *extra, env=None) -> subprocess.Popen:
    return start(launch_command(
        "train_pose.py", "pose_tiny.yaml", f"data.path={setup / 'data'}", f"whisper.model={setup / 'whisper'}",
        f"log.output_dir={out}", "optim.max_steps=6", "log.checkpoint_every=3", "optim.batch_size=2",
        "data.clip_frames=[10, 16]", "data.segment=[0.0, 0.8]", *extra), env)


def losses(out) -> dict:
    return metrics(out, "g_total", "d_total", "gp_local", "gp_global", "frames")


@pytest.mark.slow          # three `accelerate launch` runs: about a minute and a half on two CPU cores
def test_training_runs_exports_and_resumes_exactly(setup, tmp_path):
    from emoportraits.models import PoseGenerator

    # the uninterrupted run (with TensorBoard) and the killed one side by side (start-up dominates)
    procs = [run(setup, tmp_path / "whole"),
             run(setup, tmp_path / "killed", "log.tracker=null", env={"EMOPORTRAITS_TEST_CRASH_AT_STEP": "4"})]
    whole, killed = map(finish, procs)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert killed.returncode != 0
    assert list((tmp_path / "whole" / "logs").rglob("events.out.tfevents.*")), "no TensorBoard events"
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == ["step-00000003"]
    resumed = finish(run(setup, tmp_path / "killed", "log.tracker=null"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 3" in resumed.stdout + resumed.stderr
    a, b = losses(tmp_path / "whole"), losses(tmp_path / "killed")
    assert sorted(a) == list(range(1, 7)) and a == b
    assert all(np.isfinite(v).all() for v in a.values())
    gen = PoseGenerator.from_pretrained(tmp_path / "killed" / "final")
    assert gen.config.audio_dim == 32 and gen.config.window == 32
    with torch.no_grad():
        x = gen(torch.zeros(1, 40, 2, 32), temperature=0.0)
    assert x.shape == (1, 40, 9)


def test_bad_configuration_is_one_line(setup, tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "train" / "train_pose.py"), "--config",
                          str(REPO / "train" / "configs" / "pose_tiny.yaml"), "optim.typo=1"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 2 and "unknown keys ['typo']" in res.stderr and "Traceback" not in res.stderr
