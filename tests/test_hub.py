"""save_pretrained / from_pretrained round trips and strict loading."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import random_images
from emoportraits import EmoPortraits, EmoPortraitsConfig, WeightsMismatchError


@pytest.fixture
def saved(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_round_trip_is_bit_identical(tiny_model, saved):
    loaded = EmoPortraits.from_pretrained(saved)
    assert loaded.config == tiny_model.config
    assert not loaded.training
    src, drv = random_images(tiny_model, 2, seed=1), random_images(tiny_model, 2, seed=2)
    with torch.no_grad():
        assert torch.equal(tiny_model(src, drv), loaded(src, drv))
    for (k, a), (k2, b) in zip(tiny_model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_folder_contents(saved):
    assert sorted(p.name for p in saved.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((saved / "config.json").read_text())
    assert config["image_size"] == 64 and config["volume_depth"] == 4
    card = (saved / "README.md").read_text()
    assert "license: apache-2.0" in card and "arxiv.org/abs/2404.19110" in card
    assert "library_name: emoportraits" in card


def _drop(state):
    del state["decoder.out.conv.bias"]


def _add(state):
    state["decoder.extra_head.weight"] = torch.zeros(3)


def _reshape(state):
    state["decoder.out.conv.bias"] = torch.zeros(4)


@pytest.mark.parametrize("tamper, message", [
    (_drop, r"missing keys \[decoder\.out\.conv\.bias\]"),
    (_add, r"unexpected keys \[decoder\.extra_head\.weight\]"),
    (_reshape, r"wrong shapes \[decoder\.out\.conv\.bias: \(4,\) != \(3,\)\]"),
])
def test_tampered_weights_fail_naming_the_tensor(saved, tamper, message):
    state = load_file(saved / "model.safetensors")
    tamper(state)
    save_file(state, saved / "model.safetensors")
    with pytest.raises(WeightsMismatchError, match=message):
        EmoPortraits.from_pretrained(saved)


def test_config_of_another_preset_is_rejected(saved):
    config = EmoPortraitsConfig.tiny()
    config.z_dim = 32
    (saved / "config.json").write_text(json.dumps(config.to_dict()))
    with pytest.raises(WeightsMismatchError, match="wrong shapes"):
        EmoPortraits.from_pretrained(saved)


def test_missing_weights_file(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        EmoPortraits.from_pretrained(saved)


def test_non_strict_loading_is_refused(saved):
    with pytest.raises(ValueError, match="strictly"):
        EmoPortraits.from_pretrained(saved, strict=False)


def test_unknown_hub_repo_fails_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Exception) as info:
        EmoPortraits.from_pretrained("emoportraits/does-not-exist", cache_dir=tmp_path)
    assert "offline" in str(info.value).lower() or "cache" in str(info.value).lower()
