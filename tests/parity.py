"""Helpers for the parity fixture in ../shared/parity (the authors' released architecture).

The fixture ships no weights: ``fill_rule.py`` assigns a value to every *official* key. We fill
the official names, convert them with our converter (so the converter is under test too), load
them strictly, run our public API on the fixture inputs and collect the tensors the fixture
recorded, under the fixture's names (the model's ``tracing.record`` points use those names).
"""
from __future__ import annotations

import ast
import importlib.util
from functools import lru_cache

import torch

from helpers import SHARED

PARITY = SHARED / "parity"


def available() -> bool:
    return (PARITY / "official_released_config.safetensors").is_file()


def _load_module(name: str):
    spec = importlib.util.spec_from_file_location(f"_parity_{name}", PARITY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fill_rule():
    return _load_module("fill_rule")


def compare_module():
    return _load_module("compare")


def official_shapes() -> tuple[dict, dict]:
    """(generator key → shape, head-pose key → shape) from the official key listing."""
    generator, head_pose, current = {}, {}, None
    for line in (PARITY / "official_keys_released_config.txt").read_text().splitlines():
        if line.startswith("## "):
            current = head_pose if line.startswith("## head_pose_regressor") else generator
            continue
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")[:2]
        current[key] = ast.literal_eval(shape)
    return generator, head_pose


@lru_cache(maxsize=1)
def official_state_dicts() -> tuple[dict, dict]:
    rule = fill_rule()
    generator, head_pose = official_shapes()
    return rule.fill_state_dict(generator), rule.fill_state_dict(head_pose)


@lru_cache(maxsize=1)
def fixture() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(PARITY / "official_released_config.safetensors"))


def fixture_base_names() -> set[str]:
    names = set()
    for key in fixture():
        form, _, rest = key.partition(".")
        if form == "full":
            names.add(rest)
        elif form in ("summ", "small") and rest.endswith(".values"):
            names.add(rest[: -len(".values")])
    return names


def released_model():
    from emoportraits import EmoPortraits, EmoPortraitsConfig
    from emoportraits.convert import convert_official_state_dict

    generator, head_pose = official_state_dicts()
    model = EmoPortraits(EmoPortraitsConfig.released())
    model.load_state_dict(convert_official_state_dict(generator, head_pose), strict=True)
    return model.eval()


@torch.no_grad()
def run_chain(model) -> dict[str, torch.Tensor]:
    """Source and driver branches through the public API, plus the head-pose network."""
    from emoportraits.models.tracing import capture, scope

    fx = fixture()
    src = fx["input.source_u8"].float().div(255).unsqueeze(0)
    drv = fx["input.driver_u8"].float().div(255).unsqueeze(0)
    with capture() as out:
        avatar = model.encode_source(src, theta=fx["pose.src.theta"])
        model.drive(avatar, drv, theta=fx["pose.drv.theta"])
        for tag, image in (("src", src), ("drv", drv)):
            with scope(f"hpr.{tag}"):
                model.head_pose(image)
    return dict(out)


@torch.no_grad()
def run_units(model) -> dict[str, torch.Tensor]:
    """The fixture's per-module unit tests, on the fill rule's synthetic inputs."""
    from emoportraits.models.geometry import pose_to_theta, sample
    from emoportraits.models.tracing import capture, scope

    fx, make = fixture(), fill_rule().make_input
    vol = (1, 96, 16, 64, 64)
    out = {
        "unit.volume_source.output": model.source_volume(make("unit.volume_source.input", vol)),
        "unit.volume_process.output": model.canonical_unet(make("unit.volume_process.input", vol)),
    }
    x = make("unit.warp.input", vol)
    out["unit.warp_src.output"] = sample(sample(x, fx["full.src.rot_grid"]), fx["full.src.xy_gen.warp"])
    out["unit.warp_drv.output"] = sample(sample(x, fx["full.drv.uv_gen.warp"]), fx["full.drv.rot_grid"])
    with capture() as t, scope("unit.decoder"):
        model.decoder(make("unit.decoder.input", (1, 1536, 64, 64)))
    for name in ("res_out", "pre_sigmoid", "image"):
        out[f"unit.decoder.{name}"] = t[f"unit.decoder.{'dec.' if name == 'res_out' else ''}{name}"]
    theta = pose_to_theta(fx["full.pose_test.scale"], fx["full.pose_test.rotation"], fx["full.pose_test.translation"])
    out["pose_test.theta"] = theta
    out["pose_test.theta_inverse"] = torch.linalg.inv(theta)
    return out
