"""`emoportraits poses`, `speak --pose generated` and the `generate_poses` helper (tiny random models
saved into a temporary model bundle)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from emoportraits.cli import main as cli_main
from emoportraits.errors import EmoPortraitsError
from emoportraits.models import PoseGenerator, PoseGeneratorConfig
from emoportraits.poses import PoseSequence, generate_poses
from helpers import A01, P03, REPO, save_speech_models, shared_media, write_wav


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("posecli")
    save_speech_models(root / "full", root / "full" / "speech", root / "full" / "whisper")
    torch.manual_seed(0)
    pose = PoseGenerator(PoseGeneratorConfig.tiny())
    with torch.no_grad():
        pose.head[-1].weight.normal_(0, 0.05)                 # visible motion from a random model
    pose.save_pretrained(root / "full" / "pose")
    save_speech_models(root / "nopose", root / "nopose" / "speech")   # a bundle without pose/ and whisper/
    return root


def run_cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emoportraits", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_poses_command_writes_json_npy_and_a_plot(bundle, tmp_path):
    audio = shared_media(A01)
    res = run_cli("poses", "--audio", audio, "--out", tmp_path / "p.json", "--plot", tmp_path / "p.png",
                  "--model", bundle / "full", "--seed", 3)
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads((tmp_path / "p.json").read_text())
    T = data["frames"]
    assert data["fps"] == 25.0 and abs(T - 2.98 * 25) <= 1
    r = np.asarray(data["rotation"])
    assert r.shape == (T, 3, 3) and np.allclose(r[0], np.eye(3), atol=1e-5)
    assert np.allclose(r.transpose(0, 2, 1) @ r, np.eye(3), atol=1e-4) and np.allclose(np.linalg.det(r), 1, atol=1e-4)
    assert np.asarray(data["yaw_pitch_roll_deg"]).shape == (T, 3) and np.asarray(data["translation"]).shape == (T, 3)
    assert np.abs(np.diff(np.asarray(data["yaw_pitch_roll_deg"]), axis=0)).max() > 0      # it moves
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same seed gives the same poses, as .npy too (in-process: the same generator)
    seq = PoseSequence.load(tmp_path / "p.json")
    again = generate_poses(PoseGenerator.from_pretrained(bundle / "full" / "pose"), str(bundle / "full" / "whisper"),
                           audio, seed=3)
    assert np.allclose(again.pose9, seq.pose9, atol=1e-5)
    assert cli_main(["poses", "--audio", str(audio), "--out", str(tmp_path / "p.npy"), "--model",
                     str(bundle / "full"), "--seed", "3", "--fps", "30"]) == 0
    x9 = np.load(tmp_path / "p.npy")
    assert x9.shape == (round(2.98 * 30), 9) and x9.dtype == np.float32


def test_poses_command_errors_are_one_line(bundle, tmp_path, capsys):
    audio = shared_media(A01)
    cases = ((("--out", tmp_path / "p.csv", "--model", bundle / "full"), "use .json or .npy"),
             (("--out", tmp_path / "p.json", "--model", bundle / "nopose"), "has no head-pose generator (pose/ folder)"),
             (("--out", tmp_path / "p.json", "--model", bundle / "full", "--pose-model", tmp_path / "none"),
              "--pose-model"),
             (("--out", tmp_path / "p.json", "--model", bundle / "full", "--plot", tmp_path / "p.jpg"), "PNG"),
             (("--out", tmp_path / "p.json", "--pose-model", bundle / "full" / "pose", "--whisper",
               bundle / "full" / "whisper", "--temperature", "-1"), "temperature"))
    for extra, message in cases:
        assert cli_main(["poses", "--audio", str(audio), *map(str, extra)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


def test_speak_with_generated_head_motion(bundle, tmp_path):
    """Every part (speech, pose, whisper) from the bundle given by --model."""
    from emoportraits.media import probe_video

    out = tmp_path / "talk.mp4"
    assert cli_main(["speak", "--source", str(shared_media(P03)), "--audio", str(shared_media(A01)), "--out", str(out),
                     "--model", str(bundle / "full"), "--pose", "generated", "--seed", "1", "--device", "cpu",
                     "--max-frames", "8", "--quiet", "--min-motion", "0"]) == 0   # a few frames: rendering is slow
    info = probe_video(out)
    assert info.has_audio and info.n_frames == 8


@pytest.mark.slow          # the whole audio through a fresh process (about a minute on two CPU cores)
def test_speak_with_generated_head_motion_in_a_subprocess(bundle, tmp_path):
    from emoportraits.media import probe_video

    out = tmp_path / "talk.mp4"
    res = run_cli("speak", "--source", shared_media(P03), "--audio", shared_media(A01), "--out", out, "--model",
                  bundle / "full", "--pose", "generated", "--seed", 1, "--temperature", 0.5, "--fps", 30,
                  "--device", "cpu", "--quiet", "--min-motion", 0)
    assert res.returncode == 0, res.stderr[-2000:]
    info = probe_video(out)
    assert info.has_audio and info.fps == 30 and abs(info.n_frames - round(2.98 * 30)) <= 1


def test_speak_generated_without_a_pose_model(bundle, tmp_path, capsys):
    args = ["speak", "--source", str(shared_media(P03)), "--audio", str(shared_media(A01)), "--out",
            str(tmp_path / "o.mp4"), "--model", str(bundle / "nopose"), "--pose", "generated", "--device", "cpu",
            "--quiet", "--whisper", str(bundle / "full" / "whisper")]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "has no head-pose generator (pose/ folder); pass --pose-model" in err and "Traceback" not in err
    assert cli_main(args[:-2]) == 2                               # and no whisper/ either
    assert "has no Whisper encoder (whisper/ folder); pass --whisper" in capsys.readouterr().err


def test_generated_poses_move_the_source_relative_to_its_own_pose(bundle, tmp_path):
    from emoportraits.models.geometry import theta_from_raw9

    pose = PoseGenerator.from_pretrained(bundle / "full" / "pose")
    wav = write_wav(tmp_path / "tone.wav", 1.0)
    seq = generate_poses(pose, str(bundle / "full" / "whisper"), wav, fps=25.0, seed=0)
    assert len(seq) == 25 and seq.fps == 25.0
    theta_s = theta_from_raw9(torch.tensor([[0.9, 0.9, 0.9, 0.1, -0.2, 0.05, 0.01, -0.2, 0.0]]))
    thetas = seq.theta(theta_s)
    assert thetas.shape == (25, 4, 4) and torch.allclose(thetas[0], theta_s[0], atol=1e-5)
    # the motion is undone by the source's inverse: inv(θ_s)·θ_t = M_t, a rigid transform
    m = torch.linalg.inv(theta_s) @ thetas
    assert torch.allclose(m[:, :3, :3].transpose(1, 2) @ m[:, :3, :3], torch.eye(3).expand(25, 3, 3), atol=1e-4)
    # temperature 0 ignores the seed; a temperature > 0 with two seeds differs
    a, b = (generate_poses(pose, str(bundle / "full" / "whisper"), wav, seed=s, temperature=0.0) for s in (1, 2))
    assert np.array_equal(a.pose9, b.pose9)
    c, d = (generate_poses(pose, str(bundle / "full" / "whisper"), wav, seed=s, temperature=2.0) for s in (1, 2))
    assert not np.allclose(c.pose9, d.pose9)
    # files
    for suffix in (".json", ".npy"):
        back = PoseSequence.load(seq.save(tmp_path / f"s{suffix}"))
        assert np.allclose(back.pose9, seq.pose9, atol=1e-5) and np.allclose(back.angles, seq.angles, atol=1e-3)
    with pytest.raises(EmoPortraitsError, match="use .json or .npy"):
        seq.save(tmp_path / "s.txt")
    assert seq.plot(tmp_path / "s.png").stat().st_size > 1000
