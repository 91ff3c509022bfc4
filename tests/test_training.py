"""Training the main model: configuration, one iteration's losses, and real runs of
train/train_main.py through `accelerate launch` (one CPU process, two DDP processes, exact resume)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_model
from emoportraits import EmoPortraits, EmoPortraitsConfig
from emoportraits.cli import main as cli_main
from emoportraits.losses.config import LossWeights
from emoportraits.models.discriminator import MultiScalePatchDiscriminator
from emoportraits.training import GeneratorStep, TrainBatch, TrainConfig, discriminator_loss
from helpers import MEDIA, REPO

ACCELERATE = Path(sys.executable).with_name("accelerate")


def test_config_overrides_and_typos(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {preset: tiny}\ndata:\n  - {path: a}\noptim: {max_steps: 5}\n")
    cfg = TrainConfig.from_yaml(path, ["optim.max_steps=7", "data.0.path=b", "optim.betas=[0.9, 0.99]"])
    assert cfg.optim.max_steps == 7 and cfg.data[0].path == "b" and cfg.optim.betas == (0.9, 0.99)
    assert cfg.optim.lr_g == 2e-4 and cfg.optim.min_lr_d == 4e-6          # released defaults
    with pytest.raises(ValueError, match=r"config.optim: unknown keys \['max_step'\]"):
        TrainConfig.from_yaml(path, ["optim.max_step=3"])
    with pytest.raises(ValueError, match="no item 3"):
        TrainConfig.from_yaml(path, ["data.3.path=x"])
    cfg.save_yaml(tmp_path / "back.yaml")
    assert TrainConfig.from_yaml(tmp_path / "back.yaml") == cfg


def _batch(b=2, s=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    eye = torch.eye(4).repeat(b, 1, 1)
    return TrainBatch(r(b, 3, s, s), r(b, 3, s, s), torch.ones(b, 1, s, s), torch.ones(b, 1, s, s), eye, eye.clone(),
                      r(b, 3, s, s), torch.tensor([False, True])[:b])


def test_every_term_is_computed_and_differentiable():
    torch.manual_seed(0)
    model = make_model("tiny").train()
    step = GeneratorStep(model, LossWeights(l1=10.0, vgg19=0, vggface=0, gaze=0, eyes=0, mouth=0, ears=0), {})
    disc = MultiScalePatchDiscriminator(base_channels=8, max_channels=32).requires_grad_(False)
    total, logs, pred, target = step(_batch(), disc)
    total.backward()
    assert set(logs) == {"l1", "adversarial", "feature_matching", "cosface", "sdm", "canonical_volume", "generator"}
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert all(p.grad is None for p in disc.parameters())
    assert torch.isfinite(discriminator_loss(disc, target, pred))
    # the mixing branch's pose pool is a buffer, so checkpoints carry it
    assert int(step.pose_count) == 2 and "pose_pool" in step.state_dict()


def test_reconstruction_loss_goes_down_on_a_fixed_batch():
    torch.manual_seed(0)
    model = make_model("tiny").train()
    weights = LossWeights(l1=10.0, vgg19=0, vggface=0, gaze=0, eyes=0, mouth=0, ears=0, adversarial=0,
                          feature_matching=0, cosface=0)
    step = GeneratorStep(model, weights, {})
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    # self-reenactment of a smooth image: the model can learn to reproduce it
    y, x = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    image = torch.stack([x, y, (x + y) / 2])[None].repeat(2, 1, 1, 1)
    batch = _batch()
    batch.source = batch.driver = batch.driver_motion = image
    history = []
    for _ in range(30):
        total, logs, _, _ = step(batch, None)
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(logs["l1"])
    assert history[-1] < 0.4 * history[0], history


def test_green_target_and_feed_weighting():
    step = GeneratorStep(make_model("tiny"), LossWeights(), {})
    b = _batch()
    b.driver_mask = torch.zeros_like(b.driver_mask)
    target = step.target(b, green=True)
    assert torch.equal(target[:, 1], torch.ones_like(target[:, 1])) and target[:, [0, 2]].abs().max() == 0


# ---- real runs through `accelerate launch` ---------------------------------------------------------

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    pytest.importorskip("accelerate", reason="the training extras are not installed (pip install -e .[train])")
    videos = MEDIA / "driving"
    if not videos.is_dir():
        pytest.skip("../shared/media is not present")
    out = tmp_path_factory.mktemp("data") / "tiny"
    assert cli_main(["prepare-data", "--videos", str(videos), "--out", str(out), "--dataset-name", "voxceleb2",
                     "--resolution", "64", "--frames-per-clip", "12", "--stride", "3", "--quiet"]) == 0
    return out


def launch(prepared, out, *extra, processes=1, env=None):
    # several CPU processes: --multi_gpu (torchrun) with ACCELERATE_USE_CPU (gloo); `--cpu` would start one
    device = ["--cpu"] if processes == 1 else ["--multi_gpu"]
    env = dict(env or {}, **({} if processes == 1 else {"CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true"}))
    cmd = [str(ACCELERATE), "launch", *device, "--num_processes", str(processes), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
           str(REPO / "train" / "train_main.py"), "--config", str(REPO / "train" / "configs" / "tiny.yaml"),
           f"data.0.path={prepared}", f"log.output_dir={out}", "log.tracker=null", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=REPO)


def losses(out: Path) -> dict:
    rows = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows[r["step"]] = (r["generator"], r["discriminator"])   # a re-run step keeps its last value
    return rows


def test_killed_run_resumes_with_the_same_loss_trajectory(prepared, tmp_path):
    # the adversarial branch is off in tiny.yaml; switch it on so the discriminator's state resumes too
    args = ("optim.max_steps=8", "log.checkpoint_every=3", "losses.adversarial=1.0")
    whole = launch(prepared, tmp_path / "whole", *args)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = launch(prepared, tmp_path / "killed", *args, env={"EMOPORTRAITS_TEST_CRASH_AT_STEP": "5"})
    assert killed.returncode != 0
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == ["step-00000003"]
    resumed = launch(prepared, tmp_path / "killed", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr and "at step 3" in resumed.stdout + resumed.stderr
    assert losses(tmp_path / "whole") == losses(tmp_path / "killed")
    # the export loads and runs
    model = EmoPortraits.from_pretrained(tmp_path / "killed" / "final")
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 3, 64, 64)


def test_tiny_config_copies_the_source_not_the_training_identities(prepared, tmp_path):
    """Regression: with the old tiny config (pair jitter 0.3, a 3.1M-parameter discriminator with
    L_adv + 40·L_FM, cosface) the tiny generator memorised its few training identities and its output
    on a new face did not depend on the source. The config now jitters pairs strongly, trains
    without the discriminator, which train_main then skips entirely (nothing is computed for it), and
    uses a 16² volume (the preset's 8² cannot carry a 64² face)."""
    cfg = TrainConfig.from_yaml(REPO / "train" / "configs" / "tiny.yaml")
    assert cfg.data[0].pair_jitter >= 0.5
    assert cfg.losses["adversarial"] == 0 and cfg.losses["feature_matching"] == 0 and cfg.losses["cosface"] == 0
    run = launch(prepared, tmp_path / "run", "optim.max_steps=3", "log.checkpoint_every=3")
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["discriminator"] == 0.0 and "adversarial" not in r and r["l1"] > 0 for r in rows)
    exported = EmoPortraitsConfig.from_dict(json.loads((tmp_path / "run" / "final" / "config.json").read_text()))
    assert exported.image_size == 64 and exported.feature_size == 16


def test_two_process_ddp_training(prepared, tmp_path):
    run = launch(prepared, tmp_path / "ddp", "optim.max_steps=4", "log.checkpoint_every=2", processes=2,
                 env={"EMOPORTRAITS_TEST_DIGEST": str(tmp_path / "digests")})
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(losses(tmp_path / "ddp")) == [1, 2, 3, 4]
    # really two ranks (`--cpu` would have started one), ending with the same parameters
    digests = {p.name: p.read_text() for p in (tmp_path / "digests").iterdir()}
    assert sorted(digests) == ["rank-0.txt", "rank-1.txt"] and len(set(digests.values())) == 1
    assert (tmp_path / "ddp" / "final" / "model.safetensors").is_file()


def test_exported_model_runs_through_the_pipeline(prepared, tmp_path):
    run = launch(prepared, tmp_path / "run", "optim.max_steps=2", "log.checkpoint_every=2")
    assert run.returncode == 0, run.stderr[-3000:]
    portrait = MEDIA / "portraits" / "p03_man_east_asian_frontal_plain_bg.jpg"
    out = tmp_path / "out.png"
    assert cli_main(["reenact", "--source", str(portrait), "--driver", str(portrait), "--out", str(out),
                     "--model", str(tmp_path / "run" / "final"), "--device", "cpu", "--quiet"]) == 0
    assert out.is_file()
    shutil.rmtree(tmp_path / "run")
