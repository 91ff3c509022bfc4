"""Generated head poses start from the portrait's own head pose (the bundled demo model, whose pose
generator was trained with ``initial_pose``): `EmoPortraitsPipeline.source_pose9` / `initial_pose_for`,
``speak`` with generated poses, ``emoportraits poses --source`` and the app's pose tab."""
import dataclasses

import numpy as np
import pytest
import torch

from emoportraits.bundle import DEFAULT_MODEL
from emoportraits.cli import main as cli_main
from emoportraits.models import PoseGenerator, PoseGeneratorConfig, SpeechEncoder
from emoportraits.models.geometry import pose9_from_raw9, pose9_to_rigid
from emoportraits.poses import PoseSequence, generate_poses
from helpers import A01, P03, shared_media, write_wav

P05 = "portraits/p05_man_beard_three_quarter_view.jpg"       # a head turned well away from the camera


def rotation_deg(x9: torch.Tensor, y9: torch.Tensor | None = None) -> float:
    """Geodesic angle (degrees) of pose ``x9``'s rotation, or between the rotations of ``x9`` and ``y9``."""
    r, _ = pose9_to_rigid(x9)
    if y9 is not None:
        r = pose9_to_rigid(y9)[0].transpose(-1, -2) @ r
    return float(torch.rad2deg(torch.arccos(((r.diagonal().sum() - 1) / 2).clamp(-1, 1))))


def label_pose9(image: np.ndarray) -> torch.Tensor:
    """The head-pose label of the photo's largest face, computed as ``prepare-data`` labels a training
    frame (face mesh in the 2.2× inference crop fitted to the template) — what the generator saw as P_0."""
    from emoportraits.data.pose_labels import fit_pose, landmarks_to_crop
    from emoportraits.media.crop import square_crop_box
    from emoportraits.media.faces import FaceDetector

    face = FaceDetector().detect(image)[0]
    box = square_crop_box(face, (image.shape[1], image.shape[0]), 2.2)
    return pose9_from_raw9(torch.from_numpy(fit_pose(landmarks_to_crop(face.landmarks, box))))


@pytest.fixture(scope="module")
def demo():
    from emoportraits.pipelines import EmoPortraitsPipeline

    if not (DEFAULT_MODEL / "pose").is_dir():
        pytest.skip("the bundled demo model is absent")
    pipe = EmoPortraitsPipeline.from_pretrained(DEFAULT_MODEL, device="cpu")
    pose = PoseGenerator.from_pretrained(DEFAULT_MODEL / "pose").eval()
    assert pose.config.initial_pose                       # what these tests are about
    return pipe, pose


@pytest.fixture(scope="module")
def portraits(demo):
    from emoportraits.media.image import load_image

    pipe, _ = demo
    images = {name: load_image(shared_media(name)) for name in (P03, P05)}
    return {name: (image, pipe.prepare_source(image)) for name, image in images.items()}


def test_source_pose_is_the_portraits_label_pose(demo, portraits):
    pipe, pose_model = demo
    for name, (image, src) in portraits.items():
        got = pipe.source_pose9(src)
        assert got.shape == (9,) and got.dtype == torch.float32
        assert torch.allclose(got, label_pose9(image), atol=1e-4), name
        assert torch.equal(pipe.initial_pose_for(src, pose_model), got)
    # the convention: a frontal face is near the identity, a three-quarter view turned well away
    assert rotation_deg(pipe.source_pose9(portraits[P03][1])) < 15
    assert rotation_deg(pipe.source_pose9(portraits[P05][1])) > 35


def test_without_a_mesh_the_head_pose_network_on_the_crop_estimates_it(demo, portraits):
    pipe, _ = demo
    for name, (_, src) in portraits.items():
        bare = dataclasses.replace(src, landmarks=None)
        with torch.no_grad():
            raw = pipe.model.head_pose_net.raw(pipe._to_tensor(src.crop[None]))[0]
        got = pipe.source_pose9(bare)
        assert torch.allclose(got, pose9_from_raw9(raw), atol=1e-5), name
        # the demo's 64² network is a rough estimate of the label, but the same convention
        assert rotation_deg(got, pipe.source_pose9(src)) < 25, name


def test_a_pose_model_without_the_input_gets_no_initial_pose(demo, portraits):
    pipe, _ = demo
    assert pipe.initial_pose_for(portraits[P03][1], PoseGenerator(PoseGeneratorConfig.tiny())) is None


def test_the_initial_pose_conditions_the_motion(demo, portraits, tmp_path):
    pipe, pose_model = demo
    wav = shared_media(A01)
    whisper = str(DEFAULT_MODEL / "whisper")
    turned = pipe.source_pose9(portraits[P05][1])
    free = generate_poses(pose_model, whisper, wav, seed=0)
    started = generate_poses(pose_model, whisper, wav, seed=0, initial_pose=turned)
    assert len(free) == len(started) and np.allclose(started.rotation[0], np.eye(3), atol=1e-5)
    assert np.abs(started.pose9 - free.pose9).max() > 1e-3        # the start changes the motion
    frontal = generate_poses(pose_model, whisper, wav, seed=0, initial_pose=torch.tensor(
        [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]))
    assert np.allclose(frontal.pose9, free.pose9, atol=1e-5)      # None means a frontal, centred head


def test_speak_generates_from_the_portraits_pose_and_starts_at_its_theta(demo, portraits, tmp_path, monkeypatch):
    import emoportraits.poses as poses_module
    from emoportraits.media import probe_video

    pipe, pose_model = demo
    image, src = portraits[P05]
    passed, thetas = [], []

    def recording_generate_poses(*args, **kwargs):
        passed.append(kwargs.get("initial_pose"))
        return generate_poses(*args, **kwargs)

    sequence_theta = PoseSequence.theta

    def recording_theta(sequence, theta_source):         # the per-frame poses the video is rendered with
        thetas.append(sequence_theta(sequence, theta_source))
        return thetas[-1]

    monkeypatch.setattr(poses_module, "generate_poses", recording_generate_poses)
    monkeypatch.setattr(poses_module.PoseSequence, "theta", recording_theta)
    speech = SpeechEncoder.from_pretrained(DEFAULT_MODEL / "speech")
    out = pipe.speak(image, shared_media(A01), tmp_path / "talk.mp4", speech_model=speech,
                     whisper=str(DEFAULT_MODEL / "whisper"), pose="generated", pose_model=pose_model, pose_seed=0,
                     progress=False, max_frames=3, min_motion=0)
    assert probe_video(out).n_frames == 3
    assert len(passed) == 1 and torch.allclose(passed[0], label_pose9(image), atol=1e-4)
    assert len(thetas) == 1 and thetas[0].shape == (3, 4, 4)
    assert torch.allclose(thetas[0][0], src.avatar.theta[0], atol=1e-5)        # frame 0: the portrait's θ_s
    assert not torch.allclose(thetas[0][2], src.avatar.theta[0], atol=1e-5)    # then it moves


def test_poses_command_with_a_source(demo, portraits, tmp_path):
    pipe, pose_model = demo
    wav = str(shared_media(A01))
    base = ["poses", "--audio", wav, "--model", str(DEFAULT_MODEL), "--seed", "3", "--device", "cpu"]
    assert cli_main([*base, "--out", str(tmp_path / "free.json")]) == 0
    assert cli_main([*base, "--out", str(tmp_path / "p05.json"), "--source", str(shared_media(P05))]) == 0
    free, p05 = (PoseSequence.load(tmp_path / f"{n}.json") for n in ("free", "p05"))
    assert len(free) == len(p05) and np.abs(p05.pose9 - free.pose9).max() > 1e-3
    expected = generate_poses(pose_model, str(DEFAULT_MODEL / "whisper"), wav, seed=3,
                              initial_pose=pipe.source_pose9(portraits[P05][1]))
    assert np.allclose(p05.pose9, expected.pose9, atol=1e-5)


def test_poses_command_bad_sources_are_one_line_errors(demo, tmp_path, capsys):
    from emoportraits.media.image import save_image

    faceless = save_image(np.full((96, 128, 3), 180, np.uint8), tmp_path / "wall.png")
    wav = str(shared_media(A01))
    cases = ((tmp_path / "missing.jpg", "missing.jpg"), (faceless, "no face"),
             (write_wav(tmp_path / "tone.wav", 0.2), "tone.wav"))
    for source, message in cases:
        code = cli_main(["poses", "--audio", wav, "--out", str(tmp_path / "p.json"), "--model", str(DEFAULT_MODEL),
                         "--source", str(source), "--device", "cpu"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "p.json").exists()


def test_poses_command_source_with_a_model_trained_without_it(demo, tmp_path, capsys):
    torch.manual_seed(0)
    PoseGenerator(PoseGeneratorConfig(audio_dim=64, hidden=32, num_layers=1, num_heads=2, ffn_dim=64, res_blocks=1,
                                      kernel_size=3, noise_dim=4, window=32)).save_pretrained(tmp_path / "plain")
    assert cli_main(["poses", "--audio", str(shared_media(A01)), "--out", str(tmp_path / "p.npy"), "--model",
                     str(DEFAULT_MODEL), "--pose-model", str(tmp_path / "plain"), "--source",
                     str(shared_media(P05))]) == 0
    assert "not trained with an initial head pose" in capsys.readouterr().err
    assert np.load(tmp_path / "p.npy").shape[1] == 9


def test_app_pose_tab_starts_from_the_portrait(demo, portraits, tmp_path):
    from emoportraits.app.handlers import Handlers
    from emoportraits.app.loading import AppModels, Limits

    pipe, pose_model = demo
    models = AppModels(name="demo", pipeline=pipe, speech=None, pose=pose_model,
                       whisper=str(DEFAULT_MODEL / "whisper"), missing={})
    handlers = Handlers(models, Limits(), tmp_path / "work")
    wav = str(shared_media(A01))
    _, files, video, message = handlers.poses(wav, str(shared_media(P05)), 4, 1.0, False,
                                              progress=lambda *a, **k: None)
    got = PoseSequence.load(next(f for f in files if f.endswith(".json")))
    expected = generate_poses(pose_model, str(DEFAULT_MODEL / "whisper"), wav, seed=4,
                              initial_pose=pipe.source_pose9(portraits[P05][1]))
    assert video is None and "starting from the portrait's head pose" in message
    assert np.allclose(got.pose9, expected.pose9, atol=1e-5)
    _, files, _, message = handlers.poses(wav, None, 4, 1.0, False, progress=lambda *a, **k: None)
    free = PoseSequence.load(next(f for f in files if f.endswith(".json")))
    assert "portrait" not in message and np.abs(free.pose9 - got.pose9).max() > 1e-3
