"""The training losses of SPEC §3 on hand-computable cases, the loss-network loaders and the discriminator."""
import math
import warnings

import pytest
import torch
from torch import nn

from emoportraits.losses import (FacePerceptualLoss, GazeFeatureLoss, GazeVGG16Features, LossNetworks,
                                 LossNetworkWeightsError, LossWeights, PerceptualLoss, RegionL1Loss,
                                 RT_GENE_IGNORED_PREFIXES, VGG19_CLASSIFIER_KEYS, VGG19Features, VGGFaceFeatures,
                                 build_loss_networks, canonical_volume_loss, cosface_batch, cosface_loss,
                                 crop_regions, d_hinge_loss, feature_matching_loss, g_hinge_loss,
                                 source_driver_mismatch_loss, split_outputs)
from emoportraits.models.discriminator import DiscriminatorConfig, MultiScalePatchDiscriminator


class Identity(nn.Module):
    """A "feature network" whose only map is its input: makes perceptual losses plain L1."""

    def forward(self, x):
        return [x]


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1)

    def forward(self, x):
        f1 = torch.relu(self.a(x))
        return [f1, torch.relu(self.b(f1))]


def unit(deg: float) -> torch.Tensor:
    return torch.tensor([math.cos(math.radians(deg)), math.sin(math.radians(deg))])


# ------------------------------------------------------------------------------- contrastive
def _ce(pos_cos, neg_cos, s=5.0, m=0.2):
    lp, ln = s * (pos_cos - m), [s * c for c in neg_cos]
    return -lp + math.log(math.exp(lp) + sum(math.exp(v) for v in ln))


def test_cosface_closed_form():
    # anchor at 0°, positive at 30° / 80°, negatives at 60° and 120° / 10° and 90° (non-unit lengths too)
    a = torch.stack([unit(0), 3 * unit(0)])
    p = torch.stack([unit(30), 0.5 * unit(80)])
    n = torch.stack([torch.stack([unit(60), 2 * unit(120)]), torch.stack([unit(10), unit(90)])])
    expected = (_ce(math.cos(math.radians(30)), [0.5, -0.5])
                + _ce(math.cos(math.radians(80)), [math.cos(math.radians(10)), 0.0])) / 2
    assert cosface_loss(a, p, n).item() == pytest.approx(expected, rel=1e-5)
    # shared (N, D) negatives with a mask dropping the second negative of the first anchor
    shared = torch.stack([unit(60), unit(120)])
    mask = torch.tensor([[True, False], [True, True]])
    exp2 = (_ce(math.cos(math.radians(30)), [0.5]) + _ce(math.cos(math.radians(80)), [0.5, -0.5])) / 2
    assert cosface_loss(a, p, shared, negative_mask=mask).item() == pytest.approx(exp2, rel=1e-5)


def test_cosface_batch_uses_other_targets_as_negatives():
    zp = torch.stack([unit(0), unit(90), unit(200)])
    zt = torch.stack([unit(20), unit(100), unit(150)])
    c = lambda d: math.cos(math.radians(d))  # noqa: E731
    expected = (_ce(c(20), [c(100), c(150)]) + _ce(c(10), [c(70), c(60)]) + _ce(c(50), [c(180), c(100)])) / 3
    assert cosface_batch(zp, zt).item() == pytest.approx(expected, rel=1e-5)
    assert cosface_batch(zp[:1], zt[:1]).item() == pytest.approx(0.0, abs=1e-7)  # no negatives → 0


def test_source_driver_mismatch_hinge_and_stop_gradient():
    z_s = unit(0).repeat(2, 1).requires_grad_(True)
    z_d = torch.stack([unit(math.degrees(math.acos(0.3))), unit(math.degrees(math.acos(0.8)))]).requires_grad_(True)
    loss = source_driver_mismatch_loss(z_s, z_d, margin=0.5)
    assert loss.item() == pytest.approx((0.0 + 0.3) / 2, abs=1e-6)      # below margin → 0, above → cos − m
    loss.backward()
    assert z_s.grad is None and z_d.grad is not None
    assert torch.all(z_d.grad[0] == 0) and z_d.grad[1].abs().sum() > 0
    # per-sample margins/weights (FEED: margin 0.25, ×10)
    per = source_driver_mismatch_loss(z_s, z_d, margin=torch.tensor([0.25, 0.5]), weights=torch.tensor([10.0, 1.0]))
    assert per.item() == pytest.approx((10 * 0.05 + 0.3) / 2, abs=1e-5)


# ------------------------------------------------------------------------------- adversarial
def test_hinge_sign_conventions():
    full = lambda v: [torch.full((2, 1, 4, 4), v), torch.full((2, 1, 2, 2), v)]  # noqa: E731
    assert d_hinge_loss(full(2.0), full(-2.0)).item() == 0.0           # confident and right: no loss
    assert d_hinge_loss(full(0.0), full(0.0)).item() == pytest.approx(2.0)
    assert d_hinge_loss(full(-1.0), full(1.0)).item() == pytest.approx(4.0)
    assert g_hinge_loss(full(-2.0)).item() == pytest.approx(2.0)       # G wants D(fake) large
    assert g_hinge_loss(full(3.0)).item() == pytest.approx(-3.0)
    # mean over scales: scale 0 loss 0, scale 1 loss 2 → 1
    real = [torch.full((1, 1, 4, 4), 2.0), torch.zeros(1, 1, 2, 2)]
    fake = [torch.full((1, 1, 4, 4), -2.0), torch.zeros(1, 1, 2, 2)]
    assert d_hinge_loss(real, fake).item() == pytest.approx(1.0)


def test_feature_matching_constants_and_real_detached():
    real = [[torch.ones(1, 2, 4, 4, requires_grad=True), torch.ones(1, 3, 2, 2)], [torch.zeros(1, 2, 2, 2)]]
    fake = [[torch.full((1, 2, 4, 4), 2.0, requires_grad=True), torch.full((1, 3, 2, 2), 4.0)],
            [torch.full((1, 2, 2, 2), -4.0)]]
    loss = feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx(((1 + 3) / 2 + 4) / 2)
    loss.backward()
    assert real[0][0].grad is None and fake[0][0].grad is not None


# ------------------------------------------------------------------------------- volume
def test_canonical_volume_l1_and_stop_gradient():
    v_s = torch.zeros(1, 2, 2, 3, 3, requires_grad=True)
    v_d = torch.full((1, 2, 2, 3, 3), 2.0, requires_grad=True)
    loss = canonical_volume_loss(v_s, v_d)
    assert loss.item() == pytest.approx(2.0)
    loss.backward()
    assert v_d.grad is None
    assert torch.allclose(v_s.grad, torch.full_like(v_s, -1.0 / v_s.numel()))


# ------------------------------------------------------------------------------- regions
class FakeParser(nn.Module):
    """Returns one-hot logits of a fixed label map at half resolution (upsampled by the loss)."""

    def __init__(self, labels):
        super().__init__()
        self.labels, self.seen = labels, []

    def forward(self, x):
        self.seen.append(x)
        onehot = nn.functional.one_hot(self.labels, 19).permute(0, 3, 1, 2).float()
        return nn.functional.interpolate(onehot * 10, scale_factor=0.5, mode="nearest")


def test_region_l1_with_known_masks():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, 0:4, 0:2] = 4     # left eye: 8 px at full res
    labels[:, 0:2, 6:8] = 5     # right eye: 4 px
    labels[:, 4:8, 4:8] = 12    # upper lip: 16 px
    parser = FakeParser(labels)
    target = torch.zeros(1, 3, 8, 8)
    pred = torch.full((1, 3, 8, 8), 7.0)      # outside every region: must not count
    pred[..., 0:4, 0:2] = 1.0
    pred[..., 0:2, 6:8] = 3.0
    pred[..., 4:8, 4:8] = -0.5
    pred.requires_grad_(True)
    out = RegionL1Loss(parser)(pred, target)
    assert set(out) == {"eyes", "mouth", "ears"}
    assert out["eyes"].item() == pytest.approx((8 * 1 + 4 * 3) / 12)   # area-normalised
    assert out["mouth"].item() == pytest.approx(0.5)
    assert out["ears"].item() == 0.0                                      # absent region: 0, not NaN
    assert len(parser.seen) == 1 and torch.equal(parser.seen[0], target)     # masks from the target
    out["eyes"].backward()
    assert pred.grad[..., 0:4, 0:2].abs().sum() > 0 and pred.grad[..., 4:, :4].abs().sum() == 0


# ------------------------------------------------------------------------------- perceptual
def test_perceptual_zero_for_identical_positive_otherwise():
    torch.manual_seed(0)
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    loss = PerceptualLoss(VGG19Features(), num_scales=2)
    assert loss(x, x.clone()).item() == 0.0
    pred = x.clone().requires_grad_(True)
    value = loss(pred, y)
    assert value.item() > 0
    value.backward()
    assert pred.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in loss.features.parameters())
    loss.train()
    assert not loss.features.training


def test_perceptual_pyramid_average_by_hand():
    board = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(2, 2).expand(1, 3, 4, 4)  # 4×4 checkerboard
    zeros = torch.zeros(1, 3, 4, 4)
    # level 0: L1 = 1; ×0.5 bilinear averages each 2×2 block → 0 at levels 1, 2
    assert PerceptualLoss(Identity(), (1,), 1, None)(board, zeros).item() == pytest.approx(1.0)
    assert PerceptualLoss(Identity(), (1,), 2, None)(board, zeros).item() == pytest.approx(0.5)
    assert PerceptualLoss(Identity(), (1,), 3, None)(board, zeros).item() == pytest.approx(1 / 3)
    assert PerceptualLoss(Identity(), (2.5,), 1, None)(board, zeros).item() == pytest.approx(2.5)
    # ImageNet normalisation: a difference d in channel c becomes d / std_c
    ones = torch.ones(1, 3, 4, 4)
    expected = sum(1 / s for s in (0.229, 0.224, 0.225)) / 3
    assert PerceptualLoss(Identity(), (1,), 1, "imagenet")(ones, zeros).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="layer_weights"):
        PerceptualLoss(Tiny(), (1, 1, 1), 1, None)(ones, zeros)


def test_crop_regions_exact_half():
    img = torch.arange(64.0).reshape(1, 1, 8, 8)
    left = crop_regions(img, torch.tensor([[[-0.5, 0.0]]]), torch.tensor([[[1.0, 2.0]]]), (8, 4))
    assert torch.equal(left, img[..., :4])
    two = crop_regions(img.expand(2, 1, 8, 8), torch.tensor([[[-0.5, 0.0], [0.5, 0.0]]] * 2),
                       torch.tensor([[[1.0, 2.0]] * 2] * 2), (8, 4))
    assert two.shape == (4, 1, 8, 4) and torch.equal(two[3], img[0, :, :, 4:])


def test_face_perceptual_gradients_flow_through_crops():
    torch.manual_seed(0)
    pred = torch.rand(2, 3, 32, 32, requires_grad=True)
    target = torch.rand(2, 3, 32, 32)
    boxes = torch.tensor([[-1.0, -1.0, 1.0], [0.0, 0.0, 1.0]])   # top-left / bottom-right quarter
    loss_fn = FacePerceptualLoss(Tiny(), crop_size=16, layer_weights=(1, 1))
    assert loss_fn(target, target.clone(), boxes).item() == 0.0
    loss = loss_fn(pred, target, boxes)
    loss.backward()
    g = pred.grad.abs().sum(1)
    assert g[0, :16, :16].sum() > 0 and g[0, 17:, 17:].sum() == 0
    assert g[1, 16:, 16:].sum() > 0 and g[1, :15, :15].sum() == 0
    assert loss_fn(pred, target).item() > 0                       # boxes=None: whole image


def test_gaze_loss_on_eye_crops():
    torch.manual_seed(0)
    gaze = GazeFeatureLoss(Tiny(), crop_fraction=0.25, crop_size=(6, 10))
    eyes = torch.tensor([[[-0.4, -0.2], [0.4, -0.2]]])
    x = torch.rand(1, 3, 40, 40)
    assert gaze.eye_crops(x, eyes).shape == (2, 3, 6, 10)
    pred = torch.rand(1, 3, 40, 40, requires_grad=True)
    gaze(pred, x, eyes).backward()
    g = pred.grad.abs().sum((0, 1))
    assert g[:, :4].sum() == 0 and g[14:18, 8:16].sum() > 0 and g[30:].sum() == 0   # only around the eyes
    feats = GazeVGG16Features()(torch.rand(1, 3, 36, 60))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512] and feats[-1].shape[-2:] == (2, 3)


# ------------------------------------------------------------------------------- weight files
TORCHVISION_VGG19_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)


def test_vgg19_from_file_round_trip_and_errors(tmp_path):
    net = VGG19Features()
    state = net.state_dict()
    assert set(state) == {f"features.{i}.{p}" for i in TORCHVISION_VGG19_CONVS for p in ("weight", "bias")}
    full = dict(state, **{k: torch.zeros(2) for k in VGG19_CLASSIFIER_KEYS})   # classifier shapes don't matter
    torch.save(full, tmp_path / "vgg19.pth")
    loaded = VGG19Features.from_file(tmp_path / "vgg19.pth")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())

    # the other files hold stride-0 views of one number: right shapes, a few bytes on disk
    cheap = {k: torch.zeros(1).expand(v.shape) for k, v in state.items()}
    torch.save(cheap, tmp_path / "features.pth")                 # features.* only also loads
    assert VGG19Features.from_file(tmp_path / "features.pth").features[34].weight.abs().sum() == 0
    torch.save({k: v for k, v in cheap.items() if k != "features.34.bias"}, tmp_path / "missing.pth")
    with pytest.raises(LossNetworkWeightsError, match=r"missing keys \[features\.34\.bias\]"):
        VGG19Features.from_file(tmp_path / "missing.pth")
    torch.save(dict(cheap, **{"features.99.weight": torch.zeros(1)}), tmp_path / "extra.pth")
    with pytest.raises(LossNetworkWeightsError, match=r"unexpected keys \[features\.99\.weight\]"):
        VGG19Features.from_file(tmp_path / "extra.pth")
    torch.save(dict(cheap, **{"features.0.bias": torch.zeros(3)}), tmp_path / "shape.pth")
    with pytest.raises(LossNetworkWeightsError, match=r"features\.0\.bias: \(3,\) != \(64,\)"):
        VGG19Features.from_file(tmp_path / "shape.pth")


def test_vggface_and_gaze_from_file(tmp_path):
    face = VGGFaceFeatures()
    names = {f"conv{b}_{i}" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3)) for i in range(1, n + 1)}
    assert {k.split(".")[0] for k in face.state_dict()} == names
    fc = {"fc8.weight": torch.zeros(1), "fc8.bias": torch.zeros(1)}
    torch.save(dict(face.state_dict(), **fc), tmp_path / "f.pth")
    assert torch.equal(VGGFaceFeatures.from_file(tmp_path / "f.pth").conv5_3.weight, face.conv5_3.weight)
    assert len(face(torch.rand(1, 3, 32, 32))) == 5

    trunk = GazeVGG16Features().state_dict()
    rt_gene = {"left_" + k: v for k, v in trunk.items()}
    rt_gene.update({"right_" + k: v for k, v in trunk.items()})
    rt_gene.update({"fc.0.weight": torch.zeros(1), "left_features.31.weight": torch.zeros(1)})
    torch.save({"state_dict": rt_gene}, tmp_path / "rtgene.ckpt")
    gaze = GazeVGG16Features.from_file(tmp_path / "rtgene.ckpt", prefix="left_features.",
                                       ignore_prefixes=RT_GENE_IGNORED_PREFIXES)
    assert torch.equal(gaze.features[28].weight, trunk["features.28.weight"])
    with pytest.raises(LossNetworkWeightsError, match="right_features.0.weight"):
        GazeVGG16Features.from_file(tmp_path / "rtgene.ckpt", prefix="left_features.")


def test_build_loss_networks_switches_off_missing_networks(tmp_path):
    vgg = VGG19Features()            # explicitly random: allowed because we built it on purpose
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = build_loss_networks(LossNetworks(vgg19=vgg), LossWeights())
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 3
    for field in ("vggface", "gaze", "face_parser"):
        assert sum(f"LossNetworks.{field}" in m for m in messages) == 1
    w = built["weights"]
    assert built["vgg19"] is vgg and built["vggface"] is None
    assert (w.vgg19, w.vggface, w.gaze, w.eyes, w.mouth, w.ears) == (18.0, 0, 0, 0, 0, 0)
    assert w.feature_matching == 40.0 and LossWeights().vggface == 10.0   # the input is not mutated

    torch.save(GazeVGG16Features().state_dict(), tmp_path / "gaze.pth")
    with pytest.warns(UserWarning, match="LossNetworks.vgg19"):
        built = build_loss_networks(LossNetworks(gaze=str(tmp_path / "gaze.pth"), vggface=VGGFaceFeatures(),
                                                 face_parser=FakeParser(torch.zeros(1, 8, 8, dtype=torch.long))),
                                    LossWeights.paper())
    assert isinstance(built["gaze"], GazeVGG16Features) and built["weights"].vgg19 == 0
    assert built["weights"].gaze == 10.0 and built["weights"].eyes == 500.0


def test_loss_weights_defaults_and_paper():
    code, paper = LossWeights(), LossWeights.paper()
    assert (code.vgg19, code.canonical_volume, code.sdm_margin_feed) == (18.0, 0.5, 0.5)
    assert (paper.vgg19, paper.canonical_volume, paper.sdm_margin_feed) == (20.0, 1.0, 0.25)
    assert (code.cosface, code.cosface_s, code.cosface_m, code.sdm_feed_multiplier) == (2.0, 5.0, 0.2, 10.0)
    assert not code.regions_active(9) and code.regions_active(10)


# ------------------------------------------------------------------------------- discriminator
def test_discriminator_shapes_and_parameter_count():
    d = MultiScalePatchDiscriminator()
    assert sum(p.numel() for p in d.parameters()) == 3_104_898          # SPEC: 3.10 M
    out = d(torch.rand(2, 3, 64, 64))
    assert len(out) == 2
    feats, logits = out[0]
    assert [f.shape for f in feats] == [(2, 64, 32, 32), (2, 128, 16, 16), (2, 256, 8, 8), (2, 512, 4, 4)]
    assert logits.shape == (2, 1, 4, 4) and out[1][1].shape == (2, 1, 2, 2)
    feats_list, logits_list = split_outputs(out)
    assert len(feats_list) == 2 and len(logits_list[1]) == 2
    small = MultiScalePatchDiscriminator.from_config(DiscriminatorConfig(num_scales=3, base_channels=8,
                                                                         max_channels=16))
    assert [o[1].shape[-1] for o in small(torch.rand(1, 3, 128, 128))] == [8, 4, 2]


def test_face_parser_from_exported_file(tmp_path):
    torch.manual_seed(0)
    program = torch.export.export(nn.Conv2d(3, 19, 1), (torch.rand(1, 3, 8, 8),))
    torch.export.save(program, tmp_path / "parser.pt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # the other three networks are missing on purpose
        parser = build_loss_networks(LossNetworks(face_parser=tmp_path / "parser.pt2"), LossWeights())["face_parser"]
    loss = RegionL1Loss(parser).train()              # train()/eval() must not reach the exported module
    out = loss(torch.rand(1, 3, 8, 8, requires_grad=True), torch.rand(1, 3, 8, 8))
    assert set(out) == {"eyes", "mouth", "ears"} and all(torch.isfinite(v) for v in out.values())
