"""Output a person accepts (issue 15): a face region that is never empty, compositing without
seams, the photo render, and the refusal of a result that does not move."""
import numpy as np
import pytest
import torch

from emoportraits.errors import MediaError
from emoportraits.media.crop import paste_back, resize
from emoportraits.media.faces import Face
from emoportraits.media.mask import convex_hull, face_region_mask
from emoportraits.media.photo_warp import PhotoWarp
from emoportraits.pipelines import EmoPortraitsPipeline, MotionCheck
from helpers import REPO, shared_media, write_video

DEMO = REPO / "assets" / "default-model"
P07 = "portraits/p07_woman_dark_skin_head_tilt_leaning.jpg"     # dark skin, tilted and turned head
P09 = "portraits/p09_woman_east_asian_short_hair_turned.jpg"
D02 = "driving/d02_woman_wink_frown_head_turns.mp4"


def _largest_step(image: np.ndarray) -> float:
    """The largest difference between adjacent rows or columns (any channel)."""
    x = image.astype(np.float32)
    return float(max(np.abs(np.diff(x, axis=0)).max(), np.abs(np.diff(x, axis=1)).max()))


# ---- seams ------------------------------------------------------------------------------------------
def _smooth_photo(h=240, w=320) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([60 + 0.3 * x, 80 + 0.2 * y, np.full_like(x, 120)], -1).astype(np.uint8)


@pytest.mark.parametrize("box", [[100.0, 50.0, 120.0],     # inside the image
                                 [0.0, 0.0, 120.0],        # on the top-left corner
                                 [230.0, 160.0, 120.0]])   # clipped by the right and bottom borders
def test_paste_back_has_no_seam_on_any_side(box):
    photo = _smooth_photo()
    contrast = 100.0
    rendered = np.full((64, 64, 3), 0, np.uint8)
    rendered[:] = np.clip(photo[100, 150].astype(np.float32) + contrast, 0, 255).astype(np.uint8)
    mask = np.ones((64, 64), np.float32)                    # the mask touches the crop edge everywhere
    out = paste_back(photo, rendered, box, mask, feather=15)
    # a smooth photo and a flat render: the composite may only ramp, never jump. A hard paste steps
    # by the full difference at the box edge; a raised-cosine ramp 15 px wide by at most π/30 of it.
    jump = float(np.abs(photo.astype(np.float32) - rendered[0, 0]).max())
    assert _largest_step(out) <= jump * np.pi / 30 + 2
    assert _largest_step(paste_back(photo, rendered, box, mask, feather=0)) >= contrast - 1
    # the box's visible edge rows/columns keep the photo (alpha falls to ~0 inside the box)
    x0, y0, s = (int(v) for v in box)
    x1, y1 = min(x0 + s, 320) - 1, min(y0 + s, 240) - 1
    for y, x in [(y0, x0 + s // 2), (y1, x0 + s // 4), (y0 + s // 4, x0), (y0 + s // 4, x1)]:
        assert np.abs(out[y, x].astype(int) - photo[y, x]).max() <= 2


def test_a_hard_mask_is_softened():
    photo = _smooth_photo()
    rendered = np.full((64, 64, 3), 230, np.uint8)
    mask = np.zeros((64, 64), np.float32)
    mask[16:48, 16:48] = 1                                   # a binary mask: a hard edge inside the box
    out = paste_back(photo, rendered, [100.0, 50.0, 120.0], mask, feather=15)
    assert _largest_step(out) <= 25


def test_enlarging_a_render_is_smooth():
    # one render pixel per 10 output pixels: nearest-neighbour would step by the full 120 at each edge
    rendered = np.zeros((16, 16, 3), np.uint8)
    rendered[:, 8:] = 120
    big = paste_back(np.zeros((160, 160, 3), np.uint8), rendered, [0.0, 0.0, 160.0], None, feather=0)
    assert _largest_step(big) <= 0.25 * 120


# ---- the face region ----------------------------------------------------------------------------------
def test_convex_hull_and_face_region_from_landmarks():
    pts = np.array([[10, 10], [50, 10], [50, 40], [10, 40], [30, 25], [20, 20]], np.float64)
    hull = convex_hull(pts)
    assert len(hull) == 4 and {tuple(p) for p in hull} == {(10, 10), (50, 10), (50, 40), (10, 40)}
    face = Face(box=np.array([10.0, 10.0, 50.0, 40.0]), score=1.0, keypoints=np.zeros((6, 2)),
                landmarks=np.c_[pts, np.zeros(len(pts))])
    m = face_region_mask(face, [0.0, 0.0, 64.0], 64)        # crop = the image: 1 px per px
    assert m[25, 30] == 1 and m[5, 5] == 0 and m[45, 30] == 0
    assert abs(m.sum() - 40 * 30) <= 80                      # the 40 × 30 rectangle
    half = face_region_mask(face, [0.0, 0.0, 64.0], 32)     # half the resolution: a quarter the area
    assert abs(half.sum() - m.sum() / 4) <= 40
    face.landmarks = None                                    # no mesh: an ellipse in the detection box
    e = face_region_mask(face, [0.0, 0.0, 64.0], 64)
    assert e[25, 30] == 1 and e[10, 10] == 0 and abs(e.sum() - np.pi * 20 * 15) <= 40


class _BlindMasker:
    """A segmenter that sees nothing (what happened on a dark-skinned, turned face)."""

    def __call__(self, image):
        return np.zeros(image.shape[:2], np.float32)


@pytest.fixture(scope="module")
def demo_pipeline():
    if not (DEMO / "model.safetensors").exists():
        pytest.skip("the bundled demo model is absent")
    return EmoPortraitsPipeline.from_pretrained(DEMO, device="cpu")


@pytest.mark.parametrize("portrait", [P07, P09])
def test_the_animated_region_covers_the_face_even_when_the_segmenter_sees_nothing(demo_pipeline, portrait):
    from emoportraits.media.image import load_image

    image = load_image(shared_media(portrait))
    blind = EmoPortraitsPipeline(demo_pipeline.model, detector=demo_pipeline.detector, masker=_BlindMasker())
    src = blind.prepare_source(image)
    face = demo_pipeline.detector.detect(image)[0]
    hull = face_region_mask(face, src.box, src.mask.shape[0]) > 0
    assert hull.mean() > 0.05                                # the face is a real part of the crop
    assert (src.mask[hull] > 0.99).mean() > 0.99             # and all of it is animated
    assert (src.photo.mask[0, 0].numpy() > 0.5).mean() > 0.05
    # the real segmenter's region contains the face too
    assert (demo_pipeline.prepare_source(image).mask[hull] > 0.99).mean() > 0.99


def test_a_blind_segmenter_still_gives_a_moving_face(demo_pipeline, tmp_path):
    from emoportraits.media import iter_frames
    from emoportraits.media.image import load_image

    image = load_image(shared_media(P07))
    blind = EmoPortraitsPipeline(demo_pipeline.model, detector=demo_pipeline.detector, masker=_BlindMasker())
    out = blind.reenact(image, shared_media(D02), tmp_path / "out.mp4", max_frames=40, progress=False)
    frames = list(iter_frames(out))
    src = blind.prepare_source(image)
    x0, y0, s = (int(round(v)) for v in src.box)
    face = (slice(y0 + s // 4, y0 + 3 * s // 4), slice(x0 + s // 4, x0 + 3 * s // 4))
    change = max(np.abs(f[face].astype(np.float32) - image[face]).mean() for f in frames)
    assert change > 2.0                                      # the face moves (the photo is not returned)


# ---- the photo render -----------------------------------------------------------------------------------
def test_photo_render_is_the_photo_for_the_source_pose_and_moves_it_otherwise():
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    mask = np.ones((96, 96), np.float32)
    ref_xy = torch.rand(1, 8, 8, 2) * 2 - 1
    reference = torch.rand(1, 3, 32, 32)
    pw = PhotoWarp(crop, mask, ref_xy, reference, face=np.ones((32, 32), np.float32))
    same, m = pw.render(ref_xy, reference)
    assert np.abs(same.astype(int) - crop).max() <= 1 and m.min() == 1.0
    # a uniform shift of 2 output pixels (4/96 in grid units) moves the middle of the photo by 2 px…
    shifted, _ = PhotoWarp(crop, mask, ref_xy).render(ref_xy + torch.tensor([4 / 96, 0.0]))
    assert np.abs(shifted[12:84, 12:80].astype(int) - crop[12:84, 14:82]).max() <= 1
    # …and fades to no motion at the crop's edge: pasted whole, the crop cannot leave a seam
    reach = PhotoWarp(crop, mask, ref_xy).reach[0, 0]
    assert reach[:, 0].max() < 0.01 and reach[0].max() < 0.01 and reach[-1].max() < 0.01
    assert reach[40:56, 40:56].min() > 0.99
    # the network's change beyond the warp is added inside the face, and only there
    face = np.zeros((32, 32), np.float32)
    face[8:24, 8:24] = 1
    pw = PhotoWarp(crop, mask, ref_xy, reference, face=face)
    brighter, _ = pw.render(ref_xy, (reference + 0.2).clamp(0, 1))
    diff = brighter.astype(np.float32) - crop
    assert diff[40:56, 40:56].mean() > 20 and np.abs(diff[:8, :8]).max() <= 1


def test_photo_render_first_frame_is_the_portrait(demo_pipeline, tmp_path):
    from emoportraits.media.image import load_image

    image = load_image(shared_media(P07))
    out = demo_pipeline.reenact(image, resize(image, (500, 500)))      # the portrait drives itself
    assert np.abs(out.astype(int) - image).mean() < 0.5


# ---- a result that does not move is refused ----------------------------------------------------------------
def test_motion_check_refuses_a_still_result(demo_pipeline, tmp_path):
    from emoportraits.media.image import load_image

    image = load_image(shared_media(P07))
    src = demo_pipeline.prepare_source(image)
    check = MotionCheck(src, "out.mp4")
    for _ in range(5):
        check(image)
    with pytest.raises(MediaError, match="not animated"):
        check.finish("does the driver's face move?")
    moving = image.copy()
    moving[300:700, 300:700] //= 2
    check(moving)
    check.finish("")                                         # no error once the face changed



def test_an_empty_animated_region_is_an_error_not_a_still_video(demo_pipeline, tmp_path, monkeypatch):
    """The old failure, re-created: segmenter and face region both empty → the photo comes back
    unchanged; it must be refused, with no file left, instead of reported as done."""
    import emoportraits.media.mask as mask_module

    monkeypatch.setattr(mask_module, "face_region_mask", lambda face, box, size: np.zeros((size, size), np.float32))
    blind = EmoPortraitsPipeline(demo_pipeline.model, detector=demo_pipeline.detector, masker=_BlindMasker())
    with pytest.raises(MediaError, match="not animated"):
        blind.reenact(shared_media(P07), shared_media(D02), tmp_path / "out.mp4", max_frames=8, progress=False)
    assert list(tmp_path.iterdir()) == []
