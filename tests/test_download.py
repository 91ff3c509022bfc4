"""`emoportraits download`: the authors' release fetched from a local server (or local files), found in
its archives, converted strictly and cached; every bad case is one line and leaves nothing behind.

Releases are synthetic (fill-rule weights under the official names, tiny preset); the released preset
is the slow test at the end, which also checks parity with ../shared/parity."""
import hashlib
import json
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch

import parity
import release_fixture as rf
from emoportraits import EmoPortraits, download
from emoportraits.cli import main as cli_main
from emoportraits.convert import convert_official_state_dict
from emoportraits.release_files import OFFICIAL_EXPERIMENT

pytestmark = pytest.mark.skipif(not parity.available(), reason="../shared/parity is not present")


@pytest.fixture(autouse=True)
def local_only(monkeypatch, tmp_path):
    """No proxy for 127.0.0.1, the cache in tmp_path, and never a real cloud folder or gdown."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("EMOPORTRAITS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EMOPORTRAITS_MODEL", raising=False)
    monkeypatch.setattr(download, "YANDEX_API", rf.closed_port_url())
    monkeypatch.setitem(sys.modules, "gdown", None)        # `import gdown` fails: not installed


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny-preset release in the authors' layout, and the state_dict it must convert to."""
    root = tmp_path_factory.mktemp("release")
    generator, head_pose = rf.official_state_dicts("tiny")
    files = {"logs.zip": rf.write_logs_zip(root / "logs.zip", generator),
             "repos.zip": rf.write_repos_zip(root / "repos.zip", head_pose)}
    return types.SimpleNamespace(root=root, files=files, generator=generator, head_pose=head_pose,
                                 expected=convert_official_state_dict(generator, head_pose))


def run_download(capsys, *args):
    """`emoportraits download … --preset tiny --quiet` in-process: (status, stdout lines, stderr)."""
    code = cli_main(["download", "--preset", "tiny", "--quiet", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.exists() else []


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("emoportraits download: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_converted(folder: Path, release) -> None:
    model = EmoPortraits.from_pretrained(folder)                  # strict
    state = model.state_dict()
    assert set(state) == set(release.expected)
    assert all(torch.equal(state[k], release.expected[k]) for k in state)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- the happy paths ------------------------------------------------------------------------------
def test_download_from_urls_then_a_second_call_downloads_nothing(release, tmp_path, capsys):
    cache = tmp_path / "cache"
    with rf.ReleaseServer(release.files) as server:
        sources = ["--from", server.api_url("logs.zip"), "--from", server.url("repos.zip")]
        code, out, err = run_download(capsys, *sources, "--cache-dir", cache)
        assert code == 0, err
        folder = Path(out[-1])
        assert folder == cache / "official"
        assert files_under(cache) == ["official/README.md", "official/config.json", "official/model.safetensors",
                                      "official/provenance.json"]       # archives and temporaries are gone
        assert [p for p, _ in server.requests] == ["/api/download", "/files/logs.zip", "/files/repos.zip"]
        code, again, err = run_download(capsys, *sources, "--cache-dir", cache)
        assert code == 0 and again[-1] == str(folder) and "already" in err
        assert len(server.requests) == 3                                  # nothing downloaded
    assert_converted(folder, release)
    provenance = json.loads((folder / "provenance.json").read_text())
    assert [(i["file"], i["origin"], i["sha256"]) for i in provenance["inputs"]] == [
        ("logs.zip", server.api_url("logs.zip"), sha256(release.files["logs.zip"])),
        ("repos.zip", server.url("repos.zip"), sha256(release.files["repos.zip"]))]
    assert provenance["generator"]["member"] == f"logs/{OFFICIAL_EXPERIMENT}/checkpoints/100_model.pth"
    assert provenance["head_pose_regressor"]["member"] == "repos/head_pose_regressor.pth"
    assert provenance["experiment"] == OFFICIAL_EXPERIMENT
    card = (folder / "README.md").read_text()
    assert "license: cc-by-nc-sa-4.0" in card and "non-commercial" in card
    assert sha256(release.files["logs.zip"]) in card and server.url("repos.zip") in card


def test_download_from_local_files_and_a_bare_pth(release, tmp_path, capsys):
    pth = tmp_path / "head_pose_regressor.pth"
    torch.save(release.head_pose, pth)
    cache = tmp_path / "cache"
    code, out, err = run_download(capsys, "--from", pth, "--from", release.files["logs.zip"], "--cache-dir", cache)
    assert code == 0, err
    assert_converted(Path(out[-1]), release)
    assert pth.is_file() and release.files["logs.zip"].is_file()          # the user's files stay
    assert files_under(cache / "downloads") == []


def test_default_sources_use_the_yandex_download_api(release, monkeypatch):
    with rf.ReleaseServer(release.files) as server:
        monkeypatch.setattr(download, "YANDEX_API", server.api)
        folder = download.download_official(preset="tiny", progress=False)
        assert folder == Path(os.environ["EMOPORTRAITS_HOME"]) / "official"
        api_calls = [p for p, _ in server.requests if p == "/api/download"]
        assert len(api_calls) == 2                       # one JSON href per archive
    assert_converted(folder, release)
    provenance = json.loads((folder / "provenance.json").read_text())
    assert all(i["origin"].startswith(server.api + "?public_key=https%3A%2F%2Fdisk.yandex.com") for i in
               provenance["inputs"])


def fake_gdown(files: dict, payload=None):
    """A stand-in for gdown: lists the folder and copies the release files (or ``payload``)."""
    def download_folder(url, skip_download, quiet):
        assert skip_download and "drive.google.com" in url
        return [types.SimpleNamespace(id=f"id-{name}", path=f"EMOPortraits/{name}") for name in files]

    def download_file(id, output, quiet, resume):
        name = id.removeprefix("id-")
        Path(output).write_bytes(payload if payload is not None else Path(files[name]).read_bytes())
        return output
    return types.SimpleNamespace(download_folder=download_folder, download=download_file)


def test_google_drive_is_the_fallback(release, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gdown", fake_gdown(release.files))
    folder = download.download_official(preset="tiny", progress=False)
    assert "trying Google Drive" in capsys.readouterr().err
    assert_converted(folder, release)
    origins = [i["origin"] for i in json.loads((folder / "provenance.json").read_text())["inputs"]]
    assert origins == [f"{download.GDRIVE_FOLDER} (logs.zip)", f"{download.GDRIVE_FOLDER} (repos.zip)"]


def test_several_experiments(release, tmp_path, capsys):
    both = rf.write_logs_zip(tmp_path / "two.zip", release.generator, experiments=("Other_run", OFFICIAL_EXPERIMENT))
    code, out, err = run_download(capsys, "--from", both, "--from", release.files["repos.zip"])
    assert code == 0, err
    provenance = json.loads((Path(out[-1]) / "provenance.json").read_text())
    assert provenance["experiment"] == OFFICIAL_EXPERIMENT                   # the one the authors name
    others = rf.write_logs_zip(tmp_path / "others.zip", release.generator, experiments=("Run_A", "Run_B"))
    code, _, err = run_download(capsys, "--from", others, "--from", release.files["repos.zip"],
                                "--cache-dir", tmp_path / "c2")
    assert_one_line_error(code, err, "Run_A, Run_B", "--experiment")
    code, out, err = run_download(capsys, "--from", others, "--from", release.files["repos.zip"],
                                  "--cache-dir", tmp_path / "c3", "--experiment", "Run_B")
    assert code == 0 and json.loads((Path(out[-1]) / "provenance.json").read_text())["experiment"] == "Run_B"


# ---- interruptions and bad cases ------------------------------------------------------------------
def test_a_cut_download_is_resumed_by_the_next_call(release, tmp_path, capsys):
    cache = tmp_path / "cache"
    size = release.files["logs.zip"].stat().st_size
    with rf.ReleaseServer(release.files) as server:
        server.cut["logs.zip"] = size // 3
        sources = ["--from", server.url("logs.zip"), "--from", server.url("repos.zip"), "--cache-dir", cache]
        code, _, err = run_download(capsys, *sources)
        assert_one_line_error(code, err, "cut short", f"{size // 3:,} of {size:,} bytes", "again to resume")
        parts = list((cache / "downloads").glob("*.part"))
        assert len(parts) == 1 and parts[0].stat().st_size == size // 3 and not (cache / "official").exists()
        code, out, err = run_download(capsys, *sources)
        assert code == 0, err
        assert ("/files/logs.zip", f"bytes={size // 3}-") in server.requests      # asked for the rest only
    assert_converted(Path(out[-1]), release)
    assert files_under(cache / "downloads") == []


def test_no_network(tmp_path, capsys):
    code, _, err = run_download(capsys)                  # Yandex unreachable, gdown not installed
    assert_one_line_error(code, err, "cannot reach 127.0.0.1", "pip install 'emoportraits[download]'")
    assert files_under(tmp_path / "home") == []
    code, _, err = run_download(capsys, "--from", rf.closed_port_url() + "/logs.zip")
    assert_one_line_error(code, err, "cannot reach", "--from")
    assert files_under(tmp_path / "home") == []


def test_a_web_page_instead_of_the_archive(release, tmp_path, monkeypatch, capsys):
    with rf.ReleaseServer(release.files) as server:
        server.html.add("logs.zip")
        code, _, err = run_download(capsys, "--from", server.url("logs.zip"), "--from", server.url("repos.zip"))
    assert_one_line_error(code, err, "sent a web page instead of logs.zip")
    assert files_under(tmp_path / "home") == []
    monkeypatch.setitem(sys.modules, "gdown", fake_gdown(release.files, payload=rf.DRIVE_PAGE))
    code, _, err = run_download(capsys)
    assert_one_line_error(code, err, "Google Drive sent a web page instead of logs.zip")
    assert files_under(tmp_path / "home") == []


def corrupt_member(src: Path, dst: Path) -> Path:
    """A copy of ``src`` with bytes flipped inside the generator checkpoint's compressed data."""
    with zipfile.ZipFile(src) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("100_model.pth"))
    data = bytearray(src.read_bytes())
    middle = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    data[middle:middle + 64] = bytes(255 - b for b in data[middle:middle + 64])
    dst.write_bytes(bytes(data))
    return dst


def test_corrupt_archives(release, tmp_path, capsys):
    flipped = corrupt_member(release.files["logs.zip"], tmp_path / "flipped.zip")
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(release.files["logs.zip"].read_bytes()[:100_000])
    with rf.ReleaseServer({"logs.zip": flipped, "repos.zip": release.files["repos.zip"]}) as server:
        code, _, err = run_download(capsys, "--from", server.url("logs.zip"), "--from", server.url("repos.zip"))
    assert_one_line_error(code, err, "100_model.pth could not be read", "corrupt")
    assert files_under(tmp_path / "home") == []
    code, _, err = run_download(capsys, "--from", truncated, "--from", release.files["repos.zip"])
    assert_one_line_error(code, err, "truncated.zip is not a readable zip archive")
    assert files_under(tmp_path / "home") == []


def test_archives_without_checkpoints(release, tmp_path, capsys):
    empty_logs = rf.write_logs_zip(tmp_path / "logs.zip", None)
    code, _, err = run_download(capsys, "--from", empty_logs, "--from", release.files["repos.zip"])
    assert_one_line_error(code, err, "no generator checkpoint", "logs.zip")
    no_head_pose = rf.write_repos_zip(tmp_path / "repos.zip", None)
    code, _, err = run_download(capsys, "--from", release.files["logs.zip"], "--from", no_head_pose)
    assert_one_line_error(code, err, "no head-pose regressor", "repos.zip")
    assert files_under(tmp_path / "home") == []


def test_files_that_are_not_part_of_the_release(release, tmp_path, capsys):
    tarball = tmp_path / "sav.tar.gz"
    tarball.write_bytes(b"\x1f\x8b\x08" + bytes(100))
    code, _, err = run_download(capsys, "--from", tarball)
    assert_one_line_error(code, err, "sav.tar.gz is neither a zip archive")
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.ones(1)}, other)
    code, _, err = run_download(capsys, "--from", other, "--from", release.files["repos.zip"])
    assert_one_line_error(code, err, "other.pth is neither the EMOPortraits generator")
    code, _, err = run_download(capsys, "--from", tmp_path / "missing.zip")
    assert_one_line_error(code, err, "missing.zip: no such file")
    assert files_under(tmp_path / "home") == []


@pytest.mark.parametrize("change, fragments", [
    (lambda sd: sd.pop("decoder_nw.img_decoder.dec_img_head.2.bias"), ["missing keys", "decoder.out.conv.bias"]),
    (lambda sd: sd.__setitem__("mystery_nw.weight", torch.zeros(2)), ["not understood", "mystery_nw.weight"]),
])
def test_missing_and_unexpected_keys_are_named(release, tmp_path, capsys, change, fragments):
    generator = dict(release.generator)
    change(generator)
    logs = rf.write_logs_zip(tmp_path / "logs.zip", generator, older_epoch=False)
    with rf.ReleaseServer({"logs.zip": logs, "repos.zip": release.files["repos.zip"]}) as server:
        code, _, err = run_download(capsys, "--from", server.url("logs.zip"), "--from", server.url("repos.zip"))
    assert_one_line_error(code, err, *fragments)
    assert files_under(tmp_path / "home") == []


def test_a_full_disk_leaves_nothing(release, tmp_path, monkeypatch, capsys):
    from emoportraits import fetch

    class FullDisk:
        """A file whose writes fail as on a full disk."""
        def __init__(self, path, mode):
            self.file = open(path, mode)

        def write(self, data):
            raise OSError(28, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    def full_save(self, folder, **kw):
        (Path(folder) / "model.safetensors").write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    with rf.ReleaseServer(release.files) as server:
        sources = ["--from", server.url("logs.zip"), "--from", server.url("repos.zip")]
        with monkeypatch.context() as patch:                 # while downloading
            patch.setattr(fetch, "open", FullDisk, raising=False)
            code, _, err = run_download(capsys, *sources)
        assert_one_line_error(code, err, "disk is full", "logs.zip")
        assert files_under(tmp_path / "home") == []
        with monkeypatch.context() as patch:                 # while writing the model
            patch.setattr(EmoPortraits, "save_pretrained", full_save)
            code, _, err = run_download(capsys, *sources)
    assert_one_line_error(code, err, "disk is full", "nothing was left")
    assert files_under(tmp_path / "home") == []


# ---- the released preset: the acceptance command, then parity ---------------------------------------
@pytest.mark.slow
def test_released_preset_download_reproduces_the_parity_fixture(tmp_path):
    """`emoportraits download --from URL --from URL --cache-dir DIR` against the local server, with the
    released preset's fill-rule weights: the folder loads strictly and matches ../shared/parity."""
    generator, head_pose = rf.official_state_dicts("released")
    files = {"logs.zip": rf.write_logs_zip(tmp_path / "logs.zip", generator, older_epoch=False,
                                           compression=zipfile.ZIP_STORED),
             "repos.zip": rf.write_repos_zip(tmp_path / "repos.zip", head_pose)}
    with rf.ReleaseServer(files) as server:
        result = subprocess.run(
            [sys.executable, "-m", "emoportraits", "download", "--from", server.api_url("logs.zip"),
             "--from", server.url("repos.zip"), "--cache-dir", str(tmp_path / "cache")],
            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert folder == tmp_path / "cache" / "official"
    model = EmoPortraits.from_pretrained(folder)                         # strict
    assert model.generator_parameters() == 160_704_361
    produced = {**parity.run_chain(model), **parity.run_units(model)}
    names = parity.fixture_base_names()
    rows = parity.compare_module().compare({k: v for k, v in produced.items() if k in names})
    failed = [f"{r['entry']}: {r['max_abs']:.3g} > tol {r['tol']:.3g}" for r in rows if not r["ok"]]
    assert len(rows) > 250 and not failed, "\n".join(failed)
