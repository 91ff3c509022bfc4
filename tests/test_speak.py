"""`emoportraits speak`: portrait + speech → a talking video as long as the audio (tiny random models)."""
import pytest

from emoportraits.cli import main as cli_main
from emoportraits.media import probe_video
from helpers import A01, P03, save_speech_models, shared_media, write_video

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("speak")
    save_speech_models(root / "main", root / "speech", root / "whisper")
    return root


def speak(models, out, *extra):
    return cli_main(["speak", "--source", str(shared_media(P03)), "--out", str(out), "--model", str(models / "main"),
                     "--speech-model", str(models / "speech"), "--whisper", str(models / "whisper"),
                     "--device", "cpu", "--quiet", "--min-motion", "0", *map(str, extra)])    # random weights


def test_speak_writes_a_video_as_long_as_the_audio(models, tmp_path, capsys):
    out = tmp_path / "talk.mp4"
    assert speak(models, out, "--audio", shared_media(A01)) == 0
    info = probe_video(out)
    assert info.has_audio and info.fps == 25
    assert abs(info.n_frames / info.fps - 2.98) <= 1 / info.fps


def test_speak_with_the_head_motion_of_a_driver(models, tmp_path):
    out = tmp_path / "moving.mp4"
    driver = shared_media("driving/d04_man_east_asian_smile_gaze_greenscreen.mp4")
    assert speak(models, out, "--audio", shared_media(A01), "--pose", f"driver:{driver}", "--fps", 30) == 0
    info = probe_video(out)
    assert info.fps == 30 and abs(info.n_frames - round(2.98 * 30)) <= 1


def test_speak_bad_inputs(models, tmp_path, capsys):
    silent = tmp_path / "silent.mp4"
    write_video(silent, n=5)
    out = tmp_path / "out" / "o.mp4"
    out.parent.mkdir()
    for extra, message in (((tmp_path / "missing.wav",), "missing.wav: no such file"),
                           ((silent,), "silent.mp4: has no audio track"),
                           ((shared_media(A01), "--pose", "wobble"), "--pose 'wobble'")):
        assert speak(models, out, "--audio", *extra) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
        assert list(out.parent.iterdir()) == []
