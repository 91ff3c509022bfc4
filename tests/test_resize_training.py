"""Resume on another world size, end to end, for train_speech.py, train_pose.py and train_head_pose.py:
a run of two CPU processes (gloo) is killed after its checkpoint at step 3, and the same command on one
process goes on from step 3 to the last step. Speech and pose count their data position in draws over
all ranks (emoportraits.data.sampling), so the resumed run continues at the very draw where the two
processes stopped; the head-pose batches are functions of (seed, step, rank)."""
from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from helpers import (ACCELERATE, REPO, finish, launch_command, metrics, prepare_speech_data, start, tiny_whisper,
                     two_speaker_clips)

CPU_DDP = {"CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
CRASH = {"EMOPORTRAITS_TEST_CRASH_AT_STEP": "4"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes(command: list[str]) -> list[str]:
    """``launch_command``'s one CPU process turned into two processes on one machine (gloo)."""
    assert command[:5] == [str(ACCELERATE), "launch", "--cpu", "--num_processes", "1"]
    return [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--main_process_ip", "127.0.0.1",
            "--main_process_port", str(_free_port()), *command[5:]]


def position(checkpoint) -> dict:
    """The checkpointed DrawPosition (Accelerate's first registered custom object)."""
    return torch.load(checkpoint / "custom_checkpoint_0.pkl", weights_only=False)


def resize_and_resume(command, out, keys, says_two: str | None = None):
    """Two processes killed after step 4 (checkpoint at 3), then one process to step 6."""
    killed = finish(start(two_processes(command), env={**CPU_DDP, **CRASH}))
    assert killed.returncode != 0
    if says_two is not None:
        assert says_two in killed.stdout + killed.stderr, killed.stderr[-3000:]
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000003"], killed.stderr[-3000:]
    before = metrics(out, *keys)
    assert sorted(before) == [1, 2, 3, 4]
    resumed = finish(start(command, env={"CUDA_VISIBLE_DEVICES": ""}))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 3" in resumed.stdout + resumed.stderr
    after = metrics(out, *keys)
    assert sorted(after) == list(range(1, 7))
    assert all(after[s] == before[s] for s in (1, 2, 3))          # the checkpointed steps are kept
    assert all(np.isfinite(v).all() for v in after.values())
    return after


def check_draws(out, batch_size):
    """Two processes used 2·B draws a step up to step 3; one process goes on at that very draw, B a step."""
    ckpts = out / "checkpoints"
    at3, at6 = position(ckpts / "step-00000003"), position(ckpts / "step-00000006")
    assert at3["world_size"] == 2 and at6["world_size"] == 1
    per_step = at3["draws"] // 3
    assert at3["draws"] == 3 * per_step and per_step % (2 * batch_size) == 0
    assert at6["draws"] == at3["draws"] + 3 * per_step // 2


@pytest.fixture(scope="module")
def speech_setup(tmp_path_factory):
    pytest.importorskip("accelerate", reason="the training extras are not installed (pip install -e .[train])")
    root = tmp_path_factory.mktemp("speech_resize")
    prepare_speech_data(root, resolution=64)
    from emoportraits import EmoPortraits, EmoPortraitsConfig
    torch.manual_seed(0)
    EmoPortraits(EmoPortraitsConfig.tiny()).save_pretrained(root / "main")
    tiny_whisper().save_pretrained(root / "whisper")
    return root


def test_speech_resumes_on_one_process_at_the_same_draw(speech_setup, tmp_path):
    setup, out = speech_setup, tmp_path / "run"
    command = launch_command(
        "train_speech.py", "speech_tiny.yaml", f"data.path={setup / 'data'}", f"model.main={setup / 'main'}",
        f"whisper.model={setup / 'whisper'}", f"log.output_dir={out}", "optim.max_steps=6",
        "log.checkpoint_every=3", "optim.teacher_forcing_steps=4", "optim.batch_size=1")
    rows = resize_and_resume(command, out, ("total", "teacher_ratio", "frames"))
    assert [rows[s][1] for s in (1, 3, 5)] == [1.0, 0.5, 0.0]     # the schedule is per step, not per process
    check_draws(out, batch_size=1)
    assert (out / "final" / "config.json").is_file()


def test_pose_resumes_on_one_process_at_the_same_draw(speech_setup, tmp_path):
    setup, out = speech_setup, tmp_path / "run"
    command = launch_command(
        "train_pose.py", "pose_tiny.yaml", f"data.path={setup / 'data'}", f"whisper.model={setup / 'whisper'}",
        f"log.output_dir={out}", "optim.max_steps=6", "log.checkpoint_every=3", "optim.batch_size=2",
        "data.clip_frames=[10, 16]", "data.segment=[0.0, 0.8]", "log.tracker=null")
    resize_and_resume(command, out, ("g_total", "d_total", "gp_local", "gp_global", "frames"))
    check_draws(out, batch_size=2)
    assert (out / "final" / "config.json").is_file()


@pytest.fixture(scope="module")
def head_pose_data(tmp_path_factory):
    """Two short talking clips prepared at 32² (8 frames)."""
    pytest.importorskip("accelerate", reason="the training extras are not installed (pip install -e .[train])")
    return two_speaker_clips(tmp_path_factory.mktemp("head_pose_resize"))


def test_head_pose_resumes_on_one_process(head_pose_data, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    one = [str(ACCELERATE), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
           str(REPO / "train" / "train_head_pose.py"), "--data", str(head_pose_data), "--preset", "tiny",
           "--steps", "6", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--lr", "1e-3",
           "--checkpoint-every", "3", "--log-every", "1", "--out", str(out / "head_pose.safetensors")]
    rows = resize_and_resume(one, out / "head_pose_run", ("loss", "lr"), says_two="× 2 process(es)")
    assert rows[6][1] < rows[1][1]                                   # the cosine schedule went on per step
    weights = load_file(out / "head_pose.safetensors")
    assert weights and all(torch.isfinite(v.float()).all() for v in weights.values())
