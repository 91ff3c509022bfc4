"""Training losses of the main model (SPEC §3; seed eq. 1), one module per term:

L_main = L_pho + L_lat + w_CV·L_CV + L_GAN, with
L_pho = w_IN·L_IN + w_face·L_face + w_gaze·L_gaze + L_head   (perceptual, gaze, regions),
L_lat = w_cos·L_cos + w_sdm·L_sdm                           (contrastive),
L_GAN = w_adv·L_adv + w_FM·L_FM                             (adversarial),
L_CV                                                         (volume).
Weights: ``LossWeights`` (released code) / ``LossWeights.paper()``; networks: ``build_loss_networks``.
"""
from .adversarial import d_hinge_loss, feature_matching_loss, g_hinge_loss, split_outputs
from .config import LossNetworks, LossWeights, build_loss_networks
from .contrastive import cosface_batch, cosface_loss, source_driver_mismatch_loss
from .gaze import RT_GENE_IGNORED_PREFIXES, GazeFeatureLoss, GazeVGG16Features
from .perceptual import (VGG19_CLASSIFIER_KEYS, VGGFACE_FC_KEYS, FacePerceptualLoss, LossNetworkWeightsError,
                         PerceptualLoss, VGG19Features, VGGFaceFeatures, crop_regions, normalize_input)
from .pca import MouthPCA, fit_pca, latent_auc, pca_loss
from .regions import CELEBAMASK_REGIONS, RegionL1Loss
from .volume import canonical_volume_loss

__all__ = [
    "CELEBAMASK_REGIONS", "FacePerceptualLoss", "GazeFeatureLoss", "GazeVGG16Features", "LossNetworkWeightsError",
    "LossNetworks", "LossWeights", "PerceptualLoss", "RT_GENE_IGNORED_PREFIXES", "RegionL1Loss",
    "VGG19Features", "VGG19_CLASSIFIER_KEYS", "VGGFACE_FC_KEYS", "VGGFaceFeatures", "build_loss_networks",
    "canonical_volume_loss", "cosface_batch", "cosface_loss", "crop_regions", "d_hinge_loss",
    "feature_matching_loss", "g_hinge_loss", "normalize_input",
    "source_driver_mismatch_loss", "split_outputs",
    "MouthPCA", "fit_pca", "latent_auc", "pca_loss",
]
