"""Fine-tuning from a released-format model (``train_main.py --init-from``, ``--freeze``): fill-rule
weights under the official names, converted as `emoportraits download` converts them, then trained
one step on a small synthetic prepared set. The frozen modules keep their weights, the rest moves."""
from __future__ import annotations

import subprocess

import pytest
import torch

from emoportraits import EmoPortraits, convert
from helpers import ACCELERATE, REPO
from test_stream import synthetic_set


def finetune_one_step(tmp_path, preset: str, *extra):
    pytest.importorskip("accelerate", reason="the training extras are not installed (pip install -e .[train])")
    from release_fixture import official_state_dicts

    generator, head_pose = official_state_dicts(preset)
    convert.model_from_official(generator, head_pose, preset=preset).save_pretrained(tmp_path / "init")
    synthetic_set(tmp_path / "data", clips=4, frames=3)
    cmd = [str(ACCELERATE), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1", str(REPO / "train" / "train_main.py"),
           "--config", str(REPO / "train" / "configs" / "tiny.yaml"), "--init-from", str(tmp_path / "init"),
           "--freeze", "[motion, identity_encoder]", f"data.0.path={tmp_path / 'data'}",
           f"log.output_dir={tmp_path / 'run'}", "log.tracker=null", "optim.max_steps=1", "log.checkpoint_every=1",
           *extra]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    before = EmoPortraits.from_pretrained(tmp_path / "init").state_dict()
    after = EmoPortraits.from_pretrained(tmp_path / "run" / "final").state_dict()
    assert before.keys() == after.keys()
    frozen = ("expression_encoder.", "warp_embedding.", "warp_to_canonical.", "warp_to_driver.", "identity_encoder.",
              "head_pose_net.")
    moved = []
    for name, value in before.items():
        if name.startswith(frozen):
            assert torch.equal(value, after[name]), f"{name} is frozen but changed"
        elif value.is_floating_point() and not torch.equal(value, after[name]):
            moved.append(name.split(".")[0])
    assert {"appearance_encoder", "canonical_unet", "decoder"} <= set(moved)


def test_finetune_a_small_preset_from_released_format_weights(tmp_path):
    finetune_one_step(tmp_path, "tiny")


@pytest.mark.slow            # the 172 M-parameter released preset at 512², one step on the CPU
def test_finetune_the_released_preset_from_fill_rule_weights(tmp_path):
    finetune_one_step(tmp_path, "released", "optim.batch_size=1")


def test_unknown_frozen_module_is_a_one_line_error(tmp_path):
    from emoportraits.errors import EmoPortraitsError
    from emoportraits.training.finetune import apply_freeze
    from conftest import make_model

    with pytest.raises(EmoPortraitsError, match="known: .*motion"):
        apply_freeze(make_model("tiny"), ["mouth"])
