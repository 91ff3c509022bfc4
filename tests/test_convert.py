"""The converter of the authors' checkpoints and the `emoportraits convert` command."""
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import parity
from emoportraits import EmoPortraits
from emoportraits.cli import main as cli_main
from emoportraits.convert import convert_official_state_dict, fold_spectral_norm, load_official_checkpoint
from emoportraits.errors import EmoPortraitsError


def test_folded_spectral_norm_computes_what_the_eval_mode_layer_computes():
    torch.manual_seed(0)
    conv = nn.utils.spectral_norm(nn.Conv2d(8, 16, 3, padding=1))
    conv.train()
    x = torch.randn(2, 8, 5, 5)
    for _ in range(3):      # a few power iterations, as training leaves u, v
        conv(x)
    conv.eval()
    folded = fold_spectral_norm(conv.state_dict())
    assert set(folded) == {"weight", "bias"}
    plain = nn.Conv2d(8, 16, 3, padding=1)
    plain.load_state_dict(folded)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), conv(x))


def test_unknown_official_key_is_an_error():
    with pytest.raises(EmoPortraitsError, match="not understood.*mystery_nw.weight"):
        convert_official_state_dict({"mystery_nw.weight": torch.zeros(3)})


def test_spectral_norm_without_its_vectors_is_an_error():
    with pytest.raises(EmoPortraitsError, match="lacks decoder_nw.res_decoder.0.weight_v"):
        convert_official_state_dict({"decoder_nw.res_decoder.0.weight_orig": torch.zeros(4, 4, 1, 1),
                                     "decoder_nw.res_decoder.0.weight_u": torch.zeros(4)})


def test_constants_are_checked_not_ignored():
    bad_mean = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
    with pytest.raises(EmoPortraitsError, match="idt_embedder_nw.mean differs"):
        convert_official_state_dict({"idt_embedder_nw.mean": bad_mean})


def test_unreadable_and_unsafe_files(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(EmoPortraitsError, match="could not be read"):
        load_official_checkpoint(garbage)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"weights": object()}, unsafe)    # arbitrary objects are refused by weights_only
    with pytest.raises(EmoPortraitsError, match="could not be read"):
        load_official_checkpoint(unsafe)
    not_a_state_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_state_dict)
    with pytest.raises(EmoPortraitsError, match="not a plain state_dict"):
        load_official_checkpoint(not_a_state_dict)
    with pytest.raises(EmoPortraitsError, match="no such file"):
        load_official_checkpoint(tmp_path / "missing.pth")


def test_cli_reports_errors_in_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli_main(["convert", "--checkpoint", str(tmp_path / "missing.pth"),
                     "--head-pose", str(tmp_path / "hp.pth"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "error:" in err and "missing.pth: no such file" in err and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]   # no temporary left


def test_cli_help():
    result = subprocess.run([sys.executable, "-m", "emoportraits", "convert", "--help"],
                            capture_output=True, text=True, check=True)
    assert "--checkpoint" in result.stdout and "weights_only" in result.stdout


@pytest.mark.skipif(not parity.available(), reason="../shared/parity is not present")
def test_convert_command_on_a_fill_rule_checkpoint(tmp_path):
    """Acceptance: `emoportraits convert` on checkpoint files built from the fixture's fill rule
    writes a folder that EmoPortraits.from_pretrained loads, with the converted weights."""
    generator, head_pose = parity.official_state_dicts()
    torch.save(generator, tmp_path / "released_model.pth")
    torch.save(head_pose, tmp_path / "head_pose_regressor.pth")
    out = tmp_path / "emoportraits-released"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "emoportraits", "convert", "--checkpoint", str(tmp_path / "released_model.pth"),
         "--head-pose", str(tmp_path / "head_pose_regressor.pth"), "--out", str(out)],
        capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    (tmp_path / "released_model.pth").unlink()
    model = EmoPortraits.from_pretrained(out)
    expected = convert_official_state_dict(generator, head_pose)
    state = model.state_dict()
    assert set(state) == set(expected)
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert "license: other" in (out / "README.md").read_text()
    # a second run refuses to overwrite the finished folder
    again = subprocess.run(
        [sys.executable, "-m", "emoportraits", "convert", "--checkpoint", str(tmp_path / "x.pth"),
         "--head-pose", str(tmp_path / "head_pose_regressor.pth"), "--out", str(out)],
        capture_output=True, text=True, env=env)
    assert again.returncode == 2 and "not empty" in again.stderr
