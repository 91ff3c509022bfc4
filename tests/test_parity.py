"""Parity with the authors' released architecture (../shared/parity): fill the official keys with
the fixture's rule, convert them with our converter, load strictly, run the public API and
match every recorded intermediate, module by module and end to end."""
import pytest
import torch

import parity
from emoportraits import EmoPortraits, EmoPortraitsConfig
from emoportraits.convert import UNUSED_OFFICIAL_KEYS, convert_official_state_dict
from emoportraits.models.geometry import pose_to_theta

pytestmark = pytest.mark.skipif(not parity.available(), reason="../shared/parity is not present")

# inputs of the pose-conversion test; they are stored, not computed
FIXTURE_INPUTS = {"pose_test.scale", "pose_test.rotation", "pose_test.translation"}


@pytest.fixture(scope="module")
def released():
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    return parity.released_model()


@pytest.fixture(scope="module")
def produced(released):
    names = parity.fixture_base_names()
    out = {**parity.run_chain(released), **parity.run_units(released)}
    return {k: v for k, v in out.items() if k in names}


def test_released_parameter_counts():
    model = EmoPortraits(EmoPortraitsConfig.released())
    assert model.generator_parameters() == 160_704_361
    assert sum(p.numel() for p in model.head_pose_net.parameters()) == 11_181_129


def test_converter_consumes_every_official_key():
    generator, head_pose = parity.official_shapes()
    state = parity.official_state_dicts()
    converted = convert_official_state_dict(*state)
    model = EmoPortraits(EmoPortraitsConfig.released())
    assert set(converted) == set(model.state_dict())
    # everything dropped is either folded spectral-norm vectors, a checked constant or listed unused
    dropped = {k for k in generator if k.endswith(("weight_u", "weight_v"))}
    dropped |= {k for k in generator if k.endswith(("identity_grid", ".mean", ".std"))}
    assert set(UNUSED_OFFICIAL_KEYS) <= set(generator)
    assert len(converted) == len(generator) + len(head_pose) - len(dropped) - len(UNUSED_OFFICIAL_KEYS)


def test_fixture_poses_match_our_pose_to_theta():
    fx = parity.fixture()
    for tag in ("src", "drv"):
        theta = pose_to_theta(fx[f"pose.{tag}.scale"], fx[f"pose.{tag}.rotation"], fx[f"pose.{tag}.translation"])
        torch.testing.assert_close(theta, fx[f"pose.{tag}.theta"], rtol=0, atol=1e-6)


def test_every_fixture_tensor_is_produced(produced):
    assert parity.fixture_base_names() - set(produced) == FIXTURE_INPUTS


@pytest.mark.parametrize("group", ["hpr", "pose_test", "unit", "src", "drv"])
def test_parity_within_fixture_tolerance(produced, group):
    compare = parity.compare_module()
    rows = compare.compare({k: v for k, v in produced.items() if k.split(".")[0] == group})
    assert rows, f"no fixture entries for {group}"
    failed = [f"{r['entry']}: {r['max_abs']:.3g} > tol {r['tol']:.3g} {r['note']}" for r in rows if not r["ok"]]
    assert not failed, "\n".join(failed)


def test_end_to_end_image(produced):
    """The final image on its own — the number users care about — against its fixture tolerance."""
    import json
    tol = json.loads((parity.PARITY / "tolerances.json").read_text())["full.drv.image"]["tol"]
    diff = (produced["drv.image"] - parity.fixture()["full.drv.image"]).abs().max().item()
    assert diff <= tol, f"{diff} > {tol}"
