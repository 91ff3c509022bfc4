"""Training the speech encoder E_aud: prepared data with audio, aligned clip windows, and real runs of
train/train_speech.py through `accelerate launch` (export, exact resume)."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import REPO, finish, launch_command, metrics, prepare_speech_data, start, tiny_whisper


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    prepare_speech_data(root, resolution=64)
    from emoportraits import EmoPortraits, EmoPortraitsConfig
    torch.manual_seed(0)
    EmoPortraits(EmoPortraitsConfig.tiny()).save_pretrained(root / "main")
    whisper = tiny_whisper()
    whisper.save_pretrained(root / "whisper")
    return root


def test_prepared_audio_and_aligned_windows(setup):
    from emoportraits.audio import WhisperFeatures
    from emoportraits.audio import load_audio
    from emoportraits.data.clips import ClipStore
    from emoportraits.data.speech import SpeechClipDataset, collate_clips

    shards = ClipStore(setup / "data")
    assert len(shards) == 2 and shards.info.get("with_audio") is True
    for i in range(2):
        h = shards.header(i)
        assert h["audio_sample_rate"] == 16000 and h["audio"] and h["fps"] > 0
        assert np.all(np.diff(h["frame_indices"]) >= 1)
        # the frames' audio slices give the video's whole track back (int16 round trip)
        track = load_audio(setup / "videos" / h["source"], 16000)
        np.testing.assert_allclose(shards.read_audio(i), track, atol=1.0 / 32767)
    whisper = WhisperFeatures(setup / "whisper")
    data = SpeechClipDataset(shards, whisper, clip_frames=(10, 20), seed=3)
    assert len(data) == 2
    audio = data.read_audio(0)
    assert audio.dtype == np.float32 and np.abs(audio).max() <= 1.0
    for key in (0, 1, (0, 5), (1, 9)):
        item = data[key]
        T = item["images"].shape[0]
        assert 10 <= T <= 20
        assert item["images"].shape == (T, 3, 64, 64) and item["masks"].shape == (T, 1, 64, 64)
        assert item["thetas"].shape == (T, 4, 4) and item["audio"].shape == (T, 2, 32)
        assert item["frame_indices"].shape == (T,)
        again = data[key]                                        # deterministic given (index, seed)
        assert again["start"] == item["start"] and torch.equal(again["audio"], item["audio"])
    # the window's audio is the whole clip's aligned features at its source frames
    from emoportraits.audio import align_to_frames
    item = data[(0, 5)]
    full = align_to_frames(data.features(item["clip"]), int(item["frame_indices"].max()) + 1, item["fps"])
    assert torch.allclose(item["audio"], full[item["frame_indices"]])
    # short clips: all their frames
    whole = SpeechClipDataset(shards, whisper, clip_frames=(500, 600))
    assert whole[0]["images"].shape[0] == shards.n_frames[int(whole.clips[0])]
    batch = collate_clips([data[0], data[1]])
    T = batch["images"].shape[1]
    assert batch["audio"].shape == (2, T, 2, 32) and batch["thetas"].shape == (2, T, 4, 4)


def run(setup, out, *extra, env=None) -> subprocess.Popen:
    return start(launch_command(
        "train_speech.py", "speech_tiny.yaml", f"data.path={setup / 'data'}", f"model.main={setup / 'main'}",
        f"whisper.model={setup / 'whisper'}", f"log.output_dir={out}", "optim.max_steps=6", "log.checkpoint_every=3",
        "optim.teacher_forcing_steps=4", *extra), env)


def losses(out) -> dict:
    return metrics(out, "total", "teacher_ratio", "frames")


def test_training_runs_exports_and_resumes_exactly(setup, tmp_path):
    from emoportraits.models import SpeechEncoder

    # the uninterrupted run and the killed one side by side (most of a launch is start-up)
    procs = [run(setup, tmp_path / "whole"),
             run(setup, tmp_path / "killed", env={"EMOPORTRAITS_TEST_CRASH_AT_STEP": "4"})]
    whole, killed = map(finish, procs)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert whole.stderr.count("L_mouth") == 1 and whole.stderr.count("L_PCA") == 1   # losses off, said once
    assert killed.returncode != 0
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == ["step-00000003"]
    resumed = finish(run(setup, tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 3" in resumed.stdout + resumed.stderr
    a, b = losses(tmp_path / "whole"), losses(tmp_path / "killed")
    assert sorted(a) == list(range(1, 7)) and a == b
    assert [a[s][1] for s in (1, 3, 5)] == [1.0, 0.5, 0.0]          # teacher forcing 1 → 0 over 4 steps
    speech = SpeechEncoder.from_pretrained(tmp_path / "killed" / "final")
    assert speech.config.z_dim == 16 and speech.config.audio_dim == 32
    with torch.no_grad():
        z = speech(torch.zeros(1, 16), torch.zeros(1, 5, 2, 32))
    assert z.shape == (1, 5, 16)


def test_every_loss_term_with_a_basis_and_a_parser():
    """In-process: L_PCA and L_mouth (random PCA basis, random parser) are computed and reach E_aud."""
    import importlib.util

    from emoportraits import EmoPortraits, EmoPortraitsConfig
    from emoportraits.losses.pca import fit_pca
    from emoportraits.models import SpeechEncoder, SpeechEncoderConfig

    spec = importlib.util.spec_from_file_location("train_speech", REPO / "train" / "train_speech.py")
    ts = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("train_speech", ts)     # dataclasses look their module up
    spec.loader.exec_module(ts)
    torch.manual_seed(0)
    main = EmoPortraits(EmoPortraitsConfig.tiny()).eval().requires_grad_(False)
    speech = SpeechEncoder(SpeechEncoderConfig.tiny())
    parser = torch.nn.Conv2d(3, 19, 3, padding=1).requires_grad_(False)
    nets = {"vggface": None, "parser": parser, "pca": fit_pca(torch.randn(64, 16), n_components=8)}
    step = ts.SpeechStep(speech, main, nets, ts.LossSection(vggface=0.0), render_frames=3)
    T = 5
    batch = {"images": torch.rand(2, T, 3, 64, 64), "masks": torch.ones(2, T, 1, 64, 64),
             "thetas": torch.eye(4).repeat(2, T, 1, 1), "audio": torch.randn(2, T, 2, 32)}
    total, logs = step(batch, 0.5)
    total.backward()
    assert {"latent_l1", "pca", "idt_l1", "mouth_bce", "mouth_l1", "total"} <= set(logs)
    assert all(np.isfinite(v) for v in logs.values())
    assert all(p.grad is not None for p in speech.parameters())
    assert all(p.grad is None for p in main.parameters())
    assert ts.teacher_ratio(0, 4) == 1.0 and ts.teacher_ratio(2, 4) == 0.5 and ts.teacher_ratio(9, 4) == 0.0
