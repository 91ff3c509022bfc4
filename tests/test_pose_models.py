"""The head-pose GAN's networks and losses: generator (any length, no seams, noise, Hub round trip),
critics (patch size, audio condition), WGAN-GP gradient penalty (finite differences)."""
import json

import pytest
import torch

from emoportraits.errors import WeightsMismatchError
from emoportraits.losses.pose import (gradient_penalty, interpolates, pose_reconstruction_loss, pose_smoothness_loss,
                                      wgan_critic_loss, wgan_generator_loss)
from emoportraits.models import (PoseDiscriminatorConfig, PoseDiscriminators, PoseGenerator, PoseGeneratorConfig)
from emoportraits.models.geometry import pose9_to_rigid, project_pose9


def generator(seed: int = 0, **overrides) -> PoseGenerator:
    torch.manual_seed(seed)
    g = PoseGenerator(PoseGeneratorConfig(**{**PoseGeneratorConfig.tiny().to_dict(), **overrides})).eval()
    with torch.no_grad():                       # visible motion: the output layer starts near zero otherwise
        g.head[-1].weight.normal_(0, 0.3)
    return g


def audio(T: int, B: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.randn(B, T, 2, 32, generator=torch.Generator().manual_seed(seed))


def test_generated_rotations_are_rotations_for_any_length():
    g = generator()
    for T in (1, 7, 32, 33, 100, 257):
        x = g(audio(T, B=2), generator=torch.Generator().manual_seed(T))
        assert x.shape == (2, T, 9) and torch.isfinite(x).all()
        r, _ = pose9_to_rigid(x)
        assert torch.allclose(r.transpose(-1, -2) @ r, torch.eye(3).expand_as(r), atol=1e-5)
        assert torch.allclose(torch.linalg.det(r), torch.ones(2, T), atol=1e-5)
    assert g(audio(0)).shape == (1, 0, 9)
    assert g(audio(5).flatten(2)).shape == (1, 5, 9)                    # (B, T, k·D) works too
    with pytest.raises(ValueError, match="Whisper features"):
        g(torch.randn(1, 5, 3, 32))


def test_noise_seed_and_temperature():
    g = generator()
    a = audio(40)
    same = [g(a, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(*same)
    other = g(a, generator=torch.Generator().manual_seed(8))
    assert not torch.allclose(same[0], other)
    assert torch.equal(g(a, temperature=0.0), g(a, temperature=0.0))
    assert torch.equal(g(a, temperature=0.0), g(a, torch.zeros(1, 40, 4)))
    with pytest.raises(ValueError, match="temperature"):
        g(a, temperature=-1.0)


def test_long_sequences_chain_windows_without_seams():
    g = generator()
    W = g.config.window                                                  # 32
    T = 3 * W + 11
    a, noise = audio(T), torch.randn(1, T, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        long = g(a, noise)
        first = g.decode_window(a[:, :W], noise[:, :W])
        short = g(a[:, :W], noise[:, :W])
    assert torch.allclose(short, first, atol=1e-6)              # one window: decoded as is
    first_only = W // 2 + W // 8                                # where only the first window counts
    assert torch.allclose(long[:, :first_only], first[:, :first_only], atol=1e-5)
    r, _ = pose9_to_rigid(long)
    eye = torch.eye(3).expand_as(r)
    assert torch.allclose(r @ r.transpose(-1, -2), eye, atol=1e-4)
    # no seam: no frame-to-frame step is much bigger than the steps inside a single window
    step = (long[:, 1:] - long[:, :-1]).abs().amax()
    own = (first[:, 1:] - first[:, :-1]).abs().amax()
    assert step <= 3 * own


def test_windows_continue_the_motion_so_far(monkeypatch):
    """Each window predicts the motion since its own first frame; chained, a steady turn keeps going
    (a yaw ramp of 1° per frame gives ≈ t° at frame t) instead of snapping back every half window."""
    from emoportraits.models.geometry import matrix_to_angles, rigid_to_pose9, rotation_matrix

    g = generator()
    W, T = g.config.window, 100

    def ramp(audio, noise, initial_pose=None):
        t = torch.arange(audio.shape[1], dtype=torch.float32)
        angles = torch.stack([torch.deg2rad(t), torch.zeros_like(t), torch.zeros_like(t)], -1)
        return rigid_to_pose9(rotation_matrix(angles), torch.zeros(len(t), 3))[None]

    monkeypatch.setattr(g, "decode_window", ramp)
    with torch.no_grad():
        yaw = torch.rad2deg(matrix_to_angles(pose9_to_rigid(g(audio(T), temperature=0.0))[0])[0, :, 0])
    assert T > 2 * W
    assert torch.allclose(yaw, torch.arange(T, dtype=torch.float32), atol=1e-3)


def test_hub_round_trip_and_strict_loading(tmp_path):
    g = generator()
    g.save_pretrained(tmp_path / "pose")
    config = json.loads((tmp_path / "pose" / "config.json").read_text())
    assert config["hidden"] == 32 and config["window"] == 32
    loaded = PoseGenerator.from_pretrained(tmp_path / "pose")
    a = audio(50)
    assert torch.equal(loaded(a, temperature=0.0), g(a, temperature=0.0))
    assert not loaded.training
    config["hidden"] = 48                                                  # another configuration
    (tmp_path / "pose" / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsMismatchError, match="wrong shapes"):
        PoseGenerator.from_pretrained(tmp_path / "pose")
    config.update(hidden=32, res_blocks=2)                                  # more blocks than saved
    (tmp_path / "pose" / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsMismatchError, match="missing keys"):
        PoseGenerator.from_pretrained(tmp_path / "pose")
    config.update(res_blocks=1, colour="red")
    (tmp_path / "pose" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unknown fields"):
        PoseGenerator.from_pretrained(tmp_path / "pose")


def test_initial_pose_condition(tmp_path):
    g = generator(initial_pose=True)
    with torch.no_grad():
        g.initial.weight.normal_(0, 0.5)
    a, T = audio(70, B=2), 70                                             # windowed too (70 > 32)
    frontal = g(a, temperature=0.0)
    ident = torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0, 0])
    assert torch.equal(frontal, g(a, temperature=0.0, initial_pose=ident))           # None = frontal
    turned = project_pose9(torch.tensor([0.8, 0.6, 0, -0.6, 0.8, 0, 0.1, 0, 0]))
    moved = g(a, temperature=0.0, initial_pose=torch.stack([ident, turned]))
    assert torch.allclose(moved[0], frontal[0], atol=1e-6) and not torch.allclose(moved[1], frontal[1])
    assert moved.shape == (2, T, 9)
    with pytest.raises(ValueError, match="initial_pose"):
        g(a, initial_pose=torch.zeros(3, 9))
    g.save_pretrained(tmp_path / "pose")                                  # the input is part of the config
    loaded = PoseGenerator.from_pretrained(tmp_path / "pose")
    assert loaded.config.initial_pose and torch.equal(loaded(a, temperature=0.0, initial_pose=turned),
                                                      g(a, temperature=0.0, initial_pose=turned))
    plain = generator()                                                   # without the input: ignored
    assert plain.initial is None and torch.equal(plain(a, temperature=0.0, initial_pose=turned),
                                                 plain(a, temperature=0.0))


def test_config_checks():
    with pytest.raises(ValueError, match="divisible"):
        PoseGeneratorConfig(hidden=30, num_heads=4)
    with pytest.raises(ValueError, match="odd"):
        PoseGeneratorConfig(kernel_size=4)
    with pytest.raises(ValueError, match="too small"):
        PoseDiscriminatorConfig(patch=4, local_layers=3)


def test_local_critic_judges_patches_of_8_frames():
    torch.manual_seed(0)
    d = PoseDiscriminators(PoseDiscriminatorConfig.tiny())
    x = project_pose9(torch.randn(2, 30, 9))
    scores = d.local.patch_scores(x)
    assert scores.shape == (2, 30 - 8 + 1)
    assert torch.allclose(d(x, None, which="local"), scores.mean(1))
    y = x.clone()
    y[:, 15] += 0.5                                                        # frame 15 is in patches 8 … 15
    changed = (d.local.patch_scores(y) - scores).abs().amax(0) > 0
    assert changed.nonzero().flatten().tolist() == list(range(8, 16))
    with pytest.raises(ValueError, match="T >= 8"):
        d.local(x[:, :7])


def test_global_critic_sees_the_whole_sequence_and_the_audio():
    torch.manual_seed(0)
    d = PoseDiscriminators(PoseDiscriminatorConfig.tiny())
    x, a = project_pose9(torch.randn(3, 20, 9)), audio(20, B=3)
    s = d(x, a, which="global")
    assert s.shape == (3,)
    assert not torch.allclose(d(x, audio(20, B=3, seed=9), which="global"), s)
    y = x.clone()
    y[:, 0] += 0.5
    assert not torch.allclose(d(y, a, which="global"), s)
    with pytest.raises(ValueError, match="audio must be"):
        d(x, audio(19, B=3), which="global")


def test_gradient_penalty_on_interpolates_matches_finite_differences():
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(5 * 9, 8), torch.nn.Tanh(),
                                 torch.nn.Linear(8, 1), torch.nn.Flatten(0)).double()
    real, fake = torch.randn(4, 5, 9, dtype=torch.float64), torch.randn(4, 5, 9, dtype=torch.float64)
    eps = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64)
    x_hat = interpolates(real, fake, eps)
    assert torch.equal(x_hat[0], fake[0]) and torch.equal(x_hat[3], real[3])
    assert torch.allclose(x_hat[1], 0.3 * real[1] + 0.7 * fake[1])

    # finite differences of the critic at the interpolates
    h, norms = 1e-6, []
    for b in range(4):
        grad = torch.zeros(5 * 9, dtype=torch.float64)
        for i in range(5 * 9):
            e = torch.zeros(5 * 9, dtype=torch.float64)
            e[i] = h
            plus = critic((x_hat[b].flatten() + e).view(1, 5, 9))
            minus = critic((x_hat[b].flatten() - e).view(1, 5, 9))
            grad[i] = (plus - minus).item() / (2 * h)
        norms.append(grad.norm())
    expected = ((torch.stack(norms) - 1) ** 2).mean()

    critic32 = critic.float()
    gp = gradient_penalty(critic32, real.float(), fake.float(), eps=eps.float())
    assert torch.allclose(gp.double(), expected, rtol=1e-4)
    # the penalty trains the critic (create_graph)
    gp.backward()
    weights = [critic32[1].weight, critic32[3].weight]                     # biases do not move ∇ₓD
    assert all(w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0 for w in weights)
    # conditions are passed through, not differentiated
    cond_critic = lambda x, a: critic32(x) + a.sum((1, 2))  # noqa: E731
    gp2 = gradient_penalty(cond_critic, real.float(), fake.float(), torch.randn(4, 2, 3), eps=eps.float())
    assert torch.allclose(gp2, gp, rtol=1e-5)


def test_pose_losses():
    x = project_pose9(torch.randn(2, 6, 9))
    assert float(pose_reconstruction_loss(x, x)[0]) == 0.0
    y = x.clone()
    y[..., 6:] += 0.1
    rot, trans = pose_reconstruction_loss(y, x)
    assert float(rot) == 0.0 and abs(float(trans) - 0.1) < 1e-6
    still = x[:, :1].expand(2, 6, 9)
    assert float(pose_smoothness_loss(still)) == 0.0
    ramp = torch.arange(6.0)[None, :, None].expand(1, 6, 9)
    assert abs(float(pose_smoothness_loss(ramp)) - 1.0) < 1e-6
    d_real, d_fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, -2.0])
    assert float(wgan_critic_loss(d_real, d_fake)) == -3.0 and float(wgan_generator_loss(d_fake)) == 1.0
