"""The acceptance figures (emoportraits.metrics.acceptance) on synthetic data with known answers,
the summary/sheet helpers, and `emoportraits evaluate` end to end on one portrait."""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
from helpers import shared_media

from emoportraits.cli import main as cli_main
from emoportraits.errors import EmoPortraitsError
from emoportraits.metrics import acceptance as acc
from emoportraits.metrics.acceptance_report import aggregate, contact_sheet, dlib_embedder, find_pairs


def ramp_frames(n: int, pixels_per_frame: int, size: int = 200) -> np.ndarray:
    """A horizontal ramp (1 grey level per pixel) sliding left by ``pixels_per_frame`` each frame:
    every pixel brightens by exactly that many grey levels per frame."""
    x = np.arange(size)[None, :, None]
    return np.stack([np.broadcast_to(x + pixels_per_frame * t, (size, size, 3)) for t in range(n)]).astype(np.uint8)


# ---- regions and motion ----------------------------------------------------------------------------

def test_expand_box_is_a_centred_square():
    np.testing.assert_allclose(acc.expand_box([10, 20, 30, 60], 1.5), [-10, 10, 60])   # side 1.5·40, centre (20, 40)


def test_mouth_box_centres_on_the_lips():
    from emoportraits.metrics.landmarks import MOUTH

    landmarks = np.zeros((468, 3))
    landmarks[list(MOUTH), :2] = [[100, 200], [140, 220]] * 20        # lips span x 100…140, y 200…220
    np.testing.assert_allclose(acc.mouth_box(landmarks, [0, 0, 300, 300]), [90, 180, 60])   # side 1.5·40


def test_ramp_motion_is_its_speed_and_the_ratio_of_two_speeds():
    # the region is resized 160 → 128, which keeps a uniform brightening exact
    square = [20, 20, 160]
    out = np.stack([acc.region(f, square) for f in ramp_frames(10, 1)])
    drv = np.stack([acc.region(f, square) for f in ramp_frames(10, 2)])
    assert out.shape == (10, acc.REGION_SIDE, acc.REGION_SIDE, 3)
    assert acc.mean_motion(out) == pytest.approx(1.0)
    assert acc.mean_motion(drv) == pytest.approx(2.0)
    assert acc.motion_ratio(acc.mean_motion(out), acc.mean_motion(drv)) == pytest.approx(0.5)


def test_moving_sine_has_the_analytic_mean_change():
    # A·sin(w(x + d)) − A·sin(wx) = 2A·sin(wd/2)·cos(w(x + d/2)): mean |·| = 2A·|sin(wd/2)|·2/π
    # (the mean of |cos| over a period); 1024 samples per period leave a 1e-5 sampling error
    A, w, d = 100.0, 2 * np.pi / 1024, 40
    x = np.arange(1024 * 2, dtype=np.float64)                   # whole periods
    frames = np.stack([A * np.sin(w * (x + d * t))[None].repeat(2, 0) for t in range(6)])
    assert acc.mean_motion(frames) == pytest.approx(2 * A * abs(np.sin(w * d / 2)) * 2 / np.pi, rel=1e-4)


def test_motion_ratio_of_a_still_driver_is_undefined():
    assert math.isnan(acc.motion_ratio(1.0, 0.0))


def test_constant_video_is_a_noop_and_a_moving_one_is_not():
    still = np.full((8, 32, 32, 3), 90, np.uint8)
    noisy = still.copy()
    noisy[3, :3, :3] += 20                       # a few pixels of codec noise: mean change 0.18/255
    assert acc.is_noop(still) == (True, 0.0)
    assert acc.is_noop(noisy)[0] and acc.is_noop(noisy)[1] == pytest.approx(20 * 27 / noisy[0].size)
    moving, largest = acc.is_noop(ramp_frames(8, 1))
    assert not moving and largest == pytest.approx(7.0)


# ---- mouth and loudness ----------------------------------------------------------------------------

def test_frame_loudness_is_log_rms_per_frame_window():
    # 25 fps at 16 kHz: 640 samples per frame; a ±a square wave has RMS a
    amplitudes = [0.5, 0.1, 0.0, 0.02]
    samples = np.concatenate([a * np.where(np.arange(640) % 2, 1.0, -1.0) for a in amplitudes]).astype(np.float32)
    np.testing.assert_allclose(acc.frame_loudness(samples, 4, 25.0),
                               np.log([0.5, 0.1, acc.LOUDNESS_FLOOR, 0.02]), rtol=1e-6)


def test_lagged_correlation_finds_the_lag_of_a_copy():
    rng = np.random.default_rng(0)
    leader = rng.normal(size=60)
    follower = np.roll(leader, 2)                 # follower[t] = leader[t − 2]
    r, lag = acc.lagged_correlation(follower, leader)
    assert lag == 2 and r == pytest.approx(1.0)
    r, lag = acc.lagged_correlation(np.roll(leader, -1), leader)
    assert lag == -1 and r == pytest.approx(1.0)


def test_mouth_change_that_follows_loudness_gives_r_one_at_its_lag():
    rng = np.random.default_rng(1)
    n, lag = 80, 2
    loudness = rng.normal(size=n)
    # mouth pixels step up and down alternately; the step of frame t is 10 + 3·loudness[t − lag]
    steps = np.zeros(n)
    steps[lag:] = 10 + 3 * loudness[:n - lag]
    steps[1:lag] = 10
    signs = np.where(np.arange(n) % 2, 1.0, -1.0)
    level = 128 + np.cumsum(signs * steps)
    mouths = level[:, None, None] * np.ones((n, 6, 6))
    got = acc.mouth_sync(mouths, loudness)
    assert got["mouth_lag"] == lag and got["mouth_r"] == pytest.approx(1.0)
    assert got["mouth_max_change"] == pytest.approx(np.abs(level - level[0]).max())


def test_a_mouth_that_does_not_move_has_no_correlation():
    mouths = np.full((30, 8, 8, 3), 100, np.uint8)
    mouths[::2, 0, 0, 0] = 101                   # flickers by one grey level in one pixel: codec noise
    got = acc.mouth_sync(mouths, np.arange(30.0) % 2)
    assert got == {"mouth_r": 0.0, "mouth_lag": 0, "mouth_max_change": pytest.approx(1 / (8 * 8 * 3))}


# ---- seam ----------------------------------------------------------------------------------------------

def smooth_photo(size: int = 300) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    photo = np.stack([50 + 0.3 * x + 0.2 * y, 80 + 0.1 * x, 120 + 0.2 * y], -1)
    photo[:, 140:150] = 20                                  # a dark stripe crossing the box's top and bottom
    return photo.round().astype(np.uint8)


def test_hard_pasted_edge_scores_its_height_and_a_feathered_one_near_zero():
    photo, box = smooth_photo(), np.array([50.0, 60.0, 150.0])
    y, x = np.mgrid[0:300, 0:300]
    inside = (x >= 50) & (x < 200) & (y >= 60) & (y < 210)
    hard = np.clip(photo + 40 * inside[..., None], 0, 255).astype(np.uint8)
    # feathered: brightening rises smoothly over ~20 pixels around the box edge (signed distance d)
    d = np.minimum.reduce([x - 50, 199 - x, y - 60, 209 - y]).astype(np.float64)
    soft = np.clip(photo + 40 / (1 + np.exp(-d / 5))[..., None], 0, 255).round().astype(np.uint8)
    assert acc.seam_score(hard, photo, box) == pytest.approx(40, abs=1.5)
    assert acc.seam_score(soft, photo, box) < 3
    assert acc.seam_score(photo, photo, box) == 0.0
    assert acc.seam_jumps(photo, box).max() <= 1               # a ramp and an edge crossing the box are no seam
    assert acc.seam_jumps(photo, box).size == 4 * 150


def test_seam_of_a_box_filling_the_photo_is_undefined():
    photo = smooth_photo(100)
    assert acc.seam_jumps(photo, [0, 0, 100]).size == 0
    assert math.isnan(acc.seam_score(photo, photo, [0, 0, 100]))


# ---- identity and detection ------------------------------------------------------------------------

def test_identity_figures_count_only_detected_faces_under_the_threshold():
    distances = acc.face_distances([[3, 4], [0, 0.5], [0, 0.3], [0.4, 0]], [0, 0])
    np.testing.assert_allclose(distances, [5, 0.5, 0.3, 0.4])
    got = acc.identity_figures(distances, [True, True, True, False])
    assert (got.identity_ok, got.identity_median, got.detection_rate) == (0.5, pytest.approx(0.45), 0.75)


def test_targets():
    assert acc.meets_target("identity_ok", 0.8) and not acc.meets_target("identity_ok", 0.79)
    assert acc.meets_target("mouth_r", float("nan")) is None and acc.meets_target("seam", 3.0) is None


# ---- pairs, summary, sheet ---------------------------------------------------------------------------

def test_find_pairs_names_and_limits(tmp_path):
    for folder, names in {"p": ["p01_a.jpg", "p02_b.png", "notes.txt"], "v": ["d01_x.mp4", "d02_y.mov"],
                          "a": ["a01_z.wav"]}.items():
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).write_bytes(b"")
    pairs = find_pairs(tmp_path / "p", tmp_path / "v", tmp_path / "a")
    assert [(p.kind, p.name) for p in pairs] == [("video", "p01__d01"), ("video", "p01__d02"), ("video", "p02__d01"),
                                                 ("video", "p02__d02"), ("speech", "p01__a01"), ("speech", "p02__a01")]
    limited = find_pairs(tmp_path / "p", tmp_path / "v", tmp_path / "a", {"portraits": 1, "videos": 1, "pairs": 2})
    assert [p.name for p in limited] == ["p01__d01", "p01__a01"]
    with pytest.raises(EmoPortraitsError, match="no such folder"):
        find_pairs(tmp_path / "nope", tmp_path / "v", None)
    with pytest.raises(EmoPortraitsError, match="--videos DIR and/or --audio DIR"):
        find_pairs(tmp_path / "p", None, None)


def test_aggregate_means_and_target_counts():
    rows = [{"kind": "video", "frames": 10, "identity_ok": 1.0, "motion_ratio": 0.2, "noop": "ok"},
            {"kind": "video", "frames": 10, "identity_ok": 0.5, "motion_ratio": 0.8, "noop": "NO-OP"},
            {"kind": "speech", "frames": 5, "identity_ok": 0.9, "mouth_r": 0.4, "noop": "ok"}]
    got = aggregate(rows)
    assert got["video pairs"]["identity_ok"] == 0.75 and got["video pairs"]["motion_ratio_target_met"] == "1/2"
    assert got["all pairs"]["identity_ok_target_met"] == "2/3" and got["all pairs"]["frames"] == 25
    assert got["video pairs"]["noop_pairs"] == 1 and got["speech pairs"]["mouth_r_target_met"] == "1/1"
    # a pair the pipeline refused misses every target of its kind and counts as failed
    failed = {"kind": "speech", "frames": 0, "noop": "failed", "error": "refused"}
    got = aggregate(rows + [failed])
    assert got["speech pairs"]["mouth_r_target_met"] == "1/2" and got["all pairs"]["identity_ok_target_met"] == "2/4"
    assert got["all pairs"]["motion_ratio_target_met"] == "1/2" and got["all pairs"]["failed_pairs"] == 1


def test_contact_sheet_layout():
    image = np.zeros((50, 100, 3), np.uint8)
    sheet = contact_sheet([("a", [None, image]), ("b", [image, image, image])], ["photo", "1", "2"], cell=40)
    assert sheet.shape == (20 + 2 * 42 + 2, 96 + 3 * 42 + 2, 3)
    assert sheet[22 + 20, 96 + 2 + 42 + 20].tolist() == [0, 0, 0]           # the image, letterboxed…
    assert sheet[22 + 2, 96 + 2 + 42 + 20].tolist() == [255, 255, 255]      # …with white above it


# ---- the command ---------------------------------------------------------------------------------------

def test_bad_folder_is_a_one_line_error(tmp_path, capsys):
    assert cli_main(["evaluate", "--portraits", str(tmp_path / "missing"), "--videos", str(tmp_path),
                     "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "missing: no such folder of portrait images" in err


def test_missing_dlib_names_the_eval_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)       # import dlib → ImportError
    with pytest.raises(EmoPortraitsError, match=r"emoportraits\[eval\]"):
        dlib_embedder()


def test_evaluate_one_portrait_end_to_end(tmp_path, capsys):
    pytest.importorskip("dlib", reason="the [eval] extra is not installed")
    portrait = shared_media("portraits/p04_woman_auburn_bob_frontal.jpg")
    folders = {"portraits": portrait, "videos": shared_media("driving/d04_man_east_asian_smile_gaze_greenscreen.mp4"),
               "audio": shared_media("audio/a01_en_grid_male_matches_d06.wav")}
    for name, path in folders.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / path.name).symlink_to(path)
    out = tmp_path / "out"
    assert cli_main(["evaluate", *[a for n in folders for a in (f"--{n}", str(tmp_path / n))],
                     "--out", str(out), "--max-frames", "4"]) == 0
    assert "| p04__d04 | video | 4 |" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    video, speech = summary["pairs"]
    common = ("identity_ok", "identity_median", "detection_rate", "motion_output", "seam", "noop", "noop_max_change")
    for key in common + ("motion_driver", "motion_ratio", "mouth_max_change"):
        assert isinstance(video[key], (float, int, str)), key
    for key in common + ("mouth_r", "mouth_lag", "mouth_max_change"):
        assert isinstance(speech[key], (float, int, str)), key
    assert 0 <= video["identity_ok"] <= 1 and 0 <= video["detection_rate"] <= 1 and video["frames"] == 4
    assert video["noop"] in ("ok", "NO-OP") and -acc.MAX_LAG <= speech["mouth_lag"] <= acc.MAX_LAG
    assert set(summary["aggregate"]) == {"video pairs", "speech pairs", "all pairs"}
    for row in (video, speech):
        assert (out / "sheets" / f"{row['method']}.png").is_file()
        assert (out / "videos" / f"{row['method']}.mp4").is_file()
    assert (out / "summary.md").read_text().count("| p04__") == 2
