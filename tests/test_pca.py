"""Mouth PCA basis (SPEC §4 L_PCA), AUC_z (SPEC §6) and train/fit_mouth_pca.py."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from emoportraits.losses import MouthPCA, fit_pca, latent_auc, pca_loss

from helpers import REPO, shared_media

SCRIPT = REPO / "train" / "fit_mouth_pca.py"
CLIP = "driving/d06_grid_man_talking_with_audio.mp4"


def _planted(n=2000, d=32, rank=3, noise=1e-3, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, rank))
    s = rng.normal(size=(n, rank)) * np.array([3.0, 2.0, 1.0])[:rank]
    z = s @ a.T + noise * rng.normal(size=(n, d)) + rng.normal(size=d) * 5
    return z, a


def _principal_angles(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    qu, _ = np.linalg.qr(u)
    qv, _ = np.linalg.qr(v)
    return np.arccos(np.clip(np.linalg.svd(qu.T @ qv, compute_uv=False), -1, 1))


# ---- fit ------------------------------------------------------------------------------------------------
def test_fit_recovers_planted_low_rank_structure():
    z, a = _planted()
    pca = fit_pca(z)
    assert pca.n_components == 32 and pca.dim == 32
    assert float(pca.explained_variance_ratio[:3].sum()) > 0.99
    assert torch.all(pca.explained_variance[:-1] >= pca.explained_variance[1:] - 1e-6)
    # components live in the standardised space: the planted columns there are A / scale
    a_std = a / pca.scale.double().numpy()[:, None]
    angles = _principal_angles(pca.components[:3].double().numpy().T, a_std)
    assert angles.max() < 1e-2
    # projection = sklearn's transform of the standardised data (scores of unit-variance z)
    proj = pca.project(torch.from_numpy(z).float())
    assert proj.shape == (2000, 32)
    var = proj[:, :3].double().var(0, unbiased=True)
    torch.testing.assert_close(var, pca.explained_variance[:3].double(), rtol=1e-3, atol=1e-3)


def test_fit_n_components_and_errors():
    z, _ = _planted(n=50)
    assert fit_pca(z, 5).components.shape == (5, 32)
    with pytest.raises(ValueError, match="n_components"):
        fit_pca(z, 51)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        fit_pca(z[0])


# ---- L_PCA ------------------------------------------------------------------------------------------------
def _hand_basis() -> MouthPCA:
    d, k = 4, 3
    comps = torch.zeros(k, d)
    comps[0, 2] = 1.0          # PC1 = standardised dim 2
    comps[1, 0] = -1.0         # PC2 = −standardised dim 0
    comps[2, 1] = 1.0          # PC3 = standardised dim 1
    return MouthPCA(mean=torch.tensor([1.0, 2.0, 3.0, 4.0]), scale=torch.tensor([2.0, 4.0, 0.5, 1.0]),
                    components=comps, explained_variance=torch.tensor([3.0, 2.0, 1.0]),
                    explained_variance_ratio=torch.tensor([0.5, 1 / 3, 1 / 6]))


def test_pca_loss_hand_computed():
    pca = _hand_basis()
    zi = torch.tensor([[3.0, 6.0, 4.0, 0.0], [1.0, 2.0, 3.0, 9.0]])
    zj = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 2.0, 2.0, 4.0]])
    # standardised: zi → [[1, 1, 2, -4], [0, 0, 0, 5]], zj → [[0, 0, 0, 0], [2, 0, -2, 0]]
    torch.testing.assert_close(pca.project(zi), torch.tensor([[2.0, -1.0, 1.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(pca.project(zj), torch.tensor([[0.0, 0.0, 0.0], [-2.0, -2.0, 0.0]]))
    # n = 2: row 0 (|2| + |−1|)/2 = 1.5, row 1 (|2| + |2|)/2 = 2 → mean 1.75
    assert pca_loss(zi, zj, pca, n=2).item() == pytest.approx(1.75)
    # n = 3: row 0 4/3, row 1 4/3 → 4/3; the 4th dimension is not in the basis
    assert pca_loss(zi, zj, pca, n=3).item() == pytest.approx(4 / 3)
    assert pca_loss(zi, zi, pca, n=3).item() == 0.0
    with pytest.raises(ValueError, match="n must be"):
        pca_loss(zi, zj, pca, n=4)


def test_pca_loss_leading_dims_and_gradient():
    pca = _hand_basis()
    zi = torch.randn(2, 5, 4, requires_grad=True)
    zj = torch.randn(2, 5, 4)
    loss = pca_loss(zi, zj, pca, n=3)
    flat = pca_loss(zi.reshape(10, 4), zj.reshape(10, 4), pca, n=3)
    torch.testing.assert_close(loss, flat)
    loss.backward()
    assert zi.grad is not None and torch.all(zi.grad[..., 3] == 0)


# ---- files ------------------------------------------------------------------------------------------------
def test_save_load_round_trip_and_missing_tensor(tmp_path):
    z, _ = _planted(n=100, d=8, rank=3)
    pca = fit_pca(z, 6)
    path = tmp_path / "basis.safetensors"
    pca.save(path)
    back = MouthPCA.load(path)
    for name in ("mean", "scale", "components", "explained_variance", "explained_variance_ratio"):
        torch.testing.assert_close(getattr(back, name), getattr(pca, name), rtol=0, atol=0)
    bad = tmp_path / "bad.safetensors"
    save_file({"mean": pca.mean, "scale": pca.scale, "components": pca.components,
               "explained_variance": pca.explained_variance}, str(bad))
    with pytest.raises(ValueError, match="missing tensor.*explained_variance_ratio"):
        MouthPCA.load(bad)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"mean": pca.mean, "scale": pca.scale, "components": pca.components[:, :5].contiguous(),
               "explained_variance": pca.explained_variance,
               "explained_variance_ratio": pca.explained_variance_ratio}, str(wrong))
    with pytest.raises(ValueError, match="components must have shape"):
        MouthPCA.load(wrong)
    with pytest.raises(FileNotFoundError):
        MouthPCA.load(tmp_path / "nope.safetensors")


# ---- AUC_z ------------------------------------------------------------------------------------------------
def test_latent_auc_hand_cases():
    rng = np.random.default_rng(1)
    d = 16
    iso = rng.normal(size=(20000, d)) * rng.uniform(0.1, 10, size=d)     # scales removed by standardising
    assert latent_auc(iso) == pytest.approx((d + 1) / (2 * d), abs=0.01)
    rank1 = rng.normal(size=(500, 1)) * rng.normal(size=(1, d)) + rng.normal(size=d)
    assert latent_auc(rank1) == pytest.approx(1.0, abs=1e-6)
    # two equal directions out of 4: cumulative ratios 1/2, 1, 1, 1 → 7/8
    s = rng.normal(size=(20000, 2))
    z = np.concatenate([s, s * 3], axis=1)
    assert latent_auc(torch.from_numpy(z)) == pytest.approx(7 / 8, abs=0.01)
    with pytest.raises(ValueError):
        latent_auc(np.ones((10, 4)))


# ---- the script -------------------------------------------------------------------------------------------
def _script():
    spec = importlib.util.spec_from_file_location("fit_mouth_pca", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_script_help():
    res = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "--freeze-upper-face" in res.stdout


def test_seam_composite():
    mod = _script()
    first, frame = torch.zeros(3, 64, 64), torch.ones(3, 64, 64)
    out = mod.freeze_upper_face(first, frame)
    assert torch.all(out[:, :28] == 0) and torch.all(out[:, 36:] == 1)     # seam rows 28..35 blend
    col = out[0, :, 0]
    assert torch.all(col[1:] >= col[:-1]) and 0 < col[32].item() < 1


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from emoportraits import EmoPortraits, EmoPortraitsConfig
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny"
    EmoPortraits(EmoPortraitsConfig.tiny()).save_pretrained(path)
    return path


def test_script_data_end_to_end(tmp_path, tiny_model, capsys):
    from emoportraits.cli import main as cli

    clip = shared_media(CLIP)
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / clip.name).symlink_to(clip)
    data = tmp_path / "data"
    cli(["prepare-data", "--videos", str(videos), "--out", str(data), "--dataset-name", "voxceleb2",
         "--resolution", "64", "--frames-per-clip", "10", "--stride", "2", "--quiet"])
    out = tmp_path / "basis.safetensors"
    assert _script().main(["--model", str(tiny_model), "--data", str(data), "--components", "4",
                           "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    pca = MouthPCA.load(out)
    assert pca.n_components == 4 and pca.dim == 16
    text = capsys.readouterr().out
    assert "AUC_z" in text and "PC 1" in text


def test_script_videos_freeze_upper_face(tmp_path, tiny_model, capsys):
    clip = shared_media(CLIP)
    out = tmp_path / "frozen.safetensors"
    assert _script().main(["--model", str(tiny_model), "--videos", str(clip), "--freeze-upper-face",
                           "--max-frames-per-video", "8", "--components", "5", "--out", str(out),
                           "--device", "cpu", "--quiet"]) == 0
    pca = MouthPCA.load(out)
    assert pca.components.shape == (5, 16)
    assert "fitted 5 components on 8 frames" in capsys.readouterr().out
