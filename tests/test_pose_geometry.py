"""Rotation geometry of the head-pose sequences (SPEC §5), shared with the main model's θ."""
import math

import numpy as np
import pytest
import torch

from emoportraits.data.pose_labels import rotation_to_angles
from emoportraits.models.geometry import (apply_motion, matrix_to_angles, matrix_to_pose9, matrix_to_rotation_6d,
                                          pose9_from_raw9, pose9_to_matrix, pose9_to_raw9, pose9_to_rigid,
                                          pose9_to_theta, project_pose9, relative_pose9, rotation_6d_to_matrix,
                                          rotation_matrix, theta_from_raw9)


def random_raw9(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    raw = torch.empty(n, 9)
    raw[:, 0:3] = (0.7 + 0.5 * torch.rand(n, 1, generator=g)).expand(n, 3)           # isotropic scale
    raw[:, 3:6] = (torch.rand(n, 3, generator=g) - 0.5) * 2.0                        # |angle| < 1 rad
    raw[:, 6:9] = torch.randn(n, 3, generator=g) * 0.2
    return raw


def test_gram_schmidt_gives_rotations_for_any_6d_input():
    x6 = torch.randn(1000, 6, generator=torch.Generator().manual_seed(1)) * 3
    r = rotation_6d_to_matrix(x6)
    eye = torch.eye(3).expand_as(r)
    assert torch.allclose(r.transpose(-1, -2) @ r, eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(1000), atol=1e-5)
    # the first column is the normalised a1; the second lies in the plane of a1, a2
    assert torch.allclose(r[:, :, 0], x6[:, :3] / x6[:, :3].norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(torch.linalg.det(torch.stack([x6[:, :3], x6[:, 3:], r[:, :, 1]], -1)), torch.zeros(1000),
                          atol=1e-3 * x6.norm(dim=1).pow(2).max().item())


def test_6d_matrix_6d_round_trip():
    r = rotation_matrix((torch.rand(500, 3, generator=torch.Generator().manual_seed(2)) - 0.5) * 3)
    x6 = matrix_to_rotation_6d(r)
    assert torch.allclose(rotation_6d_to_matrix(x6), r, atol=1e-5)
    assert torch.allclose(matrix_to_rotation_6d(rotation_6d_to_matrix(x6)), x6, atol=1e-5)
    # project_pose9 is idempotent and leaves real poses alone
    x9 = torch.cat([x6, torch.randn(500, 3)], 1)
    assert torch.allclose(project_pose9(x9), x9, atol=1e-5)


def test_angles_match_the_main_model_and_the_pose_labels():
    angles = (torch.rand(500, 3, generator=torch.Generator().manual_seed(3)) - 0.5) * 2.8   # pitch within ±1.4
    r = rotation_matrix(angles)
    assert torch.allclose(matrix_to_angles(r), angles, atol=1e-4)
    assert np.allclose(matrix_to_angles(r).numpy(), rotation_to_angles(r.double().numpy()), atol=1e-4)
    assert torch.allclose(rotation_matrix(matrix_to_angles(r)), r, atol=1e-5)


def test_raw9_pose9_theta_are_one_convention():
    raw = random_raw9(64)
    x9 = pose9_from_raw9(raw)
    r, tau = pose9_to_rigid(x9)
    assert torch.allclose(r, rotation_matrix(raw[:, 3:6]), atol=1e-6) and torch.equal(tau, raw[:, 6:9])
    theta = theta_from_raw9(raw)
    assert torch.allclose(pose9_to_theta(x9, raw[:, 0]), theta, atol=1e-5)
    assert torch.allclose(theta_from_raw9(pose9_to_raw9(x9, raw[:, 0])), theta, atol=1e-5)
    assert torch.allclose(matrix_to_pose9(pose9_to_matrix(x9)), x9, atol=1e-5)


def test_relative_motion_is_the_relative_reenactment_rule():
    """Motion since frame 0 put onto a source pose θ_s gives θ_s·inv(θ_d0)·θ_d — the rule of the
    relative reenactment mode (EmoPortraitsPipeline.transfer) — for a constant driver scale."""
    raw = random_raw9(10, seed=4)
    raw[:, 0:3] = 0.9
    motion = relative_pose9(pose9_from_raw9(raw))
    assert torch.allclose(motion[0], torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0, 0]), atol=1e-6)
    theta_d = theta_from_raw9(raw)
    theta_s = theta_from_raw9(random_raw9(1, seed=5))
    expected = theta_s @ torch.linalg.inv(theta_d[:1]) @ theta_d
    assert torch.allclose(apply_motion(theta_s, motion)[0], expected, atol=1e-5)
    # a batch of sequences, each relative to its own first frame
    batch = pose9_from_raw9(random_raw9(12, seed=6)).view(3, 4, 9)
    rel = relative_pose9(batch)
    for b in range(3):
        assert torch.allclose(rel[b], relative_pose9(batch[b]), atol=1e-6)
    assert math.isclose(float(rel[:, 0, 6:].abs().max()), 0.0, abs_tol=1e-6)


@pytest.mark.parametrize("shape", [(9,), (5, 9), (2, 3, 9)])
def test_shapes_are_kept(shape):
    x9 = torch.randn(shape)
    assert pose9_to_matrix(x9).shape == (*shape[:-1], 4, 4)
    assert pose9_to_raw9(x9).shape == shape and project_pose9(x9).shape == shape
