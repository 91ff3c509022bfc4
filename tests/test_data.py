"""Training data: prepare-data (shards, index, resume), pose labels, pairs, the mixing sampler,
E_motion augmentation and the head-pose training script."""
from __future__ import annotations

import hashlib
import math
import os
import re
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch

from emoportraits import cli
from emoportraits.data import pose_labels as pl
from emoportraits.data.augment import MotionAugment, color_jitter, elastic_warp
from emoportraits.data.clips import ClipStore as ShardDataset      # the random-access reader of prepared folders
from emoportraits.data.pairs import FrameDataset, MixedDataset, MixingBatchSampler, PairDataset
from emoportraits.data.shards import encode_jpeg, encode_png
from emoportraits.data.wds import SampleWriter as ShardWriter
from emoportraits.models.geometry import rotation_matrix, theta_from_raw9

from helpers import REPO, shared_media

CLIPS = {"man_d04": "driving/d04_man_east_asian_smile_gaze_greenscreen.mp4",
         "man_d06": "driving/d06_grid_man_talking_with_audio.mp4"}
N_FRAMES, RES = 6, 64


def _prepare_args(videos, out, *extra):
    return ["prepare-data", "--videos", str(videos), "--out", str(out), "--dataset-name", "voxceleb2",
            "--frames-per-clip", str(N_FRAMES), "--resolution", str(RES), "--quiet", *extra]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Two shared driving clips (linked, VoxCeleb2-style id/video/clip.mp4) → a prepared set, built
    once with the command line in a subprocess and two workers."""
    base = tmp_path_factory.mktemp("data")
    videos = base / "videos"
    for identity, rel in CLIPS.items():
        src = shared_media(rel)
        (videos / identity / "vid1").mkdir(parents=True)
        os.symlink(src, videos / identity / "vid1" / "00001.mp4")
    out = base / "prepared"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-m", "emoportraits", *_prepare_args(videos, out, "--workers", "2")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    return videos, out, res.stdout


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


# ---- prepare-data -------------------------------------------------------------------------------

def test_prepare_writes_shards_and_index(prepared):
    _, out, stdout = prepared
    assert "2 ok" in stdout and "12 frames written" in stdout
    for name in ("dataset.json", "parts/1-of-1/manifest.jsonl", "parts/1-of-1/prepare.json",
                 "parts/1-of-1/stats.json"):
        assert (out / name).is_file()
    shards = sorted((out / "shards").glob("*.tar"))
    assert all(p.name.startswith("p1of1-") for p in shards)
    # each worker writes its own shard; the two videos go to whichever worker asks first, so one worker
    # may take both (a shared work queue), but never two shards from one worker here
    workers = [re.search(r"-w(\d\d)-", p.name).group(1) for p in shards]
    assert 1 <= len(shards) <= 2 and len(set(workers)) == len(shards) and set(workers) <= {"00", "01"}
    assert not list((out / "shards").glob(".*"))     # no temp files left
    data = ShardDataset(out)
    assert len(data) == 2 and data.total_frames == 2 * N_FRAMES
    assert data.dataset == "voxceleb2" and data.resolution == RES
    assert data.identities == ["man_d04", "man_d06"]
    assert data.keys == ["man_d04/vid1/00001", "man_d06/vid1/00001"]
    assert data.template.shape == (468, 3)
    assert np.asarray(data.info["template_estimate"]).shape == (468, 3)
    for i in range(len(data)):
        clip = data.read_clip(i)
        assert clip["frames"].shape == (N_FRAMES, RES, RES, 3) and clip["frames"].dtype == np.uint8
        assert clip["masks"].shape == (N_FRAMES, RES, RES) and clip["masks"].dtype == np.uint8
        assert clip["masks"].max() > 200 and clip["masks"].min() < 50          # a head on a background
        poses = clip["poses"]
        assert poses.shape == (N_FRAMES, 9) and poses.dtype == np.float32 and np.isfinite(poses).all()
        assert np.all(poses[:, 0] == poses[:, 1]) and np.all((poses[:, 0] > 0.5) & (poses[:, 0] < 2))
        assert np.abs(poses[:, 3:6]).max() < math.radians(30)                 # frontal talking heads
        assert clip["landmarks"].shape == (N_FRAMES, 468, 3)
        # the stored labels are the fit of the stored landmarks (float16) to the template
        np.testing.assert_allclose(pl.fit_pose(clip["landmarks"], data.template), poses, atol=2e-3)
        info = clip["info"]
        assert info.identity == data.identities[i] and info.clip == "00001" and info.fps == 25.0
        assert info.frame_indices == [0, 5, 10, 15, 20, 25]                  # default stride 5
        assert len(set(map(bytes, clip["frames"]))) == N_FRAMES               # different frames
        assert theta_from_raw9(torch.from_numpy(poses)).shape == (N_FRAMES, 4, 4)
    # the shards are ordinary tar files: a sample per frame, KEY/FFFFFF.{jpg,mask.png,landmarks.npy,json}
    with tarfile.open(out / data.shards[int(data.shard_ids[0])]) as tar:
        member = tar.getmember(f"{data.keys[0]}/000003.jpg")
        assert tar.extractfile(member).read() == data.clip(0).members["jpg"][3]
        names = {m.name for m in tar if m.name.startswith(f"{data.keys[0]}/000003.")}
    assert names == {f"{data.keys[0]}/000003.{f}" for f in ("jpg", "mask.png", "landmarks.npy", "json")}


def test_prepare_rerun_is_a_noop(prepared, capsys):
    videos, out, _ = prepared
    before = _snapshot(out)
    assert cli.main(_prepare_args(videos, out)) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert _snapshot(out) == before


def test_prepare_refuses_other_options_and_bad_input(prepared, tmp_path, capsys):
    videos, out, _ = prepared
    assert cli.main(["prepare-data", "--videos", str(videos), "--out", str(out), "--dataset-name", "voxceleb2",
                     "--frames-per-clip", str(N_FRAMES), "--resolution", "32", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "resolution 64 → 32" in err
    assert cli.main(_prepare_args(tmp_path / "missing", tmp_path / "o")) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(_prepare_args(tmp_path / "empty", tmp_path / "o")) == 2
    assert "no video files" in capsys.readouterr().err


def test_webdataset_and_datasets_read_the_shards_as_they_are(prepared, tmp_path):
    """Acceptance: the `webdataset` library (and Hugging Face `datasets`, if installed) read the
    shards prepare-data wrote, with the sample count prepare-data reported."""
    wds = pytest.importorskip("webdataset")
    _, out, stdout = prepared
    reported = int(re.search(r"(\d+) frames \(WebDataset samples\)", stdout).group(1))
    urls = [str(p) for p in sorted((out / "shards").glob("*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))
    assert len(samples) == reported == 2 * N_FRAMES
    s = samples[0]
    assert s["jpg"].shape == (RES, RES, 3) and s["landmarks.npy"].shape == (468, 3)
    assert s["json"]["frame"] == 0 and len(s["json"]["pose"]) == 9 and s["__key__"].endswith("/000000")
    store = ShardDataset(out)
    clip = store.keys.index(s["json"]["clip"])          # shards hold whichever clips their worker took
    np.testing.assert_array_equal(np.asarray(s["json"]["pose"], np.float32), store.read_poses(clip)[0])
    datasets = pytest.importorskip("datasets")
    rows = datasets.load_dataset("webdataset", data_files={"train": urls}, split="train",
                                 cache_dir=str(tmp_path / "hf"))
    assert rows.num_rows == reported and set(rows.column_names) >= {"jpg", "mask.png", "landmarks.npy", "json"}


def test_parts_merge_and_old_folders(prepared, tmp_path, capsys):
    """--part I/N on two "machines" (same folder, no shared state) then the merge gives the same data
    set as one run; an old (v1) folder is refused with the conversion command, and converted."""
    videos, out, _ = prepared
    split = tmp_path / "split"
    for i in (1, 2):
        assert cli.main(_prepare_args(videos, split, "--part", f"{i}/2")) == 0
    merged = ShardDataset(split)
    whole = ShardDataset(out)
    assert merged.keys == whole.keys and merged.total_frames == whole.total_frames
    assert {p.name[:6] for p in (split / "shards").glob("*.tar")} <= {"p1of2-", "p2of2-"}
    np.testing.assert_array_equal(merged.read_frames(1), whole.read_frames(1))
    assert cli.main(["prepare-data", "--merge", "--out", str(split)]) == 0
    assert "2 clips, 12 frames" in capsys.readouterr().out
    # an old folder: refused by readers and by prepare-data, with the command that converts it
    old = _old_layout_folder(tmp_path / "old", whole)
    with pytest.raises(Exception, match="prepare-data --convert"):
        ShardDataset(old)
    assert cli.main(_prepare_args(videos, old)) == 2
    assert "--convert" in capsys.readouterr().err
    assert cli.main(["prepare-data", "--convert", str(old), "--out", str(tmp_path / "new")]) == 0
    new = ShardDataset(tmp_path / "new")
    assert new.keys == whole.keys
    np.testing.assert_array_equal(new.read_frames(0), whole.read_frames(0))
    np.testing.assert_array_equal(new.read_poses(1), whole.read_poses(1))


def _old_layout_folder(folder, store):
    """The clips of ``store`` written in the v1 layout (ShardWriter + index.json), as old runs left them."""
    import json

    from emoportraits.data.shards import ShardWriter as V1Writer

    records = []
    with V1Writer(folder, "old", on_commit=lambda s, r: records.extend(r)) as w:
        for i in range(len(store)):
            c, h = store.clip(i), store.header(i)
            meta = {k: h[k] for k in ("dataset", "identity", "video", "fps", "frame_indices")}
            w.add_clip(store.keys[i], c.members["jpg"], c.members["mask.png"], c.poses(), c.landmarks(), meta,
                       extra={"path": store.keys[i], "status": "ok", "identity": h["identity"]})
    settings = json.loads((store.root / "parts/1-of-1/prepare.json").read_text())
    settings.update(format="emoportraits-shards", version=1)
    (folder / "prepare.json").write_text(json.dumps(settings))
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    from emoportraits.data.shards import FORMAT
    index = {"format": FORMAT, "version": 1, "dataset": "voxceleb2", "resolution": RES, "identities": store.identities,
             "shards": sorted({r["shard"] for r in records}), "template": store.template.tolist(),
             "clips": {"key": [r["key"] for r in records], "identity": list(range(len(records))),
                       "shard": [0] * len(records), "offset": [r["offset"] for r in records],
                       "size": [r["size"] for r in records], "n_frames": [r["n_frames"] for r in records]}}
    (folder / "index.json").write_text(json.dumps(index))
    return folder


def test_shard_writer_is_atomic(tmp_path):
    frame, mask = encode_jpeg(np.zeros((8, 8, 3), np.uint8)), encode_png(np.ones((8, 8), np.float32))
    lm, poses = np.zeros((1, 468, 3)), np.zeros((1, 9), np.float32)
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, "a") as w:
            w.add_clip("x/y", [frame], [mask], poses, lm, {"identity": "x"})
            raise RuntimeError("crash mid-video")
    assert list((tmp_path / "shards").iterdir()) == []
    commits = []
    with ShardWriter(tmp_path, "b", max_bytes=1, on_commit=lambda s, r: commits.append((s, r))) as w:
        w.add_clip("x/y", [frame], [mask], poses, lm, {"identity": "x"})
        w.add_clip("x/z", [frame], [mask], poses, lm, {"identity": "x"})
    assert [c[0] for c in commits] == ["shards/b-00000.tar", "shards/b-00001.tar"]   # one clip each
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["b-00000.tar", "b-00001.tar"]


# ---- pose labels ----------------------------------------------------------------------------------

def test_pose_label_round_trip():
    rng = np.random.default_rng(0)
    template = pl.default_template()
    n = 32
    raw9 = np.concatenate([np.repeat(rng.uniform(0.6, 1.6, (n, 1)), 3, 1),
                           rng.uniform([-0.8, -1.2, -0.8], [0.8, 1.2, 0.8], (n, 3)),
                           rng.uniform(-0.3, 0.3, (n, 3))], 1)
    theta = theta_from_raw9(torch.from_numpy(raw9)).double().numpy()
    # landmarks of the posed head: p = θ⁻¹ · c
    hom = np.concatenate([template, np.ones((468, 1))], 1)
    landmarks = np.einsum("bij,nj->bni", np.linalg.inv(theta), hom)[..., :3]
    fitted = pl.fit_pose(landmarks, template)
    np.testing.assert_allclose(fitted, raw9, atol=1e-4)
    np.testing.assert_allclose(theta_from_raw9(torch.from_numpy(fitted)).numpy(), theta, atol=1e-4)
    # the fitted θ maps the landmarks onto the template
    mapped = np.einsum("bij,bnj->bni", theta_from_raw9(torch.from_numpy(fitted)).double().numpy(),
                       np.concatenate([landmarks, np.ones((n, 468, 1))], -1))[..., :3]
    assert np.abs(mapped - template).max() < 1e-4


def test_yaw_pitch_roll_decomposition_round_trip():
    rng = np.random.default_rng(1)
    angles = np.stack([rng.uniform(-math.pi / 2, math.pi, 500), rng.uniform(-1.5, 1.5, 500),
                       rng.uniform(-math.pi / 2, math.pi, 500)], 1)
    r = rotation_matrix(torch.from_numpy(angles)).numpy()
    np.testing.assert_allclose(pl.angles_to_rotation(angles), r, atol=1e-12)
    back = pl.rotation_to_angles(r)
    np.testing.assert_allclose(back, angles, atol=1e-9)
    np.testing.assert_allclose(rotation_matrix(torch.from_numpy(back)).numpy(), r, atol=1e-12)
    # a rotation whose principal angles leave the model's range uses the equivalent solution
    alt = pl.rotation_to_angles(pl.angles_to_rotation(np.array([-2.5, 0.4, -2.5])))
    assert np.all(alt >= -math.pi / 2)
    np.testing.assert_allclose(rotation_matrix(torch.from_numpy(alt)).numpy(),
                               pl.angles_to_rotation(np.array([-2.5, 0.4, -2.5])), atol=1e-12)


def test_template_gauge_and_procrustes():
    t = pl.default_template()
    assert t.shape == (468, 3) and abs(t[:, 0].mean()) < 1e-6
    pairs = pl.mirror_pairs(t)
    assert (pairs != np.arange(468)).sum() > 400                                # left/right pairs found
    np.testing.assert_allclose(t[pairs] * [-1, 1, 1], t, atol=1e-6)              # mirror-symmetric
    assert np.all(pl.fit_pose(t, t)[[0, 1, 2]] == pytest.approx(1.0, abs=1e-6))
    # GPA of randomly posed copies (mean pose: identity) recovers the template's shape and gauge
    rng = np.random.default_rng(2)
    raw9 = np.concatenate([np.repeat(rng.uniform(0.9, 1.1, (40, 1)), 3, 1), rng.normal(0, 0.15, (40, 3)),
                           rng.normal(0, 0.03, (40, 3))], 1)
    s, r, tt = pl.raw9_to_similarity(raw9)
    shapes = np.einsum("bij,nj->bni", np.linalg.inv(r), t) / s[:, None, None] - \
        np.einsum("bij,bj->bi", np.linalg.inv(r), tt)[:, None, :] / s[:, None, None]
    est = pl.estimate_template(shapes + rng.normal(0, 1e-3, shapes.shape))
    rel = pl.fit_pose(est, t)
    assert abs(rel[0] - 1) < 0.05 and np.abs(rel[3:6]).max() < math.radians(5) and np.abs(rel[6:]).max() < 0.05
    aligned_err = np.abs(pl.fit_pose(shapes, est)[:, 3:6] - pl.fit_pose(shapes, t)[:, 3:6]).max()
    assert aligned_err < math.radians(5)


def test_frontal_portrait_gets_identity_pose():
    from emoportraits.media.crop import square_crop_box
    from emoportraits.media.faces import FaceDetector
    from emoportraits.media.image import load_image

    image = load_image(shared_media("portraits/p04_woman_auburn_bob_frontal.jpg"))   # crop fits the photo
    face = FaceDetector().detect(image)[0]
    box = square_crop_box(face, (image.shape[1], image.shape[0]))
    raw9 = pl.fit_pose(pl.landmarks_to_crop(face.landmarks, box))
    assert abs(raw9[0] - 1) < 0.1 and np.abs(raw9[3:6]).max() < math.radians(10) and np.abs(raw9[6:]).max() < 0.1


# ---- pairs and the sampler --------------------------------------------------------------------------

def test_pair_dataset_gives_two_frames_of_one_clip(prepared):
    _, out, _ = prepared
    pairs = PairDataset(out, seed=3)
    assert len(pairs) == 2 and pairs.dataset_id == 0
    item = pairs[1]
    a, b = item["frames"].tolist()
    assert a != b and item["clip"] == 1 and item["identity"] == 1 and item["dataset"] == 0
    for k in ("source", "driver", "driver_motion"):
        assert item[k].shape == (3, RES, RES) and item[k].dtype == torch.float32
        assert 0 <= item[k].min() and item[k].max() <= 1
    assert item["source_mask"].shape == (1, RES, RES)
    assert item["source_pose"].shape == (9,) and item["driver_theta"].shape == (4, 4)
    eyes = item["driver_eye_centers"]
    assert eyes.shape == (2, 2) and eyes[0, 0] < eyes[1, 0] and eyes.abs().max() < 1   # image-left eye first
    shards = ShardDataset(out)
    frames = shards.read_frames(1, [a, b])
    assert torch.equal(item["source"], torch.from_numpy(frames[0]).permute(2, 0, 1).float() / 255)
    assert torch.equal(item["driver_pose"], torch.from_numpy(shards.read_poses(1)[b]))
    assert not torch.equal(item["source"], item["driver"])
    assert not torch.allclose(item["driver_motion"], item["driver"], atol=0.02)        # augmented
    again = pairs[1]
    assert torch.equal(again["driver_motion"], item["driver_motion"]) and again["frames"].tolist() == [a, b]
    drawn = {tuple(pairs[(1, s)]["frames"].tolist()) for s in range(12)}
    assert len(drawn) > 3 and all(x != y for x, y in drawn)
    resized = PairDataset(out, resolution=32, augment=None)[0]
    assert resized["source"].shape == (3, 32, 32) and torch.equal(resized["driver_motion"], resized["driver"])
    frame = FrameDataset(out)[N_FRAMES + 2]
    assert frame["clip"] == 1 and frame["frame"] == 2 and frame["image"].shape == (3, RES, RES)
    mixed = MixedDataset([PairDataset(out), FrameDataset(out)])
    assert len(mixed) == 2 + 2 * N_FRAMES and mixed[(3, 7)]["frame"] == 1


def test_pair_jitter_changes_source_and_driver_alike(prepared):
    """One colour change for the pair: a pixel of the same colour in both frames stays equal."""
    _, out, _ = prepared
    plain = PairDataset(out, seed=3, augment=None)[1]
    jittered = PairDataset(out, seed=3, augment=None, pair_jitter=0.5)[1]
    assert jittered["frames"].tolist() == plain["frames"].tolist()
    assert not torch.allclose(jittered["source"], plain["source"], atol=0.02)
    # the jitter is a per-pixel colour map shared by the two frames: equal inputs, equal outputs
    src, drv = plain["source"].flatten(1).T, plain["driver"].flatten(1).T
    j_src, j_drv = jittered["source"].flatten(1).T, jittered["driver"].flatten(1).T
    lookup = {tuple(c.tolist()): j for c, j in zip(src, j_src)}
    shared = [(lookup[tuple(c.tolist())], j) for c, j in zip(drv, j_drv) if tuple(c.tolist()) in lookup]
    assert len(shared) > 20
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in shared)


def _flat(batches):
    return [i for b in batches for i in b]


def test_mixing_sampler_proportions_and_mixed_batches():
    sampler = MixingBatchSampler([1000, 300], weights=(0.75, 0.25), batch_size=2, seed=0, num_batches=8000)
    batches = list(sampler)
    assert len(batches) == 8000
    src = np.array([[0 if i < 1000 else 1 for i in b] for b in batches])
    assert abs((src == 0).mean() - 0.75) < 0.01
    assert all(sorted(row) == [0, 1] for row in src[1::2])                     # every second batch: one each
    # within a pass of a data set no index repeats
    vox = [i for i in _flat(batches) if i < 1000][:1000]
    assert sorted(vox) == list(range(1000))
    one = MixingBatchSampler([50], batch_size=4, seed=1, num_batches=25)
    assert sorted(_flat(one)) == sorted(list(range(50)) * 2)


def test_mixing_sampler_resumes_exactly():
    def make():
        return MixingBatchSampler([37, 11], batch_size=2, seed=7, with_seeds=True)
    a = make()
    it = iter(a)
    head = [next(it) for _ in range(45)]
    state = a.state_dict()
    tail = [next(it) for _ in range(60)]
    b = make()
    b.load_state_dict(state)
    it_b = iter(b)
    assert [next(it_b) for _ in range(60)] == tail
    # the position after k batches can be computed after the fact (prefetching DataLoaders)
    c = make()
    c.load_state_dict(a.state_dict(step=20))
    it_c = iter(c)
    assert [next(it_c) for _ in range(25)] == head[20:]
    assert all(isinstance(k, tuple) and len(k) == 2 for k in head[0])
    with pytest.raises(ValueError):
        MixingBatchSampler([37, 12], batch_size=2, seed=7).load_state_dict(state)


def test_mixing_sampler_ranks_are_disjoint():
    lengths = [101, 40]
    ranks = [MixingBatchSampler(lengths, batch_size=2, seed=5, rank=r, world_size=2, num_batches=40)
             for r in range(2)]
    seen = [_flat(list(s)) for s in ranks]
    for d, (lo, hi) in enumerate([(0, 101), (101, 141)]):
        per_rank = [[i for i in s if lo <= i < hi][:lengths[d] // 2] for s in seen]
        assert not set(per_rank[0]) & set(per_rank[1])
    # both ranks make their mixed batches at the same steps
    assert all((b0[0] < 101) == (b1[0] < 101) for b0, b1 in zip(*[list(MixingBatchSampler(
        lengths, batch_size=2, seed=5, rank=r, world_size=2, num_batches=40)) for r in range(2)]))


# ---- augmentation ---------------------------------------------------------------------------------

def test_augmentation_is_seeded_and_changes_the_image():
    torch.manual_seed(0)
    images = torch.rand(3, 3, 32, 32)
    aug = MotionAugment()
    out1 = aug(images, generator=torch.Generator().manual_seed(11))
    out2 = aug(images, generator=torch.Generator().manual_seed(11))
    out3 = aug(images, generator=torch.Generator().manual_seed(12))
    assert out1.shape == images.shape and out1.dtype == images.dtype
    assert torch.equal(out1, out2) and not torch.equal(out1, out3)
    assert (out1 - images).abs().mean() > 0.05 and 0 <= out1.min() and out1.max() <= 1
    # each part alone: the warp moves pixels but keeps colours; the jitter keeps geometry
    smooth = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32).contiguous()
    warped = elastic_warp(smooth, generator=torch.Generator().manual_seed(0))
    assert 0 < (warped - smooth).abs().max() < 0.5
    assert torch.equal(elastic_warp(smooth, strength=0), smooth)
    grey = torch.full((1, 3, 4, 4), 0.5)
    assert torch.allclose(color_jitter(grey, 0, 0, 0, 0.3, torch.Generator().manual_seed(0)), grey, atol=1e-5)
    with pytest.raises(ValueError):
        aug(torch.rand(3, 32, 32))


# ---- head-pose training ------------------------------------------------------------------------

def test_train_head_pose_script_runs(prepared, tmp_path):
    from safetensors.torch import load_file

    from emoportraits.config import EmoPortraitsConfig
    from emoportraits.models.motion import HeadPoseNet

    _, out, _ = prepared
    weights = tmp_path / "head_pose.safetensors"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, str(REPO / "train" / "train_head_pose.py"), "--data", str(out),
                          "--preset", "tiny", "--steps", "3", "--batch-size", "4", "--workers", "0",
                          "--out", str(weights)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "step 3/3" in res.stdout and weights.is_file()
    net = HeadPoseNet(EmoPortraitsConfig.tiny())
    net.load_state_dict(load_file(weights))
