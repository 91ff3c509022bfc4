"""The reenactment pipeline and `emoportraits reenact`, from ordinary files, with a tiny model."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_model
from emoportraits.cli import main as cli_main
from emoportraits.media import iter_frames, probe_video, save_image
from emoportraits.pipelines import EmoPortraitsPipeline, ReenactOptions
from helpers import shared_media, write_audio_only_mp4, write_vfr_video, write_video

P03 = "portraits/p03_man_east_asian_frontal_plain_bg.jpg"
P05 = "portraits/p05_man_beard_three_quarter_view.jpg"
D04 = "driving/d04_man_east_asian_smile_gaze_greenscreen.mp4"     # 78 frames, 25 fps, no audio
D06 = "driving/d06_grid_man_talking_with_audio.mp4"               # 75 frames, 25 fps, speech


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny"
    make_model("tiny").save_pretrained(path)
    return path


def reenact(model_dir, source, driver, out, *extra):
    return cli_main(["reenact", "--source", str(source), "--driver", str(driver), "--out", str(out),
                     "--model", str(model_dir), "--device", "cpu", "--quiet", "--min-motion", "0",   # random weights
                     *map(str, extra)])


def test_video_driver_gives_mp4_with_frames_fps_and_audio(model_dir, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    assert reenact(model_dir, shared_media(P03), shared_media(D06), out) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    info, driver = probe_video(out), probe_video(shared_media(D06))
    assert abs(info.n_frames - driver.n_frames) <= 1
    assert info.fps == driver.fps and info.has_audio
    assert (info.width, info.height) == (1000, 1000)          # pasted back into the photo
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_image_driver_gives_image(model_dir, tmp_path):
    out = tmp_path / "out.png"
    assert reenact(model_dir, shared_media(P03), shared_media(P05), out, "--no-paste-back",
                   "--background", "transparent") == 0
    image = np.asarray(Image.open(out))
    # the photo render works at the crop's own resolution in the photo (2.2× the face box), RGBA
    assert image.shape[2] == 4 and image.shape[0] == image.shape[1] > 256
    assert reenact(model_dir, shared_media(P03), shared_media(P05), out, "--no-paste-back",
                   "--background", "transparent", "--render", "network") == 0
    assert np.asarray(Image.open(out)).shape == (64, 64, 4)    # the model-resolution crop, RGBA


def test_python_pipeline_and_cli_give_the_same_frames(model_dir, tmp_path):
    cli_out, py_out = tmp_path / "cli.mp4", tmp_path / "py.mp4"
    assert reenact(model_dir, shared_media(P03), shared_media(D04), cli_out, "--max-frames", 6,
                   "--absolute", "--smooth", 0.3) == 0
    pipe = EmoPortraitsPipeline.from_pretrained(model_dir, device="cpu")
    pipe.reenact(shared_media(P03), shared_media(D04), py_out, max_frames=6, relative=False, smooth=0.3,
                 progress=False, min_motion=0)
    a, b = list(iter_frames(cli_out)), list(iter_frames(py_out))
    assert len(a) == len(b) == 6
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_driver_without_audio_gives_a_silent_video(model_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="emoportraits")
    out = tmp_path / "silent.mp4"
    assert reenact(model_dir, shared_media(P03), shared_media(D04), out, "--max-frames", 3) == 0
    assert not probe_video(out).has_audio
    assert "has no audio track; the video is silent" in caplog.text


def test_given_audio_is_muxed(model_dir, tmp_path):
    out = tmp_path / "voiced.mp4"
    assert reenact(model_dir, shared_media(P03), shared_media(D04), out, "--max-frames", 5,
                   "--audio", shared_media("audio/a01_en_grid_male_matches_d06.wav")) == 0
    assert probe_video(out).has_audio


def test_motion_transfer_modes():
    theta_s, theta_0 = torch.eye(4)[None], torch.eye(4)[None].clone()
    theta_0[0, 0, 3] = 0.3
    avatar = type("A", (), {"theta": theta_s, "z": torch.zeros(1, 16)})()
    z0 = torch.ones(1, 16)
    relative = ReenactOptions(relative=True, expression_scale=0.5)
    # the driver's first frame maps onto the source's own pose and expression
    theta, z = EmoPortraitsPipeline.transfer(avatar, theta_0, z0, (theta_0, z0), relative)
    torch.testing.assert_close(theta, theta_s)
    torch.testing.assert_close(z, avatar.z)
    # a later frame moves the source by the driver's change, the expression by half of it
    theta_t, zt = theta_0.clone(), z0 + 2
    theta_t[0, 1, 3] = 0.1
    theta, z = EmoPortraitsPipeline.transfer(avatar, theta_t, zt, (theta_0, z0), relative)
    torch.testing.assert_close(theta[0, :3, 3], torch.tensor([0.0, 0.1, 0.0]))
    torch.testing.assert_close(z, torch.full((1, 16), 1.0))
    absolute = ReenactOptions(relative=False)
    theta, z = EmoPortraitsPipeline.transfer(avatar, theta_t, zt, (theta_0, z0), absolute)
    assert torch.equal(theta, theta_t) and torch.equal(z, zt)


# ---- bad input: one clear line, exit status 2, no output file ----------------------------------------

def _fails(model_dir, tmp_path, capsys, source, driver, out_name, message, *extra):
    out = tmp_path / "out" / out_name
    out.parent.mkdir(exist_ok=True)
    code = reenact(model_dir, source, driver, out, *extra)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0], lines[0]
    assert list(out.parent.iterdir()) == []          # no output and no temporary file
    return lines[0]


def _side_by_side(tmp_path):
    a, b = (np.asarray(Image.open(shared_media(p)).convert("RGB").resize((500, 500))) for p in (P03, P05))
    path = tmp_path / "two.jpg"
    Image.fromarray(np.concatenate([a, b], axis=1)).save(path)
    return path


def test_no_face(model_dir, tmp_path, capsys):
    flat = tmp_path / "wall.png"
    save_image(np.full((300, 300, 3), 128, np.uint8), flat)
    _fails(model_dir, tmp_path, capsys, flat, shared_media(D04), "o.mp4", "wall.png: no face found")


def test_several_faces_pick_largest_or_the_chosen_one(model_dir, tmp_path, capsys, caplog):
    two = _side_by_side(tmp_path)
    caplog.set_level(logging.INFO, logger="emoportraits")
    assert reenact(model_dir, two, shared_media(P05), tmp_path / "ok.png") == 0
    assert "2 faces found; animating face 0" in caplog.text
    assert reenact(model_dir, two, shared_media(P05), tmp_path / "ok1.png", "--face-index", 1) == 0
    _fails(model_dir, tmp_path, capsys, two, shared_media(P05), "o.png",
           "--face-index 5 but only 2 face(s) found", "--face-index", 5)


def test_corrupt_and_unsupported_files(model_dir, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    _fails(model_dir, tmp_path, capsys, broken, shared_media(D04), "o.mp4", "broken.jpg: could not be read")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    _fails(model_dir, tmp_path, capsys, shared_media(P03), notes, "o.mp4", "unsupported driver file type")
    _fails(model_dir, tmp_path, capsys, shared_media(P03), shared_media(D04), "o.png",
           "a video driver gives a video")
    _fails(model_dir, tmp_path, capsys, tmp_path / "missing.jpg", shared_media(D04), "o.mp4", "no such file")


@pytest.mark.parametrize("mode, note", [("L", "grayscale"), ("RGBA", "alpha"), ("I;16", "16-bit")])
def test_unusual_image_modes_are_converted_with_a_note(model_dir, tmp_path, caplog, mode, note):
    photo = Image.open(shared_media(P03)).convert("RGB")
    if mode == "I;16":
        gray = np.asarray(photo.convert("L"), np.uint16) * 257
        photo = Image.fromarray(gray)
    else:
        photo = photo.convert(mode)
    source = tmp_path / "source.png"
    photo.save(source)
    caplog.set_level(logging.INFO, logger="emoportraits")
    assert reenact(model_dir, source, shared_media(P05), tmp_path / "ok.png") == 0
    assert note in caplog.text.lower()
    assert (tmp_path / "ok.png").is_file()


def test_huge_and_tiny_images(model_dir, tmp_path, capsys):
    tiny = tmp_path / "tiny.png"
    Image.open(shared_media(P03)).resize((40, 40)).save(tiny)
    _fails(model_dir, tmp_path, capsys, tiny, shared_media(P05), "o.png", "tiny.png: image is too small")
    huge = tmp_path / "huge.png"
    Image.new("RGB", (8000, 6000)).save(huge)       # 48 MP: over the 40 MP limit
    _fails(model_dir, tmp_path, capsys, huge, shared_media(P05), "o.png", "huge.png: image is too large")


def test_zero_frame_and_variable_rate_videos(model_dir, tmp_path, capsys):
    _fails(model_dir, tmp_path, capsys, shared_media(P03), write_audio_only_mp4(tmp_path / "audio.mp4"), "o.mp4",
           "audio.mp4: the file has no video stream, so no frames")
    _fails(model_dir, tmp_path, capsys, shared_media(P03), write_vfr_video(tmp_path / "vfr.mp4"), "o.mp4",
           "vfr.mp4: the video has a variable frame rate")


def test_driver_without_a_face(model_dir, tmp_path, capsys):
    flat = [np.full((64, 64, 3), 90, np.uint8)] * 3
    write_video(tmp_path / "empty.mp4", frames=flat)
    _fails(model_dir, tmp_path, capsys, shared_media(P03), tmp_path / "empty.mp4", "o.mp4",
           "empty.mp4: no face found in frame 0")


def test_model_folder_problems(model_dir, tmp_path, capsys):
    _fails(tmp_path / "nowhere", tmp_path, capsys, shared_media(P03), shared_media(P05), "o.png",
           "no such model folder")
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text((model_dir / "config.json").read_text())
    _fails(broken, tmp_path, capsys, shared_media(P03), shared_media(P05), "o.png", "has no model.safetensors")


def test_hub_repo_ids_go_to_the_hub(monkeypatch):
    """`owner/name` is a Hub id (offline here: a one-line error), not a missing folder."""
    from emoportraits.errors import EmoPortraitsError
    from emoportraits.pipelines import EmoPortraitsPipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EmoPortraitsError, match="someone/some-avatar-model: could not load the model"):
        EmoPortraitsPipeline.from_pretrained("someone/some-avatar-model")


def test_bad_options(model_dir, tmp_path, capsys):
    _fails(model_dir, tmp_path, capsys, shared_media(P03), shared_media(D04), "o.mp4",
           "mp4 video has no transparency", "--no-paste-back", "--background", "transparent")
    _fails(model_dir, tmp_path, capsys, shared_media(P03), shared_media(D04), "o.mp4",
           "smooth must be in [0, 1)", "--smooth", 1.5)
