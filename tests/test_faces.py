"""Face layer: detection (BlazeFace via ai-edge-litert), square crops, smoothing, paste-back, masks."""
import importlib.util

import numpy as np
import pytest
import torch

from emoportraits.errors import EmoPortraitsError, MediaError
from emoportraits.media.crop import (BoxSmoother, PoseSmoother, composite, crop, paste_back, resize,
                                     square_crop_box)
from emoportraits.media.faces import Face, FaceDetector, blazeface_anchors, select_face

from helpers import MEDIA

PORTRAITS = MEDIA / "portraits"

HAVE_LITERT = importlib.util.find_spec("ai_edge_litert") is not None
needs_litert = pytest.mark.skipif(not HAVE_LITERT, reason="ai-edge-litert is not installed")
needs_portraits = pytest.mark.skipif(not PORTRAITS.is_dir(), reason=f"{PORTRAITS} is not present")


def _read(name: str) -> np.ndarray:
    import imageio.v3 as iio
    path = next(PORTRAITS.glob(f"{name}*"))
    return np.asarray(iio.imread(path))[..., :3]


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def test_anchors():
    a = blazeface_anchors()
    assert a.shape == (896, 2)
    assert (a > 0).all() and (a < 1).all()
    assert len(np.unique(a, axis=0)) == 16 * 16 + 8 * 8


@needs_litert
@needs_portraits
def test_detect_every_portrait(detector):
    paths = sorted(PORTRAITS.glob("*.jpg"))
    assert paths
    for path in paths:
        image = _read(path.stem)
        faces = detector.detect(image)
        name = path.stem
        assert faces, name
        assert [f.area for f in faces] == sorted((f.area for f in faces), reverse=True)
        face = select_face(faces, 0, name)
        assert face.score > 0.8, (name, face.score)
        assert sum(f.score > 0.8 for f in faces) == 1, name
        assert face.keypoints.shape == (6, 2) and face.landmarks.shape == (468, 3)
        # The eyes lie inside the box, image-left eye first.
        x0, y0, x1, y1 = face.box
        assert (face.keypoints[:2, 0] > x0).all() and (face.keypoints[:2, 0] < x1).all()
        assert face.keypoints[0, 0] < face.keypoints[1, 0]
        if name.startswith("p08"):
            # Short-range BlazeFace also scores foliage at ~0.60; the largest is the face.
            assert _iou(face.box, [354, 183, 652, 481]) > 0.8


@needs_litert
@needs_portraits
def test_p08_false_positive_rejected_by_face_mesh():
    image = _read("p08")
    raw = FaceDetector(verify=False).detect(image)
    verified = FaceDetector().detect(image)
    assert len(verified) == 1 and len(raw) >= len(verified)


@needs_litert
def test_no_face(detector):
    rng = np.random.default_rng(0)
    for image in (np.full((480, 640, 3), 128, np.uint8), rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)):
        faces = detector.detect(image)
        assert faces == []
        with pytest.raises(MediaError) as e:
            select_face(faces, 0, "blank.png")
        assert str(e.value) == "blank.png: no face found; use a photo where the face is clearly visible"
        assert "\n" not in str(e.value) and isinstance(e.value, ValueError)


@needs_litert
@needs_portraits
def test_two_faces(detector):
    big = resize(_read("p03"), (500, 500))
    small = np.pad(resize(_read("p06"), (400, 400)), ((0, 100), (0, 0), (0, 0)), mode="edge")
    image = np.concatenate([big, small], axis=1)
    faces = detector.detect(image)
    assert len(faces) == 2
    assert faces[0].center[0] < 500 < faces[1].center[0]
    assert select_face(faces, 1).area < select_face(faces, 0).area
    with pytest.raises(MediaError) as e:
        select_face(faces, 5, "pair.jpg")
    assert str(e.value) == "pair.jpg: --face-index 5 but only 2 face(s) found (0 = largest)"


def test_square_crop_box_inside():
    W, H = 640, 480
    for box in ([0, 0, 100, 120], [600, 400, 640, 480], [-30, 200, 90, 330], [300, 10, 340, 60],
                [100, 100, 500, 420]):  # the last one's square exceeds the image height
        x0, y0, side = square_crop_box(np.array(box, float), (W, H), scale=2.2)
        assert 0 <= x0 and 0 <= y0 and x0 + side <= W + 1e-9 and y0 + side <= H + 1e-9
        assert side == pytest.approx(min(2.2 * max(box[2] - box[0], box[3] - box[1]), H))
        assert crop(np.zeros((H, W, 3), np.uint8), (x0, y0, side), 64).shape == (64, 64, 3)
    face = Face(box=np.array([200.0, 150, 300, 250]), score=0.9, keypoints=np.zeros((6, 2)))
    x0, y0, side = square_crop_box(face, (W, H), scale=2.0)
    assert (x0 + side / 2, y0 + side / 2, side) == pytest.approx((250, 200, 200))  # centred on the box


def test_box_smoother_jitter_and_step():
    rng = np.random.default_rng(0)
    base = np.array([200.0, 150.0, 500.0])
    raw = base + rng.normal(0, 5, (200, 3))
    sm = BoxSmoother(0.5)
    out = np.array([sm.update(b) for b in raw])
    assert (out[20:].var(0) < 0.3 * raw[20:].var(0)).all()
    sm.reset()
    for _ in range(10):
        sm.update(base)
    moved = base + [100, -40, 50]
    for _ in range(15):
        last = sm.update(moved)
    assert np.abs(last - moved).max() < 2.0
    off = BoxSmoother(0.0)
    assert np.allclose([off.update(b) for b in raw[:5]], raw[:5])
    with pytest.raises(ValueError):
        BoxSmoother(1.0)


def test_pose_smoother():
    rng = np.random.default_rng(1)
    sm = PoseSmoother(0.6)
    noisy = rng.normal(0, 0.01, (100, 9)) + np.linspace(-0.3, 0.3, 9)
    out = np.array([sm.update(v) for v in noisy])
    assert (out[20:].var(0) < 0.3 * noisy[20:].var(0)).all()
    t = sm.update(torch.zeros(9))
    assert isinstance(t, torch.Tensor) and t.shape == (9,)
    sm.reset()
    assert np.allclose(sm.update(np.ones(9)), 1.0)


def test_crop_paste_back_roundtrip():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    rendered = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    box = np.array([100.3, 50.6, 120.2])
    out = paste_back(frame, rendered, box, np.ones((64, 64), np.float32), feather=0)
    expected = frame.copy()
    expected[51:171, 100:220] = resize(rendered, (120, 120), mode="bicubic")
    assert np.array_equal(out, expected)
    # Feathered: outside the box untouched, box corners (interior of the frame) still original.
    soft = paste_back(frame, rendered, box, np.ones((64, 64), np.float32), feather=10)
    mask = np.zeros(frame.shape[:2], bool)
    mask[51:171, 100:220] = True
    assert np.array_equal(soft[~mask], frame[~mask])
    assert np.abs(soft[51, 100].astype(int) - frame[51, 100]).max() <= 1  # alpha = 0.05² at the corner
    assert np.array_equal(soft[111, 160], expected[111, 160])                 # centre fully rendered
    # A crop pasted back unchanged reproduces the frame closely.
    same = paste_back(frame, crop(frame, box, 120), box, None, feather=0)
    assert np.array_equal(same, frame)


def test_composite():
    rendered = np.full((8, 8, 3), 200, np.uint8)
    mask = np.zeros((8, 8), np.float32)
    mask[2:6, 2:6] = 1
    out = composite(rendered, mask, (0, 255, 0))
    assert (out[3, 3] == 200).all() and (out[0, 0] == [0, 255, 0]).all()
    rgba = composite(rendered, mask, None)
    assert rgba.shape == (8, 8, 4) and rgba[3, 3, 3] == 255 and rgba[0, 0, 3] == 0


def test_green_key_removes_the_training_background_and_its_spill():
    from emoportraits.media.crop import green_key
    img = np.zeros((4, 4, 3), np.uint8)
    img[0] = (0, 255, 0)                          # the key colour
    img[1] = (200, 150, 120)                      # skin
    img[2] = (100, 202, 60)                       # half skin, half green (a blurry edge)
    img[3] = (40, 30, 30)                         # dark hair
    alpha, clean = green_key(img)
    assert alpha.dtype == np.float32 and alpha.shape == (4, 4)
    assert (alpha[0] == 0).all() and (alpha[1] == 1).all() and (alpha[3] == 1).all()
    assert np.allclose(alpha[2], 1 - (102 - 32) / 128)           # g = 202 − 100
    assert (clean[1] == img[1]).all() and (clean[3] == img[3]).all()   # no green in them: untouched
    assert (clean[2] == (100, 100, 60)).all() and (clean[0] == 0).all()  # G capped at max(R, B)


@needs_litert
@needs_portraits
def test_portrait_mask(detector):
    from emoportraits.media.mask import PortraitMasker, binarize
    image = _read("p03")
    m = PortraitMasker()(image)
    assert m.shape == image.shape[:2] and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1
    face = detector.detect(image)[0]
    cx, cy = face.center.astype(int)
    r = int(face.width) // 4
    assert m[cy - r:cy + r, cx - r:cx + r].mean() > 0.95   # the middle of the face
    for corner in (m[:60, :60], m[:60, -60:]):  # plain background above the shoulders
        assert corner.mean() < 0.05
    b = binarize(m)
    assert set(np.unique(b)) <= {0.0, 1.0} and b.dtype == np.float32


class _TinyParser(torch.nn.Module):
    """3 'classes': background on the left half, face on the right (stand-in for BiSeNet)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape
        right = (torch.arange(w, dtype=x.dtype) >= w // 2).to(x.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
        logits = torch.cat([10 * (1 - right), 10 * right, torch.zeros_like(right)], dim=1)
        return logits, x.mean(dim=1, keepdim=True)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_mask_from_torchscript(tmp_path):
    from emoportraits.media.mask import PortraitMasker
    path = tmp_path / "parser.pt"
    torch.jit.script(_TinyParser()).save(str(path))
    masker = PortraitMasker.from_file(path, input_size=64, foreground_classes=[1])
    m = masker(np.zeros((40, 80, 3), np.uint8))
    assert m.shape == (40, 80)
    assert m[:, :30].max() < 0.01 and m[:, 50:].min() > 0.99
    with pytest.raises(EmoPortraitsError, match="foreground_classes"):
        PortraitMasker.from_file(path, input_size=32)(np.zeros((8, 8, 3), np.uint8))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(EmoPortraitsError):
        PortraitMasker.from_file(bad)
    with pytest.raises(EmoPortraitsError):
        PortraitMasker.from_file(tmp_path / "missing.pt")
    if HAVE_LITERT:
        junk = tmp_path / "bad.tflite"
        junk.write_bytes(b"\0" * 64)
        with pytest.raises(EmoPortraitsError):
            PortraitMasker.from_file(junk)


def test_missing_runtime_message(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(EmoPortraitsError, match=r"install ai-edge-litert \(pip install ai-edge-litert\)"):
        FaceDetector().detect(np.zeros((64, 64, 3), np.uint8))
