"""Mouth PCA basis of the expression latent z, the latent mouth loss L_PCA, and the collapse metric AUC_z.

SPEC §4 (speech mode): L_PCA(z_i, z_j, n) = (1/n)·Σ_{k≤n} |PC_k(z_i) − PC_k(z_j)|, n = 8, with a PCA
basis fitted (scikit-learn) on z of videos where only the mouth moves, z standardised first (paper
eq. 1). ``train/fit_mouth_pca.py`` fits and saves the basis; ``MouthPCA.load`` reads it back.

SPEC §6: AUC_z = (1/d)·Σ_i (Σ_{k≤i} λ_k / Σ_j λ_j) over the eigenvalues λ (descending) of the
covariance of standardised z — the area under the cumulative explained-variance curve.

    pca = fit_pca(z)                       # z (N, D)
    pca.save("mouth_pca.safetensors")
    pca = MouthPCA.load("mouth_pca.safetensors")
    loss = pca_loss(z_hat, z, pca, n=8)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

__all__ = ["MouthPCA", "fit_pca", "latent_auc", "pca_loss"]

PathLike = Union[str, os.PathLike]
ArrayLike = Union[torch.Tensor, np.ndarray]

_TENSORS = ("mean", "scale", "components", "explained_variance", "explained_variance_ratio")
_FORMAT = "emoportraits-mouth-pca"


def _as_float64(z: ArrayLike, name: str = "z") -> np.ndarray:
    if isinstance(z, torch.Tensor):
        z = z.detach().float().cpu().numpy()
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {tuple(z.shape)}")
    if not np.isfinite(z).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return z


def _standardize(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z − mean) / std per dimension (population std); constant dimensions get scale 1 (→ all 0)."""
    mean = z.mean(axis=0)
    scale = z.std(axis=0)
    scale = np.where(scale > 1e-12 * max(1.0, float(np.abs(mean).max(initial=0.0))), scale, 1.0)
    return (z - mean) / scale, mean, scale


@dataclass
class MouthPCA:
    """A PCA basis of standardised z: ``mean`` (D,), ``scale`` (D,), ``components`` (K, D) (rows =
    principal axes, descending variance), ``explained_variance`` (K,), ``explained_variance_ratio`` (K,)."""

    mean: torch.Tensor
    scale: torch.Tensor
    components: torch.Tensor
    explained_variance: torch.Tensor
    explained_variance_ratio: torch.Tensor

    def __post_init__(self) -> None:
        for name in _TENSORS:
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor):
                value = torch.as_tensor(np.asarray(value))
            setattr(self, name, value.float().contiguous())
        self.validate()

    def validate(self) -> None:
        D, K = self.dim, self.n_components
        shapes = {"mean": (D,), "scale": (D,), "components": (K, D), "explained_variance": (K,),
                  "explained_variance_ratio": (K,)}
        for name, shape in shapes.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"MouthPCA.{name} must have shape {shape} (D={D}, K={K}), got {got}")
        if not bool((self.scale > 0).all()):
            raise ValueError("MouthPCA.scale must be positive")

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0]) if self.mean.ndim == 1 else -1

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0]) if self.components.ndim == 2 else -1

    # ---- projection --------------------------------------------------------------------------------
    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Principal-component coordinates ((z − mean) / scale) @ componentsᵀ: (…, D) → (…, K).
        Differentiable in z; the basis follows z's device and dtype."""
        z = torch.as_tensor(z)
        if z.shape[-1] != self.dim:
            raise ValueError(f"z must have last dimension {self.dim} (the basis' D), got shape {tuple(z.shape)}")
        dtype = z.dtype if z.is_floating_point() else torch.float32
        mean, scale, comp = (t.to(device=z.device, dtype=dtype) for t in (self.mean, self.scale, self.components))
        return ((z.to(dtype) - mean) / scale) @ comp.T

    def to(self, device=None, dtype=None) -> "MouthPCA":
        return MouthPCA(**{n: getattr(self, n).to(device=device, dtype=dtype) for n in _TENSORS})

    # ---- files -------------------------------------------------------------------------------------------
    def save(self, path: PathLike, metadata: dict | None = None) -> None:
        from safetensors.torch import save_file

        meta = {"format": _FORMAT, "dim": str(self.dim), "n_components": str(self.n_components)}
        meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
        save_file({n: getattr(self, n).detach().float().cpu().contiguous() for n in _TENSORS}, str(path),
                  metadata=meta)

    @classmethod
    def load(cls, path: PathLike) -> "MouthPCA":
        """Strict: every tensor must be present (and no others), with consistent shapes."""
        from safetensors import safe_open

        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such PCA basis file; fit one with train/fit_mouth_pca.py")
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            missing = [n for n in _TENSORS if n not in keys]
            unexpected = sorted(keys - set(_TENSORS))
            if missing or unexpected:
                parts = []
                if missing:
                    parts.append(f"missing tensor(s) {', '.join(missing)}")
                if unexpected:
                    parts.append(f"unexpected tensor(s) {', '.join(unexpected)}")
                raise ValueError(f"{path}: not a mouth PCA basis: {'; '.join(parts)} "
                                 f"(expected {', '.join(_TENSORS)})")
            tensors = {n: f.get_tensor(n) for n in _TENSORS}
        try:
            return cls(**tensors)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def pca_loss(z_i: torch.Tensor, z_j: torch.Tensor, pca: MouthPCA, n: int = 8) -> torch.Tensor:
    """L_PCA = (1/n)·Σ_{k≤n} |PC_k(z_i) − PC_k(z_j)|, averaged over all leading dimensions (scalar)."""
    if not 1 <= n <= pca.n_components:
        raise ValueError(f"n must be in [1, {pca.n_components}] (the basis has {pca.n_components} components), got {n}")
    if z_i.shape != z_j.shape:
        raise ValueError(f"z_i and z_j must have the same shape, got {tuple(z_i.shape)} and {tuple(z_j.shape)}")
    return (pca.project(z_i)[..., :n] - pca.project(z_j)[..., :n]).abs().mean()


def latent_auc(z: ArrayLike) -> float:
    """AUC_z (SPEC §6, paper eq. 1) of expression latents z (N, D).

    Standardise each dimension, take the eigenvalues λ of the covariance in descending order, and
    average the cumulative explained-variance ratio: AUC_z = (1/d)·Σ_{i≤d} (Σ_{k≤i} λ_k / Σ_j λ_j).
    It lies in [(d+1)/(2d), 1]: (d+1)/(2d) when all directions carry equal variance (isotropic z),
    1 when z varies along one direction only. **Lower = less collapse** (the paper's full model: 0.80).
    """
    z = _as_float64(z)
    if z.shape[0] < 2:
        raise ValueError(f"latent_auc needs at least 2 samples, got {z.shape[0]}")
    zs, _, _ = _standardize(z)
    cov = np.cov(zs, rowvar=False).reshape(z.shape[1], z.shape[1])
    lam = np.clip(np.linalg.eigvalsh(cov)[::-1], 0.0, None)
    total = lam.sum()
    if total <= 0:
        raise ValueError("latent_auc: z does not vary (every dimension is constant)")
    return float(np.mean(np.cumsum(lam) / total))


def fit_pca(z: ArrayLike, n_components: int | None = None) -> MouthPCA:
    """Fit scikit-learn's PCA on standardised z (N, D); ``n_components`` None = min(N, D)."""
    from sklearn.decomposition import PCA

    z = _as_float64(z)
    N, D = z.shape
    if N < 2:
        raise ValueError(f"fit_pca needs at least 2 samples, got {N}")
    limit = min(N, D)
    if n_components is not None and not 1 <= n_components <= limit:
        raise ValueError(f"n_components must be in [1, {limit}] = [1, min(N={N}, D={D})], got {n_components}")
    zs, mean, scale = _standardize(z)
    pca = PCA(n_components=n_components if n_components is not None else limit, svd_solver="full").fit(zs)
    # zs is already centred (pca.mean_ ≈ 0), so project() = ((z − mean)/scale) @ componentsᵀ matches sklearn.
    return MouthPCA(mean=torch.from_numpy(mean), scale=torch.from_numpy(scale),
                    components=torch.from_numpy(pca.components_),
                    explained_variance=torch.from_numpy(pca.explained_variance_),
                    explained_variance_ratio=torch.from_numpy(pca.explained_variance_ratio_))
