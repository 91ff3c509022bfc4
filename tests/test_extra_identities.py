"""Extra training identities: mirrored videos and moving still portraits."""
from __future__ import annotations

import numpy as np
from PIL import Image

from emoportraits.data.extra_identities import extra_identity_videos, mirror_video, still_clip, still_motion
from emoportraits.media.video import iter_frames, probe_video

from helpers import smooth_frames, write_video


def test_still_motion_stays_in_range_smooth_and_seeded():
    m = still_motion(200, fps=25, seed=3)
    assert m.shape == (200, 4)
    assert (m[:, 0] >= 1.15 - 1e-9).all() and (m[:, 0] <= 1.25 + 1e-9).all()     # zoom: no borders
    assert np.abs(np.rad2deg(m[:, 1])).max() <= 6 + 1e-9
    assert np.abs(m[:, 2:]).max() <= 0.02 * 512 + 1e-9
    assert np.abs(np.diff(m[:, 1])).max() < np.deg2rad(1.0)                    # slow: under 1° per frame
    np.testing.assert_array_equal(m, still_motion(200, fps=25, seed=3))
    assert not np.allclose(m, still_motion(200, fps=25, seed=4))


def test_still_clip_moves_the_picture_without_borders(tmp_path):
    y, x = np.mgrid[0:300, 0:400]
    picture = np.stack([x * 255 // 400, y * 255 // 300, np.full_like(x, 90)], -1).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "p.png")
    out = still_clip(tmp_path / "p.png", tmp_path / "p.mp4", frames=12, fps=25, seed=0)
    info = probe_video(out)
    assert (info.width, info.height, info.n_frames) == (512, 512, 12) and abs(info.fps - 25) < 1e-6
    frames = list(iter_frames(out))
    assert min(f.min(axis=(0, 1)).max() for f in frames) > 10        # no black corners
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1   # it moves
    mirrored = list(iter_frames(still_clip(tmp_path / "p.png", tmp_path / "m.mp4", frames=2, seed=0, mirror=True)))
    # the mirrored picture runs right to left: its red channel (x gradient) decreases across the frame
    assert mirrored[0][:, :64, 0].mean() > mirrored[0][:, -64:, 0].mean() + 100
    assert frames[0][:, :64, 0].mean() + 100 < frames[0][:, -64:, 0].mean()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mp4", "p.mp4", "p.png"]   # no temporary files


def test_mirror_video_flips_every_frame(tmp_path):
    x = np.linspace(0, 1, 64)[None, :, None]
    frames = [np.broadcast_to(np.concatenate([200 * x, 150 * x ** 2 + i, 60 + 0 * x], -1), (48, 64, 3)).astype(np.uint8)
              for i in range(6)]                  # strongly left-right asymmetric
    write_video(tmp_path / "v.mp4", frames=frames, fps=30)
    out = mirror_video(tmp_path / "v.mp4", tmp_path / "v_mirrored.mp4")
    assert abs(probe_video(out).fps - 30) < 1e-6
    got = list(iter_frames(out))
    assert len(got) == 6
    for original, mirrored in zip(frames, got):
        assert np.abs(mirrored.astype(int) - original[:, ::-1].astype(int)).mean() < 8      # two encodes of noise only
        assert np.abs(mirrored.astype(int) - original.astype(int)).mean() > 20


def test_extra_identity_videos_makes_each_clip_once(tmp_path):
    write_video(tmp_path / "a.mp4", frames=smooth_frames(4, 48, 64))
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(tmp_path / "s.png")
    clips = extra_identity_videos([tmp_path / "a.mp4"], [tmp_path / "s.png"], tmp_path / "extra", still_frames=3)
    assert [c.name for c in clips] == ["a_mirrored.mp4", "s_still.mp4", "s_mirrored_still.mp4"]
    stamps = [c.stat().st_mtime_ns for c in clips]
    again = extra_identity_videos([tmp_path / "a.mp4"], [tmp_path / "s.png"], tmp_path / "extra", still_frames=3)
    assert again == clips and [c.stat().st_mtime_ns for c in again] == stamps
