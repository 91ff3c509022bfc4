"""Metrics on cases with known answers: pixels, LPIPS (random weights), pose, AUC_z, FID, CSIM, landmarks."""
import math

import numpy as np
import pytest
import torch

from conftest import make_model
from emoportraits.errors import EmoPortraitsError, WeightsMismatchError
from emoportraits.metrics import (LPIPS, FeatureExtractor, FIDConfig, LPIPSConfig, TorchFaceEmbedder,
                                  cosine_similarity, csim, fid_from_features, frechet_distance, l1_error, latent_auc,
                                  pose_errors, psnr, rotation_angle, rotation_from_theta, ssim)
from emoportraits.models.geometry import pose_to_theta


def images(b=2, s=32, seed=0):
    return torch.rand(b, 3, s, s, generator=torch.Generator().manual_seed(seed))


# ---- pixels ----------------------------------------------------------------------------------------
def test_identical_images():
    x = images()
    m = torch.ones(2, 1, 32, 32)
    assert torch.isinf(psnr(x, x)).all() and torch.isinf(psnr(x, x, m)).all()
    assert torch.allclose(ssim(x.double(), x.double()), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(ssim(x.double(), x.double(), mask=m.double()), torch.ones(2, dtype=torch.float64))
    assert (l1_error(x, x) == 0).all() and (l1_error(x, x, m) == 0).all()


def test_known_shift_and_mask():
    x = images().double() * 0.8
    y = x + 0.1                                  # every pixel off by 0.1: L1 0.1, MSE 0.01 → 20 dB
    assert torch.allclose(l1_error(y, x), torch.full((2,), 0.1, dtype=torch.float64))
    assert torch.allclose(psnr(y, x), torch.full((2,), 20.0, dtype=torch.float64))
    # an error only where the mask is 0 does not count in the masked metrics
    m = torch.zeros(2, 1, 32, 32, dtype=torch.float64)
    m[..., :16] = 1
    z = x.clone()
    z[..., 16:] += 0.5
    assert (l1_error(z, x, m) == 0).all() and torch.isinf(psnr(z, x, m)).all()
    assert torch.allclose(l1_error(z, x), torch.full((2,), 0.25, dtype=torch.float64))
    assert (ssim(z, x) < ssim(z, x, mask=m)).all()
    with pytest.raises(ValueError, match="mask"):
        l1_error(x, x, m[:, :, :8])


# ---- LPIPS -----------------------------------------------------------------------------------------
def test_lpips_vgg_architecture():
    net = LPIPS(LPIPSConfig("vgg"))
    assert [w.shape[1] for w in net.lins] == [64, 128, 256, 512, 512]
    x = images(1, 32)
    assert net(x, x).item() == 0 and net(x, images(1, 32, seed=5)).item() > 0
    with pytest.raises(ValueError, match="backbone"):
        LPIPSConfig("squeeze")


def test_lpips_identical_is_zero_and_weights_load_strictly(tmp_path, backbone="alex"):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = LPIPS(LPIPSConfig(backbone))
    for p in net.parameters():                       # random weights (lins non-negative, as LPIPS's are)
        p.data = torch.rand_like(p) * 0.1 if p.ndim == 4 and p.shape[0] == 1 else torch.randn_like(p) * 0.05
    x, y = images(2, 64), images(2, 64, seed=3)
    assert torch.all(net(x, x) == 0)
    d = net(x, y)
    assert (d > 0).all() and torch.allclose(d, net(y, x), rtol=1e-5)
    state = net.state_dict()
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pt")
    for f in ("w.safetensors", "w.pt"):
        loaded = LPIPS.from_file(tmp_path / f, backbone)
        assert torch.allclose(loaded(x, y), d)
    bad = dict(state)
    bad.pop("lins.0")
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(WeightsMismatchError, match=r"missing keys \[lins.0\].*unexpected keys \[extra.weight\]"):
        LPIPS.from_file(tmp_path / "bad.pt", backbone)
    wrong = dict(state, **{"lins.1": torch.zeros(1, 7, 1, 1)})
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(WeightsMismatchError, match="wrong shapes"):
        LPIPS.from_file(tmp_path / "wrong.pt", backbone)
    torch.save(net, tmp_path / "pickled.pt")       # a pickled module is refused (weights_only)
    with pytest.raises(EmoPortraitsError, match="state dict"):
        LPIPS.from_file(tmp_path / "pickled.pt", backbone)


def test_lpips_official_layout_conversion():
    from emoportraits.metrics.lpips import convert_official_lpips

    net = LPIPS()
    trunk = {k[len("features."):]: v for k, v in net.state_dict().items() if k.startswith("features.")}
    lins = {f"lin{i}.model.1.weight": net.state_dict()[f"lins.{i}"] for i in range(5)}
    assert set(convert_official_lpips(trunk, lins)) == set(net.state_dict())


# ---- head pose -----------------------------------------------------------------------------------------
def theta(yaw_deg, pitch_deg=0.0, scale=(1.0, 1.0, 1.0), t=(0.0, 0.0, 0.0)):
    rot = torch.tensor([[math.radians(yaw_deg), math.radians(pitch_deg), 0.0]])
    return pose_to_theta(torch.tensor([scale]), rot, torch.tensor([t]))


def test_planted_pose_error():
    a = torch.cat([theta(0, scale=(1.2, 0.9, 1.1)), theta(5, 3)])
    b = torch.cat([theta(10, scale=(0.8, 1.0, 1.0), t=(0.3, 0.4, 0.0)), theta(5, 3)])
    err = pose_errors(a, b)
    np.testing.assert_allclose(err["rotation_deg"], [10.0, 0.0], atol=1e-4)    # anisotropic scale ignored
    np.testing.assert_allclose(err["translation"], [0.5, 0.0], atol=1e-6)
    # relative: the same motion from different starting poses is no error; a planted one is
    seq_a = torch.cat([theta(0), theta(7)])
    seq_b = torch.cat([theta(20), theta(27)])
    np.testing.assert_allclose(pose_errors(seq_a, seq_b, relative=True)["rotation_deg"], [0, 0], atol=1e-4)
    seq_c = torch.cat([theta(20), theta(30)])
    np.testing.assert_allclose(pose_errors(seq_a, seq_c, relative=True)["rotation_deg"], [0, 3], atol=1e-4)
    r = rotation_from_theta(theta(33, 12))
    assert rotation_angle(r, r)[0] < 1e-4 and np.allclose(r @ r.transpose(0, 2, 1), np.eye(3), atol=1e-9)


def test_head_pose_error_of_identical_images_is_zero():
    from emoportraits.metrics.pose import head_poses

    model = make_model("tiny")
    x = torch.rand(3, 3, model.config.image_size, model.config.image_size)
    th = head_poses(model, x)
    assert th.shape == (3, 4, 4)
    assert np.allclose(pose_errors(th, head_poses(model, x.clone()))["rotation_deg"], 0, atol=1e-3)


# ---- AUC_z ---------------------------------------------------------------------------------------------------
def test_latent_auc_planted_covariance():
    rng = np.random.default_rng(0)
    n, d = 20000, 8
    iso = rng.standard_normal((n, d)) * np.arange(1, d + 1)          # per-dim scales vanish in standardising
    assert latent_auc(iso) == pytest.approx((d + 1) / (2 * d), abs=0.01)
    # 4 dims copies of one factor + 4 independent: correlation eigenvalues 4, 1, 1, 1, 1, 0, 0, 0
    f = rng.standard_normal((n, 1))
    z = np.concatenate([f.repeat(4, 1) + 1e-6 * rng.standard_normal((n, 4)), rng.standard_normal((n, 4))], 1)
    lam = np.array([4, 1, 1, 1, 1, 0, 0, 0], float)
    assert latent_auc(z) == pytest.approx(np.mean(np.cumsum(lam) / lam.sum()), abs=0.01)
    rank1 = f @ rng.standard_normal((1, d)) + 1e-9 * rng.standard_normal((n, d))     # one direction only
    assert latent_auc(rank1) == pytest.approx(1, abs=1e-3)


# ---- FID ---------------------------------------------------------------------------------------------------
def test_frechet_distance_known_cases():
    mu, cov = np.array([1.0, -2.0, 0.5]), np.array([[2.0, 0.3, 0], [0.3, 1.0, 0.1], [0, 0.1, 0.5]])
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0, abs=1e-9)
    # 1-D: (0 − 2)² + 1 + 4 − 2·√(1·4) = 5
    assert frechet_distance([0.0], [[1.0]], [2.0], [[4.0]]) == pytest.approx(5.0)
    # diagonal: Σ (μ diff)² + Σ (σ₁ − σ₂)²
    s1, s2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    assert frechet_distance([0, 0], s1, [1, 1], s2) == pytest.approx(2 + (1 - 3) ** 2 + (2 - 1) ** 2)
    f = np.random.default_rng(0).standard_normal((50, 4))
    assert fid_from_features(f, f) == pytest.approx(0, abs=1e-8)
    assert fid_from_features(f, f + 3) == pytest.approx(36, rel=1e-6)
    with pytest.raises(ValueError):
        frechet_distance([0, 0], s1, [0], [[1.0]])


def test_fid_with_a_tiny_torchscript_extractor(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    torch.jit.save(torch.jit.script(net), tmp_path / "tiny.pt")
    ex = FeatureExtractor(tmp_path / "tiny.pt", FIDConfig(input_size=32, batch_size=4))
    a, b = images(10, 24, seed=1), images(10, 24, seed=2) * 0.5
    fa = ex(a)
    assert fa.shape == (10, 8)
    assert fid_from_features(fa, ex(a)) == pytest.approx(0, abs=1e-6)
    assert fid_from_features(fa, ex(b)) > 1e-4
    with pytest.raises(EmoPortraitsError, match="file not found"):
        FeatureExtractor(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a network")
    with pytest.raises(EmoPortraitsError, match="not a TorchScript"):
        FeatureExtractor(tmp_path / "junk.pt")


def test_fid_with_a_torch_export_extractor(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    torch.export.save(torch.export.export(net, (torch.zeros(2, 3, 16, 16),)), tmp_path / "f.pt2")
    ex = FeatureExtractor(tmp_path / "f.pt2", FIDConfig(input_size=16, batch_size=2))
    assert ex(images(4, 20)).shape == (4, 4)


# ---- identity ------------------------------------------------------------------------------------------------
def test_cosine_and_torch_embedder(tmp_path):
    assert cosine_similarity([[1, 0], [1, 1]], [[2, 0], [-1, 1]]) == pytest.approx([1, 0])
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(16))
    net(torch.zeros(1, 3, 112, 112))
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 112, 112)), tmp_path / "arc.pt")
    emb = TorchFaceEmbedder(tmp_path / "arc.pt")
    faces = (np.random.default_rng(0).random((2, 64, 64, 3)) * 255).astype(np.uint8)
    assert csim(emb, faces, faces) == pytest.approx([1, 1])
    assert csim(emb, faces, faces[:1])[0] == pytest.approx(1) and csim(emb, faces, faces[:1])[1] < 0.999


# ---- pose sequences ---------------------------------------------------------------------------------------
def test_pose_sequence_statistics_known_motion():
    from emoportraits.metrics.sequences import frame_energy, pose_statistics, seed_diversity

    fps, n = 25.0, 50
    yaw = np.arange(n) * 0.4                          # a steady turn of 0.4°/frame = 10°/s
    rots = rotation_from_theta(torch.cat([theta(y) for y in yaw]))
    stats = pose_statistics(rots, fps, energy=np.ones(n))
    assert stats["speed"] == pytest.approx(10.0, rel=1e-3)
    assert stats["jerk"] == pytest.approx(0, abs=0.1)      # constant speed: smooth (float32 θ noise × fps³ only)
    assert stats["std_deg"] == pytest.approx(np.std(yaw), rel=1e-3)
    assert math.isnan(stats["energy_corr"])                   # constant energy: no correlation defined
    still = np.broadcast_to(np.eye(3), (n, 3, 3))
    assert pose_statistics(still, fps)["speed"] == 0 and pose_statistics(still, fps)["std_deg"] == 0
    # speed that follows the energy: correlation 1
    speeds = 0.2 + 0.1 * np.sin(np.arange(n) / 3)
    rots = rotation_from_theta(torch.cat([theta(y) for y in np.concatenate([[0], np.cumsum(speeds[1:])])]))
    assert pose_statistics(rots, fps, energy=speeds)["energy_corr"] == pytest.approx(1, abs=1e-3)
    assert seed_diversity([rots, rots]) == pytest.approx(0, abs=1e-4)
    shifted = rotation_from_theta(torch.cat([theta(y, 5) for y in np.zeros(n)]))
    assert seed_diversity([still.copy(), shifted]) == pytest.approx(5, abs=1e-3)
    samples = np.ones(16000, np.float32) * 0.5
    np.testing.assert_allclose(frame_energy(samples, 25, 25.0), 0.5)
