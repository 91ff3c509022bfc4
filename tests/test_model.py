"""Behaviour of the EmoPortraits API on the tiny preset: shapes, batching, modes, input errors."""
import pytest
import torch

from conftest import make_model, random_images
from emoportraits import Avatar, EmoPortraitsConfig


def test_forward_shapes_and_range(tiny_model):
    src, drv = random_images(tiny_model, 2, seed=1), random_images(tiny_model, 2, seed=2)
    with torch.no_grad():
        avatar = tiny_model.encode_source(src)
        out = tiny_model.drive(avatar, drv)
    cfg = tiny_model.config
    assert out.shape == src.shape
    assert 0 <= out.min() and out.max() <= 1
    assert avatar.canonical.shape == (2, cfg.volume_channels, *cfg.volume_shape)
    assert avatar.theta.shape == (2, 4, 4) and avatar.z.shape == (2, cfg.z_dim)
    assert avatar.e_s.shape == (2, cfg.embed_channels, cfg.embed_spatial, cfg.embed_spatial)


def test_batch_equals_single_samples(tiny_model):
    src, drv = random_images(tiny_model, 3, seed=3), random_images(tiny_model, 3, seed=4)
    with torch.no_grad():
        batched = tiny_model(src, drv)
        single = torch.cat([tiny_model(src[i:i + 1], drv[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_one_avatar_drives_a_batch_of_frames(tiny_model):
    src, frames = random_images(tiny_model, 1, seed=5), random_images(tiny_model, 4, seed=6)
    with torch.no_grad():
        avatar = tiny_model.encode_source(src)
        out = tiny_model.drive(avatar, frames)
        first = tiny_model.drive(avatar, frames[:1])
    assert out.shape[0] == 4
    torch.testing.assert_close(out[:1], first, rtol=1e-4, atol=1e-5)


def test_drive_with_given_z_and_theta_matches_driver_image(tiny_model):
    src, drv = random_images(tiny_model, 1, seed=7), random_images(tiny_model, 1, seed=8)
    with torch.no_grad():
        avatar = tiny_model.encode_source(src)
        theta = tiny_model.head_pose(drv)
        z = tiny_model.expression(drv, theta)
        from_image = tiny_model.drive(avatar, drv)
        from_latents = tiny_model.drive(avatar, z=z, theta=theta)
        # θ overrides the driver's pose; z from the image is kept
        posed = tiny_model.drive(avatar, drv, theta=avatar.theta)
    torch.testing.assert_close(from_image, from_latents)
    assert z.shape == (1, tiny_model.config.z_dim) and theta.shape == (1, 4, 4)
    assert not torch.allclose(posed, from_image)


def test_expression_and_pose_change_the_output(tiny_model):
    src = random_images(tiny_model, 1, seed=9)
    with torch.no_grad():
        avatar = tiny_model.encode_source(src)
        base = tiny_model.drive(avatar, z=avatar.z, theta=avatar.theta)
        other_z = tiny_model.drive(avatar, z=avatar.z + 1.0, theta=avatar.theta)
        turned = avatar.theta.clone()
        turned[:, 0, 3] += 0.2
        moved = tiny_model.drive(avatar, z=avatar.z, theta=turned)
    assert (base - other_z).abs().max() > 1e-4
    assert (base - moved).abs().max() > 1e-4


def test_source_pose_override_and_mask(tiny_model):
    src = random_images(tiny_model, 1, seed=10)
    eye = torch.eye(4).unsqueeze(0)
    with torch.no_grad():
        a = tiny_model.encode_source(src, theta=eye)
        b = tiny_model.encode_source(src, theta=eye, mask=torch.zeros(1, 1, *src.shape[2:]))
    torch.testing.assert_close(a.theta, eye)
    assert not torch.allclose(a.canonical, b.canonical)


def test_dropout_only_in_train_mode(tiny_model):
    drv = random_images(tiny_model, 1, seed=11)
    with torch.no_grad():
        z1, z2 = tiny_model.expression(drv), tiny_model.expression(drv)
        tiny_model.train()
        torch.manual_seed(0)
        z3 = tiny_model.expression(drv)
        torch.manual_seed(1)
        z4 = tiny_model.expression(drv)
    torch.testing.assert_close(z1, z2)
    assert not torch.allclose(z3, z4)


def test_bfloat16_runs_close_to_fp32():
    model = make_model("tiny")
    src, drv = random_images(model, 1, seed=12), random_images(model, 1, seed=13)
    with torch.no_grad():
        ref = model(src, drv)
        model.to(torch.bfloat16)
        out = model(src.bfloat16(), drv.bfloat16())
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().mean() < 0.05


def test_avatar_to_keeps_theta_float32(tiny_model):
    with torch.no_grad():
        avatar = tiny_model.encode_source(random_images(tiny_model))
    moved = avatar.to("cpu", torch.bfloat16)
    assert isinstance(moved, Avatar)
    assert moved.canonical.dtype == torch.bfloat16 and moved.theta.dtype == torch.float32


@pytest.mark.parametrize("bad, message", [
    (torch.rand(1, 3, 32, 32), "shape"),
    (torch.rand(3, 64, 64), "shape"),
    (torch.rand(1, 4, 64, 64), "shape"),
    ((torch.rand(1, 3, 64, 64) * 255).to(torch.uint8), "floating-point"),
    (torch.rand(1, 3, 64, 64, dtype=torch.float64), "dtype"),
    (torch.rand(1, 3, 64, 64) * 255, "[0, 1]"),
    (torch.full((1, 3, 64, 64), float("nan")), "[0, 1]"),
    (torch.rand(1, 3, 64, 64, device="meta"), "is on meta"),
    ("image.png", "torch.Tensor"),
])
def test_bad_images_raise_value_error(tiny_model, bad, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        tiny_model.encode_source(bad)


def test_bad_latents_raise_value_error(tiny_model):
    with torch.no_grad():
        avatar = tiny_model.encode_source(random_images(tiny_model))
    with pytest.raises(ValueError, match="driver image, or both z and theta"):
        tiny_model.drive(avatar, z=avatar.z)
    with pytest.raises(ValueError, match=r"\(B, 4, 4\)"):
        tiny_model.drive(avatar, z=avatar.z, theta=torch.eye(3)[None])
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        tiny_model.drive(avatar, z=torch.zeros(1, 5), theta=avatar.theta)


def test_presets_are_consistent():
    for name in EmoPortraitsConfig.PRESETS:
        cfg = EmoPortraitsConfig.preset(name)
        assert EmoPortraitsConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown preset"):
        EmoPortraitsConfig.preset("huge")
    with pytest.raises(ValueError, match="divisible by norm_groups"):
        EmoPortraitsConfig(app_base_channels=100)
    with pytest.raises(ValueError, match="unknown fields"):
        EmoPortraitsConfig.from_dict({"image_sise": 512})


def test_small_preset_runs():
    model = make_model("small")
    with torch.no_grad():
        out = model(random_images(model), random_images(model, seed=2))
    assert out.shape == (1, 3, 256, 256)
