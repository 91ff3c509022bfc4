"""The Gradio app (#7): served on 127.0.0.1 with a tiny random model bundle, called through
``gradio_client`` (every api_name, good and bad inputs) and driven in Debian's Chromium with
Playwright (uploads, clicks, the result video plays, screenshots under test-artifacts/app/)."""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # before gradio is imported
for _var in ("NO_PROXY", "no_proxy"):                         # the local server is never behind a proxy
    os.environ[_var] = ",".join(filter(None, [os.environ.get(_var), "127.0.0.1", "localhost"]))

import socket  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

gr = pytest.importorskip("gradio")
pytest.importorskip("gradio_client")
pytest.importorskip("transformers")
pytest.importorskip("skimage")

from conftest import make_model  # noqa: E402
from helpers import REPO, tiny_whisper, write_wav  # noqa: E402

from emoportraits.media import probe_video  # noqa: E402
from emoportraits.models import SpeechEncoder, SpeechEncoderConfig  # noqa: E402

ARTIFACTS = Path(os.environ.get("EMOPORTRAITS_TEST_ARTIFACTS", REPO / "test-artifacts")) / "app"
# small: quick tests; random-weight models barely move a face, which is not what these tests check
LIMITS = dict(max_video_seconds=1.0, max_audio_seconds=3.0, max_image_side=1024, min_motion=0.0)
CHROMIUM = os.environ.get("EMOPORTRAITS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def make_bundle(root: Path, parts=("speech", "whisper", "pose")) -> Path:
    """A tiny random model bundle in the layout of ``emoportraits.bundle``."""
    make_model("tiny").save_pretrained(root)
    if "speech" in parts:
        SpeechEncoder(SpeechEncoderConfig.tiny()).save_pretrained(root / "speech")
    if "whisper" in parts:
        tiny_whisper().save_pretrained(root / "whisper")
    if "pose" in parts:
        from emoportraits.models.pose_generator import PoseGenerator, PoseGeneratorConfig
        PoseGenerator(PoseGeneratorConfig.tiny()).save_pretrained(root / "pose")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from emoportraits.app.loading import Limits, load_models
    from emoportraits.app.ui import build_app

    root = tmp_path_factory.mktemp("app")
    models = load_models(str(make_bundle(root / "bundle")), device="cpu")
    demo = build_app(models, Limits(**LIMITS), workdir=root / "work")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                allowed_paths=[str(root / "work")])
    media = root / "media"
    media.mkdir()
    ex = root / "work" / "examples"                  # written by build_app
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}/", models=models, media=media,
                          portrait=ex / "astronaut.png", driver=ex / "astronaut_moving.mp4",
                          driver_image=ex / "astronaut_tilted.png",
                          speech=write_wav(media / "speech.wav", 1.0, freq=180.0))
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False, download_files=str(server.media / "downloads"))


def _video_path(value) -> str:
    return value["video"] if isinstance(value, dict) else value


def reenact(client, server, *, source=None, video=None, image=None):
    from gradio_client import handle_file

    return client.predict(handle_file(str(source or server.portrait)), video and handle_file(str(video)),
                          image and handle_file(str(image)), "relative", True, 1.0, 0.5, 1.0, api_name="/reenact")


def speak(client, server, *, source=None, audio=None, pose="still"):
    from gradio_client import handle_file

    return client.predict(handle_file(str(source or server.portrait)), handle_file(str(audio or server.speech)),
                          pose, None, api_name="/speak")


# ---- gradio_client ---------------------------------------------------------------------------------

def test_every_tab_has_an_api_name(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/reenact", "/speak", "/generate_poses"} <= set(endpoints)


def test_reenact_api_video_and_image(client, server):
    video, image, status = reenact(client, server, video=server.driver)
    info = probe_video(_video_path(video))
    assert image is None and info.n_frames == 25 and "only its first 1.0 s" in status    # 2 s cut to the limit
    video, image, status = reenact(client, server, image=server.driver_image)
    assert video is None and Path(image).stat().st_size > 0


def test_speak_api_matches_the_audio(client, server):
    video, status = speak(client, server)
    info = probe_video(_video_path(video))
    assert info.has_audio and abs(info.duration - 1.0) <= 1 / info.fps


def test_bad_inputs_give_one_line_errors_and_the_app_keeps_serving(client, server):
    from gradio_client.exceptions import AppError
    from PIL import Image

    blank = server.media / "blank.png"
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(blank)
    corrupt = server.media / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image" * 10)
    long_audio = write_wav(server.media / "long.wav", 4.0)
    huge = server.media / "huge.png"
    Image.fromarray(np.zeros((1100, 1100, 3), np.uint8)).save(huge)
    text = server.media / "notes.txt"
    text.write_text("not a video")
    cases = [
        (lambda: reenact(client, server, source=blank, image=server.driver_image), "no face"),
        (lambda: reenact(client, server, source=corrupt, image=server.driver_image), "could not be read as an image"),
        (lambda: speak(client, server, audio=long_audio), "at most 3 s of speech"),
        (lambda: speak(client, server, audio=text), "notes.txt"),
        (lambda: reenact(client, server, video=server.speech), "must be a video"),
        (lambda: reenact(client, server), "Add a driving video"),
        (lambda: reenact(client, server, source=huge, image=server.driver_image), "up to 1024 pixels"),
        (lambda: speak(client, server, pose="from a driving video"), "Choose a driving video"),
    ]
    for call, message in cases:
        with pytest.raises(AppError) as err:
            call()
        text_ = str(err.value)
        assert message in text_ and "Traceback" not in text_, text_
    _, image, _ = reenact(client, server, image=server.driver_image)     # still serving
    assert Path(image).exists()


def test_generate_poses_api(client, server):
    from gradio_client import handle_file

    plot, files, video, status = client.predict(handle_file(str(server.speech)), handle_file(str(server.portrait)),
                                                0, 1.0, True, api_name="/generate_poses")
    assert Path(plot).stat().st_size > 0
    assert sorted(Path(f).suffix for f in files) == [".json", ".npy"]
    assert abs(probe_video(_video_path(video)).duration - 1.0) <= 0.04


def test_missing_parts_and_the_demo_checkpoint_are_explained(tmp_path, monkeypatch):
    from emoportraits.app import loading
    from emoportraits.app.handlers import Handlers
    from emoportraits.app.loading import Limits, load_models

    bundle = make_bundle(tmp_path / "main-only", parts=())
    models = load_models(str(bundle), device="cpu")
    assert set(models.missing) == {"speech", "pose", "whisper"}
    assert "speech: absent" in models.describe() and "low-resolution demo" not in models.describe()
    monkeypatch.setattr(loading, "DEFAULT_MODEL", bundle)          # as if it were assets/default-model
    assert "low-resolution demo" in models.describe() and "emoportraits download" in models.describe()
    with pytest.raises(gr.Error, match="no speech encoder"):
        Handlers(models, Limits(), tmp_path / "work").speak("x.png", "y.wav", "still", None, progress=None)


def test_variable_frame_rate_recordings_are_resampled(server, tmp_path):
    """Webcam recordings (webm) often have a variable frame rate, which the pipeline refuses."""
    from emoportraits.app.handlers import Handlers
    from emoportraits.app.loading import Limits
    from helpers import write_vfr_video

    info = Handlers(server.models, Limits(), tmp_path)._video(write_vfr_video(tmp_path / "webcam.mp4"), "video")
    assert info.fps == 25 and abs(info.duration - 2.0) <= 0.08


def test_app_py_bad_model_is_one_line(capsys):
    from emoportraits.app.ui import main

    assert main(["--model", "/nonexistent/model"]) == 2
    err = capsys.readouterr().err
    assert "no such model folder" in err and "Traceback" not in err
    assert main(["--model", "nobody/no-such-model"]) == 2                # offline in the tests
    err = capsys.readouterr().err
    assert "could be fetched from the Hub" in err and "Traceback" not in err


# ---- a real browser --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def page(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.set_default_timeout(90_000)
        page.goto(server.url)
        page.wait_for_selector("#model-info")
        yield page
        browser.close()


def _wait_playable(page, selector: str) -> float:
    """Wait until the result <video> has loaded its data (readyState 4); its duration in seconds."""
    page.wait_for_function(f"() => {{ const v = document.querySelector('{selector} video');"
                           f" return v && v.readyState === 4 && v.duration > 0; }}")
    return page.evaluate(f"() => document.querySelector('{selector} video').duration")


def _upload(page, elem_id: str, path) -> None:
    page.locator(f"#{elem_id} input[type=file]").first.set_input_files(str(path))


def test_browser_reenactment(page, server):
    page.get_by_role("tab", name="Reenactment").click()
    _upload(page, "reenact-source", server.portrait)
    _upload(page, "reenact-driver-video", server.driver)
    page.wait_for_selector("#reenact-driver-video video")
    page.click("#reenact-run")
    assert abs(_wait_playable(page, "#reenact-result-video") - 1.0) <= 0.1
    page.screenshot(path=str(ARTIFACTS / "reenactment.png"), full_page=True)


def test_browser_speech(page, server):
    page.get_by_role("tab", name="Speech").click()
    _upload(page, "speak-source", server.portrait)
    _upload(page, "speak-audio", server.speech)
    page.click("#speak-run")
    assert abs(_wait_playable(page, "#speak-result-video") - 1.0) <= 0.1
    page.screenshot(path=str(ARTIFACTS / "speech.png"), full_page=True)


def test_browser_pose_generation(page, server):
    page.get_by_role("tab", name="Pose generation").click()
    page.locator("#poses-examples tbody tr").first.click()              # the bundled example speech
    page.wait_for_selector("#poses-audio audio, #poses-audio [data-testid='waveform-controls']", state="attached")
    page.click("#poses-run")
    page.wait_for_function("() => { const i = document.querySelector('#poses-plot img');"
                           " return i && i.complete && i.naturalWidth > 0; }")
    for name in ("head_poses.json", "head_poses.npy"):        # the download links
        page.wait_for_selector(f"#poses-files a[download='{name}']")
    page.screenshot(path=str(ARTIFACTS / "pose-generation.png"), full_page=True)


def test_browser_bad_input_shows_an_error(page, server, tmp_path):
    long_audio = write_wav(tmp_path / "long.wav", 4.0)
    page.goto(server.url)                 # a fresh page: empty inputs
    page.get_by_role("tab", name="Speech").click()
    _upload(page, "speak-source", server.portrait)
    _upload(page, "speak-audio", long_audio)
    page.click("#speak-run")
    page.get_by_text("at most 3 s of speech").first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "speech-error.png"), full_page=True)
