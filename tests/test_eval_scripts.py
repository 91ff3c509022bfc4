"""bench/eval_*.py end to end on tiny inputs (tiny random models, 3–5 frames): eval_reenactment in a
subprocess, as a user runs it; the others in this process (saves the imports' start-up time)."""
import os
import runpy
import subprocess
import sys

import pytest

from conftest import make_model
from helpers import REPO, shared_media, tiny_whisper

P03 = "portraits/p03_man_east_asian_frontal_plain_bg.jpg"
D06 = "driving/d06_grid_man_talking_with_audio.mp4"          # a talking man, with sound


def run(script, *args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(REPO / "bench" / script), *map(str, args), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300)


def run_here(monkeypatch, script, *args) -> int:
    """The script's main in this process: its exit status (0 when it returns)."""
    monkeypatch.setattr(sys, "argv", [str(REPO / "bench" / script), *map(str, args), "--quiet"])
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    try:
        runpy.run_path(str(REPO / "bench" / script), run_name="__main__")
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A tiny model bundle: main model + speech + pose + whisper parts, random weights."""
    pytest.importorskip("transformers")
    from emoportraits.models import PoseGenerator, PoseGeneratorConfig, SpeechEncoder, SpeechEncoderConfig

    root = tmp_path_factory.mktemp("bundle")
    make_model("tiny").save_pretrained(root)
    SpeechEncoder(SpeechEncoderConfig.tiny()).save_pretrained(root / "speech")
    PoseGenerator(PoseGeneratorConfig.tiny()).save_pretrained(root / "pose")
    tiny_whisper().save_pretrained(root / "whisper")
    return root


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Folders with one portrait and one talking video (links to ../shared/media)."""
    root = tmp_path_factory.mktemp("media")
    for sub, rel in (("sources", P03), ("drivers", D06)):
        (root / sub).mkdir()
        (root / sub / shared_media(rel).name).symlink_to(shared_media(rel))
    return root


def test_eval_reenactment_writes_tables_and_grids(bundle, media, tmp_path):
    out = tmp_path / "report"
    r = run("eval_reenactment.py", "--model", bundle, "--sources", media / "sources", "--drivers", media / "drivers",
            "--out", out, "--max-frames", 3)
    assert r.returncode == 0, r.stderr[-2000:]
    text = (out / "reenactment.md").read_text()
    for heading in ("## Cross-reenactment", "## Self-reenactment", "| EMOPortraits (this model) |",
                    "| copy source (baseline) |", "MegaPortraits (paper, 512²)"):
        assert heading in text
    assert "1 sources × 1 drivers" in text
    for png in ("reenactment_cross.png", "reenactment_self.png"):
        assert (out / png).stat().st_size > 1000


def test_eval_speech_and_poses(bundle, media, tmp_path, monkeypatch):
    out = tmp_path / "report"
    assert run_here(monkeypatch, "eval_speech.py", "--model", bundle, "--clips", media / "drivers", "--out", out,
                    "--max-frames", 3, "--face-embedder", "none") == 0
    text = (out / "speech.md").read_text()
    assert "| still head (baseline: z₀, no speech) |" in text and "| copy source (baseline) |" in text
    assert (out / "speech.png").is_file()
    assert run_here(monkeypatch, "eval_poses.py", "--model", bundle, "--clips", media / "drivers", "--out", out,
                    "--max-frames", 5, "--seeds", 2, "--no-landmarks") == 0
    text = (out / "poses.md").read_text()
    assert "| generated (this model) |" in text and "| real head motion (clips) |" in text


def test_eval_reenactment_clear_errors(bundle, tmp_path, monkeypatch, capsys):
    from emoportraits.metrics.protocols import EvalConfig

    (tmp_path / "empty").mkdir()
    assert run_here(monkeypatch, "eval_reenactment.py", "--model", bundle, "--sources", tmp_path / "empty",
                    "--drivers", tmp_path / "empty", "--out", tmp_path / "o") == 2
    assert "no source images found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max_frames must be >= 2"):
        EvalConfig(max_frames=1).validate()
