"""The geometric conventions: θ from a pose, grids, the expression crop, 6-D rotations."""
import math

import torch

from emoportraits.models import geometry as G


def test_zero_pose_is_identity():
    theta = G.pose_to_theta(torch.ones(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))
    torch.testing.assert_close(theta, torch.eye(4).expand(2, 4, 4))


def test_theta_is_scale_rotation_translation():
    scale, rot, trans = torch.tensor([[1.1, 0.9, 1.0]]), torch.tensor([[0.3, -0.2, 0.1]]), torch.tensor([[0.1, 0.2, 0.3]])
    theta = G.pose_to_theta(scale, rot, trans)
    r = G.rotation_matrix(rot)[0]
    torch.testing.assert_close(r @ r.T, torch.eye(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.tensor(1.0))
    torch.testing.assert_close(theta[0, :3, :3], torch.diag(scale[0]) @ r)
    torch.testing.assert_close(theta[0, :3, 3], torch.diag(scale[0]) @ r @ trans[0])


def test_yaw_rotates_about_the_vertical_axis():
    r = G.rotation_matrix(torch.tensor([math.pi / 2, 0.0, 0.0]))
    # Rz(yaw) in the authors' convention: x → y
    torch.testing.assert_close(r @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)


def test_angles_are_clamped():
    a = G.rotation_matrix(torch.tensor([4.0, -2.0, 0.0]))
    b = G.rotation_matrix(torch.tensor([math.pi, -math.pi / 2, 0.0]))
    torch.testing.assert_close(a, b)


def test_identity_rigid_grid_follows_the_released_convention():
    grid = G.rigid_grid(torch.eye(4)[None], (4, 6, 8))
    torch.testing.assert_close(grid, G.identity_grid_3d((4, 6, 8)))
    # linspace(-1, 1) with align_corners=False reaches the outer voxel *edges*: sample n reads the
    # input at pixel coordinate ((x + 1) · W − 1) / 2 (a slight zoom-out, as the released model does)
    ramp = torch.arange(8.0).view(1, 1, 1, 1, 8).expand(1, 1, 4, 6, 8)
    x = torch.linspace(-1, 1, 8)
    expected = (((x + 1) * 8 - 1) / 2).clamp(0, 7)
    edge = ((x + 1) * 8 - 1) / 2
    weight = torch.where(edge < 0, 1 + edge, torch.where(edge > 7, 8 - edge, torch.ones(8)))  # zero padding
    out = G.sample(ramp, grid)[0, 0, 1, 2]
    torch.testing.assert_close(out, expected * weight, atol=1e-5, rtol=0)


def test_rigid_grid_translation_shifts_the_volume():
    vol = torch.zeros(1, 1, 1, 1, 8)
    vol[..., 3] = 1
    theta = torch.eye(4)[None].clone()
    theta[0, 0, 3] = 2 / 8          # one voxel along x
    out = G.sample(vol, G.rigid_grid(theta, (1, 1, 8)))
    assert out[0, 0, 0, 0].argmax().item() == 2


def test_expression_crop_follows_the_pose():
    # an image whose value is its column index: the crop tells where it sampled
    img = torch.arange(64.0).view(1, 1, 1, 64).expand(1, 3, 64, 64)
    x = 0.5 * torch.linspace(-1, 1, 32)                       # zoom 0.5 around the centre
    crop = G.sample(img, G.expression_crop_grid(torch.eye(4)[None], 32, zoom=0.5))
    torch.testing.assert_close(crop[0, 0, 5], ((x + 1) * 64 - 1) / 2, atol=1e-4, rtol=0)
    # θ maps the posed head to canonical: for a head moved right by t, θ translates by −t and the
    # crop, which samples along inv(θ), follows the head to x + t
    theta = torch.eye(4)[None].clone()
    theta[0, 0, 3] = 0.25
    shifted = G.sample(img, G.expression_crop_grid(torch.linalg.inv(theta), 32, zoom=0.5))
    torch.testing.assert_close(shifted[0, 0, 5], ((x + 0.25 + 1) * 64 - 1) / 2, atol=1e-4, rtol=0)


def test_rotation_6d_round_trip():
    r = G.rotation_matrix(torch.randn(10, 3).clamp(-1.5, 1.5))
    torch.testing.assert_close(G.rotation_6d_to_matrix(G.matrix_to_rotation_6d(r)), r, atol=1e-5, rtol=0)
    # Gram–Schmidt makes any (non-degenerate) 6-vector a rotation
    m = G.rotation_6d_to_matrix(torch.randn(5, 6))
    torch.testing.assert_close(m @ m.transpose(1, 2), torch.eye(3).expand(5, 3, 3), atol=1e-5, rtol=0)
