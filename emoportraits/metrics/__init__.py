"""Evaluation metrics (SPEC §6) and the protocols that run them on folders of files.

Pixel metrics (`image`), LPIPS (`lpips`, user weights), identity CSIM (`identity`: dlib offline or
any torch embedder), landmark expression/motion errors (`landmarks`: AKD, FP/FV/MP/MV), head-pose
errors (`pose`), FID (`fid`, user feature extractor), the latent-collapse score AUC_z (`latent_auc`,
from `emoportraits.losses.pca`) and pose-sequence statistics (`sequences`).
"""
from ..losses.pca import latent_auc
from .fid import FeatureExtractor, FIDConfig, fid_from_features, frechet_distance
from .identity import DlibFaceEmbedder, TorchEmbedderConfig, TorchFaceEmbedder, cosine_similarity, csim
from .image import l1_error, mse, psnr, ssim
from .lpips import LPIPS, LPIPSConfig
from .pose import pose_errors, rotation_angle, rotation_from_theta

__all__ = ["DlibFaceEmbedder", "FIDConfig", "FeatureExtractor", "LPIPS", "LPIPSConfig", "TorchEmbedderConfig",
           "TorchFaceEmbedder", "cosine_similarity", "csim", "fid_from_features", "frechet_distance", "l1_error",
           "latent_auc", "mse", "pose_errors", "psnr", "rotation_angle", "rotation_from_theta", "ssim"]
