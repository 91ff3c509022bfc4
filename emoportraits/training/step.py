"""One training iteration of the main model (SPEC §3): the generator's losses and the discriminator's.

The generator side is an ``nn.Module`` (``GeneratorStep``) so that a distributed wrapper sees one
forward per iteration (DDP synchronises gradients of what its forward ran).

For a pair (x_s, x_d) of the same video:
    avatar = encode_source(x_s·mask_s, θ_s);  z_d = E_motion(aug(x_d), θ_d)
    x̂ = drive(avatar, z_d, θ_d)             — compared with the target x_d (background green)
    x̂_mix = drive(avatar rolled over the batch, z_d, θ_pool)  — another identity, same expression
    L = w_IN·L_IN + w_face·L_face + w_gaze·L_gaze + Σ w_r·L_head,r + w_adv·L_adv + w_FM·L_FM
      + w_cos·(cos(E(x̂), z_d) + cos(E(x̂_mix), z_d)) + w_sdm·L_sdm(z_s, z_d) + w_CV·L1(V^C_s, sg V^C_d)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..losses import (FacePerceptualLoss, GazeFeatureLoss, PerceptualLoss, RegionL1Loss, canonical_volume_loss,
                      cosface_batch, d_hinge_loss, feature_matching_loss, g_hinge_loss,
                      source_driver_mismatch_loss, split_outputs)
from ..losses.config import LossWeights
from ..models import EmoPortraits

GREEN = (0.0, 1.0, 0.0)


@dataclass
class TrainBatch:
    source: torch.Tensor           # (B, 3, S, S) in [0, 1]
    driver: torch.Tensor
    source_mask: torch.Tensor      # (B, 1, S, S) portrait masks in [0, 1]
    driver_mask: torch.Tensor
    source_theta: torch.Tensor     # (B, 4, 4) pose labels
    driver_theta: torch.Tensor
    driver_motion: torch.Tensor    # augmented driver: the input of E_motion
    is_feed: torch.Tensor          # (B,) bool: FEED pairs weigh L_sdm ×10
    eye_centers: torch.Tensor | None = None   # (B, 2, 2) in [-1, 1], for L_gaze

    def to(self, device) -> "TrainBatch":
        return TrainBatch(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()})


def face_boxes(batch: int, crop_scale: float = 2.2, device=None) -> torch.Tensor:
    """Face box [x0, y0, side] in [-1, 1] crop coordinates: the crops are ``crop_scale``× the face box,
    centred (the inference cropping), so the face is the central 1/crop_scale of every crop."""
    side = 2.0 / crop_scale
    return torch.tensor([-side / 2, -side / 2, side], device=device).expand(batch, 3)


class GeneratorStep(nn.Module):
    """The generator with its loss modules; forward(batch) → (total loss, logs, prediction)."""

    def __init__(self, model: EmoPortraits, weights: LossWeights, networks: dict, pose_pool: int = 64):
        super().__init__()
        self.model = model
        self.weights = weights
        # the released run uses a 4-level image pyramid at 512²; smaller models get fewer levels, so
        # the coarsest level stays ≥ 32 px (VGG19 pools it four times before relu5_1)
        size = model.config.image_size
        scales = max(1, min(4, int(math.log2(size / 32)) + 1))
        self.perceptual = (PerceptualLoss(networks["vgg19"], num_scales=scales)
                           if networks.get("vgg19") is not None else None)
        self.face = FacePerceptualLoss(networks["vggface"]) if networks.get("vggface") is not None else None
        self.gaze = GazeFeatureLoss(networks["gaze"]) if networks.get("gaze") is not None else None
        self.regions = RegionL1Loss(networks["face_parser"]) if networks.get("face_parser") is not None else None
        # recent driver poses for the mixing branch: a ring buffer, so checkpoints include it
        self.register_buffer("pose_pool", torch.eye(4).repeat(pose_pool, 1, 1))
        self.register_buffer("pose_count", torch.zeros((), dtype=torch.long))
        self.regions_on = False

    def target(self, batch: TrainBatch, green: bool) -> torch.Tensor:
        if not green:
            return batch.driver
        bg = torch.tensor(GREEN, device=batch.driver.device, dtype=batch.driver.dtype).view(1, 3, 1, 1)
        return batch.driver * batch.driver_mask + bg * (1 - batch.driver_mask)

    def _mix_pose(self, theta_d: torch.Tensor) -> torch.Tensor:
        """Half of the time poses from the pool of recent drivers, else the batch's poses rolled."""
        filled = int(min(self.pose_count.item(), self.pose_pool.shape[0]))
        if filled == 0 or torch.rand(()) < 0.5:
            return theta_d.roll(1, 0)
        idx = torch.randint(filled, (theta_d.shape[0],))
        return self.pose_pool[idx].to(theta_d)

    @torch.no_grad()
    def _remember_poses(self, theta: torch.Tensor) -> None:
        for t in theta:
            self.pose_pool[int(self.pose_count.item()) % self.pose_pool.shape[0]] = t
            self.pose_count += 1

    def forward(self, batch: TrainBatch, disc: nn.Module, *, green: bool = True):
        w, m = self.weights, self.model
        target = self.target(batch, green)
        avatar = m.encode_source(batch.source, theta=batch.source_theta, mask=batch.source_mask)
        z_d = m.expression_encoder(batch.driver_motion, batch.driver_theta)
        pred = m.drive(avatar, z=z_d, theta=batch.driver_theta)
        terms: dict[str, torch.Tensor] = {}

        if w.l1:
            terms["l1"] = w.l1 * (pred - target).abs().mean()
        if self.perceptual is not None and w.vgg19:
            terms["vgg19"] = w.vgg19 * self.perceptual(pred, target)
        if self.face is not None and w.vggface:
            terms["vggface"] = w.vggface * self.face(pred, target, face_boxes(pred.shape[0], device=pred.device))
        if self.gaze is not None and w.gaze and batch.eye_centers is not None:
            terms["gaze"] = w.gaze * self.gaze(pred, target, batch.eye_centers)
        if self.regions is not None and self.regions_on:
            for name, value in self.regions(pred, target).items():
                terms[name] = getattr(w, name) * value
        if w.adversarial or w.feature_matching:
            fake_feats, fake_logits = split_outputs(disc(pred))
            real_feats, _ = split_outputs(disc(target))
            terms["adversarial"] = w.adversarial * g_hinge_loss(fake_logits)
            terms["feature_matching"] = w.feature_matching * feature_matching_loss(real_feats, fake_feats)
        if w.cosface:
            z_pred = m.expression_encoder(pred, batch.driver_theta)
            theta_mix = self._mix_pose(batch.driver_theta)
            rolled = type(avatar)(avatar.canonical.roll(1, 0), avatar.e_s.roll(1, 0), avatar.theta.roll(1, 0),
                                  avatar.z.roll(1, 0))
            mixed = m.drive(rolled, z=z_d, theta=theta_mix)
            z_mix = m.expression_encoder(mixed, theta_mix)
            terms["cosface"] = w.cosface * (cosface_batch(z_pred, z_d, w.cosface_s, w.cosface_m)
                                            + cosface_batch(z_mix, z_d, w.cosface_s, w.cosface_m))
        if w.sdm:
            feed = batch.is_feed.to(z_d.dtype)
            margin = w.sdm_margin + (w.sdm_margin_feed - w.sdm_margin) * feed
            scale = 1 + (w.sdm_feed_multiplier - 1) * feed
            terms["sdm"] = w.sdm * source_driver_mismatch_loss(avatar.z, z_d, margin, scale)
        if w.canonical_volume:
            with torch.no_grad():
                v_d = m.encode_source(batch.driver, theta=batch.driver_theta, mask=batch.driver_mask).canonical
            terms["canonical_volume"] = w.canonical_volume * canonical_volume_loss(avatar.canonical, v_d)

        self._remember_poses(batch.driver_theta.detach())
        total = sum(terms.values())
        logs = {k: float(v.detach()) for k, v in terms.items()}
        logs["generator"] = float(total.detach())
        return total, logs, pred, target


def discriminator_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the multi-scale patch discriminator on real targets and detached predictions."""
    _, real_logits = split_outputs(disc(real))
    _, fake_logits = split_outputs(disc(fake.detach()))
    return d_hinge_loss(real_logits, fake_logits)
