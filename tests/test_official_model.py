"""The short name `official`: resolved to the cached download by the Python loaders, the CLI and the app;
downloaded on first use when online, a one-line error naming the command when offline; published to
the Hub with its card. The cached model here is a tiny-preset conversion of a synthetic release."""
import sys
from pathlib import Path

import pytest

import parity
import release_fixture as rf
from emoportraits import EmoPortraits, bundle, download
from emoportraits.cli import main as cli_main
from emoportraits.errors import EmoPortraitsError
from helpers import P03, shared_media

pytestmark = pytest.mark.skipif(not parity.available(), reason="../shared/parity is not present")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    generator, head_pose = rf.official_state_dicts("tiny")
    return {"logs.zip": rf.write_logs_zip(root / "logs.zip", generator),
            "repos.zip": rf.write_repos_zip(root / "repos.zip", head_pose)}


@pytest.fixture(scope="module")
def cached_home(release, tmp_path_factory):
    """A cache folder holding the official model (converted from the synthetic release)."""
    home = tmp_path_factory.mktemp("home")
    download.download_official(list(map(str, release.values())), cache_dir=home, preset="tiny", progress=False)
    return home


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("EMOPORTRAITS_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("EMOPORTRAITS_MODEL", raising=False)
    monkeypatch.setattr(download, "YANDEX_API", rf.closed_port_url())
    monkeypatch.setitem(sys.modules, "gdown", None)


def test_python_loaders_resolve_the_cached_model(cached_home, monkeypatch):
    from emoportraits.pipelines import EmoPortraitsPipeline

    monkeypatch.setenv("EMOPORTRAITS_HOME", str(cached_home))
    assert bundle.resolve_model("official") == str(cached_home / "official")
    assert bundle.resolve_model("some/repo") == "some/repo"
    assert bundle.default_model() == "official"          # cached: the default
    assert EmoPortraits.from_pretrained("official").config.image_size == 64
    pipe = EmoPortraitsPipeline.from_pretrained("official", device="cpu")
    assert pipe.model.config.extra["license"] == "cc-by-nc-sa-4.0"
    assert bundle.component_path("official", "speech") is None           # the release has no speech part


def test_not_cached_offline_is_one_line_naming_the_command(tmp_path, capsys):
    assert bundle.default_model() == str(bundle.DEFAULT_MODEL)            # not cached: the bundled demo
    with pytest.raises(EmoPortraitsError, match="run `emoportraits download` once with internet"):
        EmoPortraits.from_pretrained("official")
    image = shared_media(P03)
    code = cli_main(["reenact", "--source", str(image), "--driver", str(image), "--out", str(tmp_path / "o.png"),
                     "--model", "official", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "emoportraits download" in err and len(err.strip().splitlines()) == 1
    assert bundle.component_path("official", "pose") is None


def test_not_cached_online_downloads_first_and_says_so(release, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    original = download.download_official             # the release here is of the tiny preset
    monkeypatch.setattr(download, "download_official", lambda **kw: original(preset="tiny", **kw))
    with rf.ReleaseServer(release) as server:
        monkeypatch.setattr(download, "YANDEX_API", server.api)
        model = EmoPortraits.from_pretrained("official")
        assert len([p for p, _ in server.requests if p == "/api/download"]) == 2
    assert "downloading the authors' release once" in capsys.readouterr().err
    assert model.config.image_size == 64
    assert download.cached_official() == tmp_path / "empty-home" / "official"


def test_cli_reenacts_with_the_official_model(cached_home, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("EMOPORTRAITS_HOME", str(cached_home))
    image, out = shared_media(P03), tmp_path / "out.png"
    code = cli_main(["reenact", "--source", str(image), "--driver", str(image), "--out", str(out),
                     "--model", "official", "--device", "cpu", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert f"wrote {out}" in capsys.readouterr().out and out.stat().st_size > 0


def test_app_uses_the_official_model_when_cached(cached_home, monkeypatch):
    from emoportraits.app.loading import load_models

    monkeypatch.setenv("EMOPORTRAITS_HOME", str(cached_home))
    models = load_models(None, device="cpu")                 # no --model: the cached official model
    assert models.name == "official" and not models.is_demo
    assert "CC BY-NC-SA 4.0" in models.describe() and "64×64" in models.describe()
    assert load_models("official", device="cpu").pipeline.model.config.image_size == 64


def test_app_without_the_official_model(monkeypatch, capsys):
    pytest.importorskip("gradio")
    from emoportraits.app.loading import load_models
    from emoportraits.app.ui import main as app_main

    models = load_models(None, device="cpu")                 # not cached: the bundled demo names the command
    assert models.is_demo and "`emoportraits download`" in models.describe()
    capsys.readouterr()
    assert app_main(["--model", "official", "--device", "cpu"]) == 2       # offline: one line, no traceback
    err = capsys.readouterr().err
    assert err.startswith("app.py: error:") and "emoportraits download" in err and "Traceback" not in err


def test_push_to_hub_uploads_the_folder_and_its_card(cached_home, monkeypatch, capsys):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo, exist_ok: calls.append(("create", repo, exist_ok)) or f"hf.co/{repo}")
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder",
                        lambda self, repo_id, folder_path, commit_message: calls.append(("upload", repo_id,
                                                                                          folder_path)))
    code = cli_main(["download", "--cache-dir", str(cached_home), "--push-to-hub", "someone/emoportraits"])
    out, err = capsys.readouterr()
    assert code == 0 and out.strip().splitlines()[-1] == str(cached_home / "official")
    folder = str(cached_home / "official")
    assert calls == [("create", "someone/emoportraits", True), ("upload", "someone/emoportraits", folder)]
    assert "Licence" in (Path(folder) / "README.md").read_text()

    def refuse(self, repo, exist_ok):
        raise RuntimeError("401 Unauthorized\nmore details")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    code = cli_main(["download", "--cache-dir", str(cached_home), "--push-to-hub", "someone/emoportraits"])
    err = capsys.readouterr().err
    errors = [line for line in err.strip().splitlines() if not line.startswith("note:")]
    assert code == 2 and len(errors) == 1 and "401 Unauthorized" in errors[0] and "hf auth login" in errors[0]
