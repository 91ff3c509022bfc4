"""Two machines simulated on 127.0.0.1: two `accelerate launch` processes (--num_machines 2, machine
ranks 0 and 1, gloo on the CPU) train the tiny preset, end with identical parameters on both ranks,
resume exactly after a kill, and resume on one process (another world size)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from emoportraits.cli import main as cli_main
from helpers import ACCELERATE, MEDIA, REPO

CPU_DDP = {"CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true"}   # torchrun + gloo on the CPU


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    pytest.importorskip("accelerate", reason="the training extras are not installed (pip install -e .[train])")
    if not (MEDIA / "driving").is_dir():
        pytest.skip("../shared/media is not present")
    out = tmp_path_factory.mktemp("data") / "tiny"
    assert cli_main(["prepare-data", "--videos", str(MEDIA / "driving"), "--out", str(out), "--dataset-name",
                     "voxceleb2", "--resolution", "64", "--frames-per-clip", "12", "--stride", "3", "--quiet"]) == 0
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(prepared, out, extra):
    return [str(REPO / "train" / "train_main.py"), "--config", str(REPO / "train" / "configs" / "tiny.yaml"),
            f"data.0.path={prepared}", f"log.output_dir={out}", "log.tracker=null", *extra]


def two_machines(prepared, out, *extra, env=None):
    """One `accelerate launch` per simulated machine; returns both results."""
    port = _free_port()
    procs = []
    for machine in (0, 1):
        cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_machines", "2", "--num_processes", "2",
               "--machine_rank", str(machine), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
               "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
               *_args(prepared, out, extra)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                      env={**os.environ, **CPU_DDP, **(env or {})}))
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return results


def one_process(prepared, out, *extra):
    cmd = [str(ACCELERATE), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1", *_args(prepared, out, extra)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)


def losses(out: Path) -> dict:
    rows = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows[r["step"]] = r["generator"]          # a re-run step keeps its last value
    return rows


def digests(folder: Path) -> dict:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_two_machines_on_localhost_end_with_identical_parameters(prepared, tmp_path):
    runs = two_machines(prepared, tmp_path / "run", "optim.max_steps=2", "log.checkpoint_every=2",
                        env={"EMOPORTRAITS_TEST_DIGEST": str(tmp_path / "d")})
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-3000:] + runs[1].stderr[-3000:]
    d = digests(tmp_path / "d")
    assert sorted(d) == ["rank-0.txt", "rank-1.txt"] and len(set(d.values())) == 1
    assert sorted(losses(tmp_path / "run")) == [1, 2]
    state = (tmp_path / "run" / "checkpoints" / "step-00000002")
    assert (state / "trainer_state.json").is_file() and (tmp_path / "run" / "final" / "model.safetensors").is_file()


@pytest.mark.slow          # ~2 minutes on 2 CPU cores: four runs of two processes and one of one
def test_two_machines_on_localhost_train_identically_and_resume(prepared, tmp_path):
    args = ("optim.max_steps=4", "log.checkpoint_every=2")
    whole = two_machines(prepared, tmp_path / "whole", *args, env={"EMOPORTRAITS_TEST_DIGEST": str(tmp_path / "dw")})
    assert all(r.returncode == 0 for r in whole), whole[0].stderr[-3000:] + whole[1].stderr[-3000:]
    d = digests(tmp_path / "dw")
    assert sorted(d) == ["rank-0.txt", "rank-1.txt"] and len(set(d.values())) == 1   # identical replicas

    killed = two_machines(prepared, tmp_path / "killed", *args, env={"EMOPORTRAITS_TEST_CRASH_AT_STEP": "3"})
    assert all(r.returncode != 0 for r in killed)
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == ["step-00000002"]
    shutil.copytree(tmp_path / "killed", tmp_path / "resized")
    resumed = two_machines(prepared, tmp_path / "killed", *args, env={"EMOPORTRAITS_TEST_DIGEST": str(tmp_path / "dr")})
    assert all(r.returncode == 0 for r in resumed), resumed[0].stderr[-3000:]
    assert "at step 2" in resumed[0].stdout + resumed[0].stderr
    assert losses(tmp_path / "killed") == losses(tmp_path / "whole")          # exactly the same run
    assert digests(tmp_path / "dr") == d

    # the same checkpoint on one process: it goes on from step 2 with the shards reassigned
    single = one_process(prepared, tmp_path / "resized", *args)
    assert single.returncode == 0, single.stderr[-3000:]
    assert "at step 2" in single.stdout + single.stderr
    rows = losses(tmp_path / "resized")
    assert sorted(rows) == [1, 2, 3, 4] and rows[2] == losses(tmp_path / "whole")[2]
    assert (tmp_path / "resized" / "final" / "model.safetensors").is_file()
