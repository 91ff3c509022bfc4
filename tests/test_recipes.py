"""prepare-data --recipe voxceleb2|hdtf on tiny synthetic copies of each layout: clips found where the
data set keeps them, identity = the speaker, audio and every frame by default, options still override."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from emoportraits import cli
from emoportraits.data.clips import ClipStore
from emoportraits.data.recipes import apply_defaults, describe, discover

from helpers import ffmpeg, shared_media

N_FRAMES, RES = 4, 32          # 0.16 s of d06 at 25 fps, 32² crops


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A few frames of a talking man with his audio track (aac), re-encoded small."""
    src = shared_media("driving/d06_grid_man_talking_with_audio.mp4")
    out = tmp_path_factory.mktemp("clip") / "talk.mp4"
    ffmpeg("-ss", "0.4", "-i", src, "-frames:v", str(N_FRAMES), "-t", f"{N_FRAMES / 25}", "-vf", "scale=240:192",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ar", "16000", out)
    return out


def _place(clip, root, rels):
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(clip, root / rel)
    return root


def _prepare(videos, out, recipe, *extra):
    return cli.main(["prepare-data", "--recipe", recipe, "--videos", str(videos), "--out", str(out),
                     "--resolution", str(RES), "--quiet", *extra])


def _samples(out):
    """key → (identity, dataset, frame indices, audio samples or None) of every prepared clip."""
    store = ClipStore(out)
    rows = {}
    for i, key in enumerate(store.keys):
        h = store.header(i)
        audio = store.read_audio(i) if h.get("audio") else None
        rows[key] = (h["identity"], h["dataset"], list(h["frame_indices"]), audio)
    return store, rows


VOX = ["dev/mp4/id00017/abcDEF_0001/00001.mp4", "dev/mp4/id00017/xyzXYZ_0002/00001.mp4",
       "dev/mp4/id00412/abcDEF_0001/00002.mp4", "test/mp4/id09001/qqqQQQ_0003/00001.mp4"]


def test_voxceleb2_recipe_follows_speakers_with_audio(clip, tmp_path, capsys):
    root = _place(clip, tmp_path / "vox2", VOX)
    _place(clip, root, ["dev/aac/id00017/abcDEF_0001/00001.m4a"])     # VoxCeleb2's audio folder: not a video
    assert _prepare(root, tmp_path / "out", "voxceleb2") == 0
    assert "4 ok" in capsys.readouterr().out
    store, rows = _samples(tmp_path / "out")
    assert sorted(rows) == sorted(v[:-4] for v in VOX)
    assert store.dataset == "voxceleb2" and store.identities == ["id00017", "id00412", "id09001"]
    assert store.total_frames == 4 * N_FRAMES
    for key, (identity, dataset, indices, audio) in rows.items():
        assert identity == key.split("/")[2] and dataset == "voxceleb2"
        assert indices == list(range(N_FRAMES))                    # the recipe's stride 1
        assert audio is not None and abs(len(audio) - N_FRAMES / 25 * 16000) < 0.05 * 16000
        assert np.abs(audio).max() > 0.01                          # the speech, not silence
    settings = json.loads((tmp_path / "out" / "parts/1-of-1/prepare.json").read_text())
    assert settings["recipe"] == "voxceleb2" and settings["with_audio"] and settings["stride"] == 1
    assert settings["frames_per_clip"] == 250
    # the same run again is a no-op; the same options without the recipe (other identities) are refused
    assert _prepare(root, tmp_path / "out", "voxceleb2") == 0
    assert "nothing to do" in capsys.readouterr().out
    assert cli.main(["prepare-data", "--videos", str(root), "--out", str(tmp_path / "out"), "--resolution", str(RES),
                     "--dataset-name", "voxceleb2", "--stride", "1", "--frames-per-clip", "250", "--with-audio",
                     "--quiet"]) != 0
    assert "recipe 'voxceleb2' → None" in capsys.readouterr().err


def test_voxceleb2_recipe_on_an_mp4_folder_and_overrides(clip, tmp_path, capsys):
    root = _place(clip, tmp_path / "mp4", [v.split("/", 2)[2] for v in VOX[:3]])
    out = tmp_path / "out"
    assert _prepare(root, out, "voxceleb2", "--no-with-audio", "--stride", "2", "--dataset-name", "vox_small") == 0
    store, rows = _samples(out)
    assert store.identities == ["id00017", "id00412"] and store.dataset == "vox_small"
    assert all(audio is None and indices == [0, 2] for _, _, indices, audio in rows.values())
    assert store.total_frames == 3 * 2
    # a folder that is not VoxCeleb2's layout: one line saying which file
    flat = _place(clip, tmp_path / "flat", ["speaker/00001.mp4"])
    assert _prepare(flat, tmp_path / "out2", "voxceleb2") != 0
    err = capsys.readouterr().err.strip()
    assert "speaker/00001.mp4: not in VoxCeleb2's layout" in err and len(err.splitlines()) == 1


HDTF = ["WRA_AlexandriaOcasioCortez_000.mp4", "WRA_AlexandriaOcasioCortez_001.mp4", "RD_Radio1_000.mp4"]


@pytest.mark.parametrize("layout", ["local", "hub_snapshot"])
def test_hdtf_recipe_identity_is_the_speaker(clip, tmp_path, capsys, layout):
    root = tmp_path / "hdtf"
    if layout == "local":
        _place(clip, root, HDTF)
    else:       # as a snapshot download leaves it: videos somewhere below, a hidden cache folder
        _place(clip, root, [f"videos/part_a/{HDTF[0]}", f"videos/part_b/{HDTF[1]}", f"clips/{HDTF[2]}",
                            f".cache/huggingface/download/{HDTF[2]}"])
        (root / "README.md").write_text("dataset card\n")
    assert _prepare(root, tmp_path / "out", "hdtf", "--frames-per-clip", "3") == 0
    assert "3 ok" in capsys.readouterr().out
    store, rows = _samples(tmp_path / "out")
    assert store.dataset == "hdtf" and store.identities == ["RD_Radio1", "WRA_AlexandriaOcasioCortez"]
    assert sorted(k.rsplit("/", 1)[-1] for k in rows) == sorted(h[:-4] for h in HDTF)
    for key, (identity, _, indices, audio) in rows.items():
        assert key.rsplit("/", 1)[-1].startswith(identity + "_") and indices == [0, 1, 2]
        assert audio is not None and len(audio) > 0


def test_recipe_layout_rules_and_defaults(tmp_path):
    import argparse

    assert describe("voxceleb2", "dev/mp4/id00017/v/00001.mp4") == {
        "identity": "id00017", "video": "dev/mp4/id00017/v", "clip": "00001", "key": "dev/mp4/id00017/v/00001"}
    assert describe("hdtf", "x/WDA_BarackObama_012.mp4")["identity"] == "WDA_BarackObama"
    assert describe("hdtf", "x/Solo.mp4")["identity"] == "Solo"
    for name in ("a/WRA_X_000.mp4", "b/WRA_X_000.mp4"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(Exception, match="same HDTF video twice"):
        discover("hdtf", tmp_path)
    args = argparse.Namespace(recipe="hdtf", dataset_name=None, stride=3, frames_per_clip=None, with_audio=False)
    apply_defaults(args)
    assert (args.dataset_name, args.stride, args.frames_per_clip, args.with_audio) == ("hdtf", 3, 500, False)
    args = argparse.Namespace(recipe=None, dataset_name="x", stride=None, frames_per_clip=None, with_audio=None)
    apply_defaults(args)
    assert (args.stride, args.frames_per_clip, args.with_audio) == (5, 32, False)
