"""The CTranslate2 Whisper → transformers converter and the `emoportraits convert-whisper` command.

No download and no CTranslate2: a random Whisper is written in CTranslate2's model.bin layout by
the small writer below (fused q/k/v with a zero key bias, flags as int8/int16 scalars, the output
projection as an alias of the embeddings, as CTranslate2's converter writes Whisper), then
converted back."""
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from emoportraits.cli import build_parser, main as cli_main
from emoportraits.errors import EmoPortraitsError
from emoportraits.convert_whisper import read_ctranslate2, whisper_from_ctranslate2
from helpers import tiny_whisper

transformers = pytest.importorskip("transformers")

_CODES = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
          np.dtype("float16"): 4}


# ---- a CTranslate2 writer --------------------------------------------------------------------------

def _string(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_model_bin(path: Path, variables: dict, aliases: dict, version: int = 6, spec: str = "WhisperSpec"):
    parts = [struct.pack("<I", version), _string(spec), struct.pack("<II", 3, len(variables))]
    for name in sorted(variables):
        a = np.asarray(variables[name])         # tobytes() is row-major; scalars stay rank 0
        parts += [_string(name), struct.pack("<B", a.ndim), struct.pack(f"<{a.ndim}I", *a.shape),
                  struct.pack("<BI", _CODES[a.dtype], a.nbytes), a.tobytes()]
    parts.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        parts += [_string(alias), _string(target)]
    path.write_bytes(b"".join(parts))


def ct2_variables(model, dtype=np.float32, int8: bool = False, key_bias: float = 0.0) -> dict:
    """The CTranslate2 variables of a transformers WhisperModel. ``int8``: linear weights quantised per
    row as CTranslate2 does (``weight`` int8, ``weight_scale`` float32); ``key_bias``: fill the fused
    key bias with this value instead of CTranslate2's zeros."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    c = model.config
    out = {"decoder/activation": np.int8(3), "decoder/alibi": np.int8(0), "decoder/pre_norm": np.int8(1),
           "decoder/scale_embeddings": np.int8(0), "decoder/start_from_zero_embedding": np.int8(0),
           "decoder/alignment_heads": np.int16(1), "decoder/alignment_layer": np.int16(-1),
           "decoder/num_heads": np.int16(c.decoder_attention_heads),
           "encoder/num_heads": np.int16(c.encoder_attention_heads)}

    def put(name, a):
        out[name] = np.asarray(a).astype(dtype)

    def linear(ct2, hf, bias_of_k=None):
        w = np.concatenate([sd[f"{p}.weight"] for p in hf])
        b = np.concatenate([sd.get(f"{p}.bias", np.full(sd[f"{p}.weight"].shape[0], key_bias, np.float32))
                            for p in hf])
        if int8:
            scale = 127.0 / np.abs(w).max(1)
            out[f"{ct2}/weight"] = np.round(w * scale[:, None]).astype(np.int8)
            out[f"{ct2}/weight_scale"] = scale.astype(np.float32)
        else:
            put(f"{ct2}/weight", w)
        put(f"{ct2}/bias", b)

    def norm(ct2, hf):
        put(f"{ct2}/gamma", sd[f"{hf}.weight"])
        put(f"{ct2}/beta", sd[f"{hf}.bias"])

    def attention(ct2, hf, cross=False):
        norm(f"{ct2}/layer_norm", f"{hf}_layer_norm")
        q, k, v = f"{hf}.q_proj", f"{hf}.k_proj", f"{hf}.v_proj"
        if cross:
            linear(f"{ct2}/linear_0", [q])
            linear(f"{ct2}/linear_1", [k, v])
            linear(f"{ct2}/linear_2", [f"{hf}.out_proj"])
        else:
            linear(f"{ct2}/linear_0", [q, k, v])
            linear(f"{ct2}/linear_1", [f"{hf}.out_proj"])

    def ffn(ct2, hf):
        norm(f"{ct2}/layer_norm", f"{hf}.final_layer_norm")
        linear(f"{ct2}/linear_0", [f"{hf}.fc1"])
        linear(f"{ct2}/linear_1", [f"{hf}.fc2"])

    for conv in ("conv1", "conv2"):
        put(f"encoder/{conv}/weight", sd[f"encoder.{conv}.weight"])
        put(f"encoder/{conv}/bias", sd[f"encoder.{conv}.bias"])
    for stack in ("encoder", "decoder"):
        put(f"{stack}/position_encodings/encodings", sd[f"{stack}.embed_positions.weight"])
        norm(f"{stack}/layer_norm", f"{stack}.layer_norm")
    for i in range(c.encoder_layers):
        attention(f"encoder/layer_{i}/self_attention", f"encoder.layers.{i}.self_attn")
        ffn(f"encoder/layer_{i}/ffn", f"encoder.layers.{i}")
    for i in range(c.decoder_layers):
        attention(f"decoder/layer_{i}/self_attention", f"decoder.layers.{i}.self_attn")
        attention(f"decoder/layer_{i}/attention", f"decoder.layers.{i}.encoder_attn", cross=True)
        ffn(f"decoder/layer_{i}/ffn", f"decoder.layers.{i}")
    put("decoder/embeddings/weight", sd["decoder.embed_tokens.weight"])
    return out


ALIASES = {"decoder/projection/weight": "decoder/embeddings/weight"}


def write_ct2_folder(folder: Path, model, **kwargs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_model_bin(folder / "model.bin", ct2_variables(model, **kwargs), ALIASES)
    (folder / "config.json").write_text('{"suppress_ids": [1, 2], "suppress_ids_begin": [220]}')
    return folder


def odd_whisper():
    """A small Whisper whose every size differs from the defaults, with 128 mel bins (as large-v3)."""
    torch.manual_seed(1)
    return transformers.WhisperModel(transformers.WhisperConfig(
        vocab_size=300, d_model=24, encoder_layers=2, decoder_layers=3, encoder_attention_heads=3,
        decoder_attention_heads=4, encoder_ffn_dim=40, decoder_ffn_dim=56, max_source_positions=30,
        max_target_positions=20, num_mel_bins=128, pad_token_id=298, eos_token_id=298, bos_token_id=299,
        decoder_start_token_id=299)).eval()


@pytest.fixture(scope="module")
def tiny():
    return tiny_whisper().eval()


@pytest.fixture(scope="module")
def tiny_ct2(tiny, tmp_path_factory):
    return write_ct2_folder(tmp_path_factory.mktemp("ct2") / "whisper", tiny)


def encode(model, seed=0):
    c = model.config
    mel = torch.randn(1, c.num_mel_bins, 2 * c.max_source_positions, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return model.encoder(mel).last_hidden_state


# ---- conversion --------------------------------------------------------------------------------------

def test_float32_round_trip_is_exact(tiny, tiny_ct2):
    converted = whisper_from_ctranslate2(tiny_ct2)
    expected, got = tiny.state_dict(), converted.state_dict()
    assert set(got) == set(expected)
    assert not any(k.endswith("k_proj.bias") for k in got)        # Whisper's key projection has no bias
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    torch.testing.assert_close(encode(converted), encode(tiny), rtol=0, atol=0)
    assert converted.config.suppress_tokens == [1, 2] and converted.config.begin_suppress_tokens == [220]


def test_config_comes_from_the_shapes_and_the_vocabulary(tmp_path):
    model = odd_whisper()
    folder = write_ct2_folder(tmp_path / "odd", model)
    (folder / "vocabulary.txt").write_text("\n".join([f"t{i}" for i in range(298)]
                                                     + ["<|endoftext|>", "<|startoftranscript|>"]))
    converted = whisper_from_ctranslate2(folder)
    for field in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                  "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_source_positions",
                  "max_target_positions", "num_mel_bins", "eos_token_id", "pad_token_id", "bos_token_id",
                  "decoder_start_token_id", "activation_function", "scale_embedding"):
        assert getattr(converted.config, field) == getattr(model.config, field), field
    for key, value in model.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key
    torch.testing.assert_close(encode(converted), encode(model), rtol=0, atol=0)


def test_float16_round_trip_is_within_fp16_rounding(tiny, tmp_path):
    converted = whisper_from_ctranslate2(write_ct2_folder(tmp_path / "fp16", tiny, dtype=np.float16))
    for key, value in tiny.state_dict().items():      # exactly the fp16-rounded weights, as float32
        assert torch.equal(converted.state_dict()[key], value.half().float()), key
    torch.testing.assert_close(encode(converted), encode(tiny), rtol=0, atol=2e-2)


def test_int8_weights_are_dequantised(tiny, tmp_path):
    converted = whisper_from_ctranslate2(write_ct2_folder(tmp_path / "int8", tiny, int8=True))
    got = converted.state_dict()
    for key, value in tiny.state_dict().items():
        if key.endswith(".weight") and ("_proj." in key or ".fc" in key):       # the linears' weights
            step = value.abs().amax(1, keepdim=True) / 127          # one quantisation step per row
            assert ((got[key] - value).abs() <= step / 2 * 1.001).all(), key
        else:
            assert torch.equal(got[key], value), key
    assert "encoder/layer_0/ffn/linear_0/weight_scale" not in read_ctranslate2(tmp_path / "int8")[0]


def test_a_key_bias_is_dropped_without_changing_the_outputs(tiny, tmp_path):
    converted = whisper_from_ctranslate2(write_ct2_folder(tmp_path / "kb", tiny, key_bias=0.7))
    torch.testing.assert_close(encode(converted), encode(tiny), rtol=1e-5, atol=1e-5)


def test_reader_returns_the_header_and_resolves_aliases(tiny_ct2):
    arrays, meta = read_ctranslate2(tiny_ct2 / "model.bin")
    assert (meta["binary_version"], meta["spec"], meta["revision"]) == (6, "WhisperSpec", 3)
    assert meta["aliases"] == ALIASES
    assert arrays["decoder/projection/weight"] is arrays["decoder/embeddings/weight"]
    assert arrays["decoder/alignment_layer"] == -1 and arrays["encoder/num_heads"].dtype == np.int16


@pytest.mark.parametrize("keep", [2, 30, 5000, -1])
def test_truncated_file_is_a_clear_error(tiny_ct2, tmp_path, keep):
    bad = tmp_path / "model.bin"
    bad.write_bytes((tiny_ct2 / "model.bin").read_bytes()[:keep])
    with pytest.raises(EmoPortraitsError, match=f"{bad} is truncated"):
        read_ctranslate2(bad)


def test_wrong_version_and_trailing_bytes_are_clear_errors(tiny, tmp_path):
    bad = tmp_path / "model.bin"
    write_model_bin(bad, {"x": np.zeros(2, np.float32)}, {}, version=5)
    with pytest.raises(EmoPortraitsError, match=f"{bad} is not a CTranslate2 model of binary version 6.*version 5"):
        read_ctranslate2(bad)
    write_model_bin(bad, {"x": np.zeros(2, np.float32)}, {})
    bad.write_bytes(bad.read_bytes() + b"\0")
    with pytest.raises(EmoPortraitsError, match="1 bytes follow the last alias"):
        read_ctranslate2(bad)
    with pytest.raises(EmoPortraitsError, match="no such file"):
        read_ctranslate2(tmp_path / "nothing")


def test_other_spec_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    write_model_bin(tmp_path / "m" / "model.bin", {"x": np.zeros(2, np.float32)}, {}, spec="TransformerSpec")
    with pytest.raises(EmoPortraitsError, match="holds a CTranslate2 TransformerSpec, not a Whisper model"):
        whisper_from_ctranslate2(tmp_path / "m")


def test_missing_and_unknown_variables_are_errors(tiny, tmp_path):
    variables = ct2_variables(tiny)
    del variables["encoder/layer_0/ffn/linear_1/bias"]
    write_model_bin(tmp_path / "model.bin", variables, ALIASES)
    with pytest.raises(EmoPortraitsError, match="lacks the variable encoder/layer_0/ffn/linear_1/bias"):
        whisper_from_ctranslate2(tmp_path)
    variables = ct2_variables(tiny)
    variables["encoder/mystery"] = np.zeros(3, np.float32)
    write_model_bin(tmp_path / "model.bin", variables, ALIASES)
    with pytest.raises(EmoPortraitsError, match=r"1 variables are not understood.*encoder/mystery"):
        whisper_from_ctranslate2(tmp_path)
    variables = ct2_variables(tiny)
    variables["decoder/pre_norm"] = np.int8(0)
    write_model_bin(tmp_path / "model.bin", variables, ALIASES)
    with pytest.raises(EmoPortraitsError, match="decoder/pre_norm is 0"):
        whisper_from_ctranslate2(tmp_path)


# ---- the command -------------------------------------------------------------------------------------

def test_convert_whisper_command(tiny, tiny_ct2, tmp_path, capsys):
    from emoportraits.audio import WhisperFeatures

    out = tmp_path / "whisper_hf"
    assert cli_main(["convert-whisper", "--ctranslate2", str(tiny_ct2), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "preprocessor_config.json"}
    assert transformers.WhisperFeatureExtractor.from_pretrained(out).feature_size == 80
    loaded = transformers.WhisperModel.from_pretrained(out)
    for key, value in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    features = WhisperFeatures(out)(np.sin(np.arange(16000, dtype=np.float32) / 7))
    assert features.shape == (50, 32)

    # an existing folder is kept unless --overwrite; the error is one line
    (out / "mine.txt").write_text("keep")
    capsys.readouterr()                          # drop the loading progress bars above
    assert cli_main(["convert-whisper", "--ctranslate2", str(tiny_ct2), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--overwrite" in err and "\n" not in err and (out / "mine.txt").exists()
    assert cli_main(["convert-whisper", "--ctranslate2", str(tiny_ct2), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "mine.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["whisper_hf"]       # no temporary folder left behind


def test_convert_whisper_command_errors_are_one_line(tiny_ct2, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.bin").write_bytes((tiny_ct2 / "model.bin").read_bytes()[:1000])
    for source in (broken, tmp_path / "missing"):
        assert cli_main(["convert-whisper", "--ctranslate2", str(source), "--out", str(tmp_path / "o")]) == 2
        lines = capsys.readouterr().err.strip().splitlines()     # maybe a "reading …" note, then the error
        assert lines[-1].startswith("emoportraits convert-whisper: error:")
        assert len(lines) <= 2 and not any("Traceback" in line for line in lines)
    assert not (tmp_path / "o").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["broken"]
    assert "convert-whisper" in build_parser().format_help()
