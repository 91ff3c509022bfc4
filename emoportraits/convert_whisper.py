"""Whisper in CTranslate2 format → a transformers ``WhisperModel`` folder, offline.

Speech tools (faster-whisper and the packages built on it) ship Whisper as a CTranslate2 folder:
``model.bin``, ``config.json`` and ``vocabulary.txt`` / ``tokenizer.json``. This module reads such a
folder without CTranslate2 and rebuilds the Hugging Face model from it, so real Whisper weights can
be had from a pip wheel when the Hub cannot be reached.

``model.bin`` layout (little-endian; binary version 6):

* u32 binary version · string spec name (``WhisperSpec``) · u32 spec revision;
* u32 number of variables, then for each: string name · u8 rank · rank × u32 dims · u8 dtype ·
  u32 byte count · the bytes (row-major);
* u32 number of aliases, then for each: string alias · string name of the variable it stands for.

A string is a u16 length that counts a final NUL, then the UTF-8 bytes and the NUL. The dtype
codes are 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. Quantised weights (int8 /
int16) come with a float ``<name>_scale`` holding one scale per output row (or one per tensor):
the float weight is ``q / scale``. Scalars (rank 0, small integers) are the spec's settings: the
activation, pre-norm, the number of heads…

Mapping onto transformers: CTranslate2 fuses the self-attention's q, k, v projections into one
matrix (``linear_0``: rows q, then k, then v) and the cross-attention's k, v (``linear_1``); it
stores the key projection's bias as zeros because Whisper has none. That bias is dropped: even
where it is not zero it adds q·b to every key's score of a query alike, which softmax ignores.
Every CTranslate2 variable is either mapped, read into the configuration, checked as a setting
transformers' Whisper cannot change (``_CHECKED``), or listed in ``IGNORED_VARIABLES``;
anything else is an error, as is a parameter of the model left unfilled.
"""
from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import numpy as np
import torch

from .errors import EmoPortraitsError
from .state_dict import load_strict

BINARY_VERSION = 6
_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"),
           4: np.dtype("<f2"), 5: np.dtype("<u2")}          # 5: bfloat16, widened below
_BFLOAT16 = 5

# CTranslate2's activation codes → transformers' names (1 is the tanh approximation of GELU).
_ACTIVATIONS = {0: "relu", 1: "gelu_new", 2: "silu", 3: "gelu"}

# Settings with the one value transformers' Whisper implements: anything else is another model.
_CHECKED = {"pre_norm": 1, "alibi": 0, "start_from_zero_embedding": 0}

# Variables read by nothing of transformers' WhisperModel.
IGNORED_VARIABLES = {
    "decoder/alignment_heads": "CTranslate2's word-timestamp setting; transformers takes alignment heads "
                               "from the generation config, not from the weights",
    "decoder/alignment_layer": "CTranslate2's word-timestamp setting (see decoder/alignment_heads)",
    # written by newer converters; they only matter with ALiBi, which _CHECKED makes sure is off
    "decoder/alibi_use_positive_positions": "an ALiBi option (ALiBi is off)",
    "decoder/scale_alibi": "an ALiBi option (ALiBi is off)",
}


# ---- model.bin -----------------------------------------------------------------------------------

class _Reader:
    """Bounds-checked reading of the bytes of one file; every shortfall names the file."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.pos = memoryview(data), path, 0

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise EmoPortraitsError(f"{self.path} is truncated: {what} needs {n} bytes at offset {self.pos}, "
                                    f"the file has {len(self.data)}; download or convert the model again")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def number(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        raw = bytes(self.take(self.number("H", what), what))
        try:
            if not raw.endswith(b"\0"):
                raise UnicodeDecodeError("utf-8", raw, 0, len(raw), "no final NUL")
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise EmoPortraitsError(f"{self.path} is corrupted: {what} at offset {self.pos - len(raw)} "
                                    f"is not a string") from None


def _read_variable(r: _Reader) -> tuple[str, np.ndarray]:
    name = r.string("a variable name")
    shape = tuple(r.number("I", f"the shape of {name}") for _ in range(r.number("B", f"the rank of {name}")))
    code = r.number("B", f"the dtype of {name}")
    if code not in _DTYPES:
        raise EmoPortraitsError(f"{r.path}: variable {name} has dtype code {code}, which this reader does not "
                                f"support (float32, float16, bfloat16, int8, int16, int32)")
    size = r.number("I", f"the byte count of {name}")
    dtype = _DTYPES[code]
    if size != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise EmoPortraitsError(f"{r.path} is corrupted: variable {name} of shape {shape} and dtype code {code} "
                                f"claims {size} bytes")
    array = np.frombuffer(r.take(size, f"the data of {name}"), dtype).reshape(shape)
    if code == _BFLOAT16:          # bfloat16 is the upper half of a float32
        array = (array.astype("<u4") << 16).view("<f4")
    return name, array


def _dequantise(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Replace every quantised ``X`` that has an ``X_scale`` by float32 ``X / scale``, drop the scales."""
    for name in [n for n in arrays if n.endswith("_scale") and n[:-len("_scale")] in arrays]:
        base = name[:-len("_scale")]
        q, scale = arrays[base], arrays.pop(name).astype(np.float32)
        if q.dtype.kind != "i":
            raise EmoPortraitsError(f"{path}: {name} scales {base}, which is not quantised ({q.dtype})")
        if scale.size == 1:
            arrays[base] = q.astype(np.float32) / scale.reshape(())
        elif q.ndim >= 1 and scale.size == q.shape[0]:    # one scale per output row
            arrays[base] = q.astype(np.float32) / scale.reshape(-1, *([1] * (q.ndim - 1)))
        else:
            raise EmoPortraitsError(f"{path}: {name} has {scale.size} scales for {base} of shape {q.shape}")


def read_ctranslate2(path) -> tuple[dict[str, np.ndarray], dict]:
    """The variables of a CTranslate2 ``model.bin`` (or of the folder holding one), quantised weights
    dequantised to float32 and aliases resolved, and the header: ``{"path", "binary_version", "spec",
    "revision", "aliases"}``. Raises ``EmoPortraitsError`` naming the file when it is missing,
    truncated, of another binary version or otherwise unreadable."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise EmoPortraitsError(f"{path}: no such file; pass a CTranslate2 model folder (model.bin, config.json)")
    r = _Reader(path.read_bytes(), path)
    version = r.number("I", "the binary version")
    if version != BINARY_VERSION:
        raise EmoPortraitsError(f"{path} is not a CTranslate2 model of binary version {BINARY_VERSION} "
                                f"(it starts with version {version}); convert the model again with a recent "
                                f"CTranslate2 converter")
    meta = {"path": str(path), "binary_version": version, "spec": r.string("the spec name"),
            "revision": r.number("I", "the spec revision")}
    arrays = dict(_read_variable(r) for _ in range(r.number("I", "the number of variables")))
    aliases = {}
    for _ in range(r.number("I", "the number of aliases")):
        alias = r.string("an alias")
        aliases[alias] = r.string(f"the target of alias {alias}")
    if r.pos != len(r.data):
        raise EmoPortraitsError(f"{path} is corrupted: {len(r.data) - r.pos} bytes follow the last alias")
    _dequantise(arrays, path)
    for alias, target in aliases.items():
        if target not in arrays:
            raise EmoPortraitsError(f"{path} is corrupted: alias {alias} names the missing variable {target}")
        arrays[alias] = arrays[target]
    meta["aliases"] = aliases
    return arrays, meta


# ---- CTranslate2 Whisper → transformers ----------------------------------------------------------

class _Variables:
    """The CTranslate2 variables, handed out once each as float32 tensors; remembers which were used."""

    def __init__(self, arrays: dict[str, np.ndarray], source: str):
        self.arrays, self.source, self.used = arrays, source, set()

    def _get(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            raise EmoPortraitsError(f"{self.source} lacks the variable {name}; is it a complete Whisper model?")
        self.used.add(name)
        return self.arrays[name]

    def shape(self, name: str) -> tuple[int, ...]:
        if name not in self.arrays:
            raise EmoPortraitsError(f"{self.source} lacks the variable {name}; is it a complete Whisper model?")
        return self.arrays[name].shape

    def tensor(self, name: str) -> torch.Tensor:
        a = self._get(name)
        if a.dtype.kind != "f":
            raise EmoPortraitsError(f"{self.source}: {name} is {a.dtype} without {name}_scale; "
                                    f"cannot turn it into weights")
        return torch.from_numpy(a.astype(np.float32))      # a copy: the file's bytes stay read-only

    def setting(self, name: str, default: int | None = None) -> int | None:
        if name not in self.arrays:
            return default
        a = self._get(name)
        if a.ndim != 0:
            raise EmoPortraitsError(f"{self.source}: {name} should be a scalar setting, has shape {a.shape}")
        return int(a)

    def unused(self) -> list[str]:
        return sorted(set(self.arrays) - self.used - set(IGNORED_VARIABLES))


def _layer_count(v: _Variables, stack: str) -> int:
    found = {int(m.group(1)) for n in v.arrays if (m := re.match(rf"{stack}/layer_(\d+)/", n))}
    if found != set(range(len(found))):
        raise EmoPortraitsError(f"{v.source}: the {stack} layers are numbered {sorted(found)}, not 0 … n-1")
    return len(found)


def _special_tokens(folder: Path, vocab_size: int) -> dict[str, int]:
    """End-of-text and start-of-transcript ids from tokenizer.json or the vocabulary file, else Whisper's
    (the English-only models have one token fewer than the multilingual ones, before these two)."""
    ids: dict[str, int] = {}
    if (folder / "tokenizer.json").is_file():
        tok = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        ids = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    else:          # one token per line (older converters) or a JSON list (newer ones)
        for name, parse in (("vocabulary.json", json.loads), ("vocabulary.txt", lambda t: t.split("\n"))):
            if (folder / name).is_file():
                tokens = parse((folder / name).read_text(encoding="utf-8"))
                ids = {t: i for i, t in enumerate(tokens) if t.startswith("<|") and t.endswith("|>")}
                break
    eot = ids.get("<|endoftext|>", 50257 if vocab_size >= 51865 else 50256)
    sot = ids.get("<|startoftranscript|>", eot + 1)
    return {"eos_token_id": eot, "pad_token_id": eot, "bos_token_id": sot, "decoder_start_token_id": sot}


def _config(v: _Variables, folder: Path):
    """A ``WhisperConfig`` from the variables' shapes and settings (and config.json's suppress lists)."""
    from transformers import WhisperConfig

    vocab_size, d_model = v.shape("decoder/embeddings/weight")
    activations = {stack: v.setting(f"{stack}/activation", 3) for stack in ("encoder", "decoder")}
    if len(set(activations.values())) != 1 or activations["encoder"] not in _ACTIVATIONS:
        raise EmoPortraitsError(f"{v.source}: activation codes {activations} are not one activation that "
                                f"transformers' Whisper supports ({_ACTIVATIONS})")
    for stack in ("encoder", "decoder"):
        for name, expected in _CHECKED.items():
            value = v.setting(f"{stack}/{name}", expected)
            if value != expected:
                raise EmoPortraitsError(f"{v.source}: {stack}/{name} is {value}; transformers' Whisper "
                                        f"implements only {expected}")
    extra = json.loads((folder / "config.json").read_text(encoding="utf-8")) if (folder / "config.json").is_file() else {}
    return WhisperConfig(
        vocab_size=vocab_size, d_model=d_model, num_mel_bins=v.shape("encoder/conv1/weight")[1],
        encoder_layers=_layer_count(v, "encoder"), decoder_layers=_layer_count(v, "decoder"),
        # Whisper's heads are 64 wide; CTranslate2 writes the count, but be lenient if it does not
        encoder_attention_heads=v.setting("encoder/num_heads", d_model // 64),
        decoder_attention_heads=v.setting("decoder/num_heads", d_model // 64),
        encoder_ffn_dim=v.shape("encoder/layer_0/ffn/linear_0/weight")[0],
        decoder_ffn_dim=v.shape("decoder/layer_0/ffn/linear_0/weight")[0],
        max_source_positions=v.shape("encoder/position_encodings/encodings")[0],
        max_target_positions=v.shape("decoder/position_encodings/encodings")[0],
        activation_function=_ACTIVATIONS[activations["encoder"]],
        scale_embedding=bool(v.setting("decoder/scale_embeddings", 0)),
        suppress_tokens=extra.get("suppress_ids"), begin_suppress_tokens=extra.get("suppress_ids_begin"),
        **_special_tokens(folder, vocab_size))


def _linear(v: _Variables, ct2: str, hf: list[str], out: dict) -> None:
    """CTranslate2 linear ``ct2`` (its rows the fused projections ``hf``, in order) → HF linears."""
    weight, bias = v.tensor(f"{ct2}/weight"), v.tensor(f"{ct2}/bias")
    if weight.shape[0] % len(hf) or bias.shape != weight.shape[:1]:
        raise EmoPortraitsError(f"{v.source}: {ct2} of shape {tuple(weight.shape)} (bias {tuple(bias.shape)}) "
                                f"cannot be split into {len(hf)} projections")
    for name, w, b in zip(hf, weight.chunk(len(hf)), bias.chunk(len(hf))):
        out[f"{name}.weight"] = w.clone()
        if not name.endswith("k_proj"):          # the key bias is dropped: see the module docstring
            out[f"{name}.bias"] = b.clone()


def _layer_norm(v: _Variables, ct2: str, hf: str, out: dict) -> None:
    out[f"{hf}.weight"], out[f"{hf}.bias"] = v.tensor(f"{ct2}/gamma"), v.tensor(f"{ct2}/beta")


def _attention(v: _Variables, ct2: str, hf: str, out: dict, cross: bool = False) -> None:
    qkv = [f"{hf}.q_proj", f"{hf}.k_proj", f"{hf}.v_proj"]
    _layer_norm(v, f"{ct2}/layer_norm", f"{hf}_layer_norm", out)
    if cross:      # the query comes from the decoder, keys and values from the encoder output
        _linear(v, f"{ct2}/linear_0", qkv[:1], out)
        _linear(v, f"{ct2}/linear_1", qkv[1:], out)
        _linear(v, f"{ct2}/linear_2", [f"{hf}.out_proj"], out)
    else:
        _linear(v, f"{ct2}/linear_0", qkv, out)
        _linear(v, f"{ct2}/linear_1", [f"{hf}.out_proj"], out)


def _ffn(v: _Variables, ct2: str, hf: str, out: dict) -> None:
    _layer_norm(v, f"{ct2}/layer_norm", f"{hf}.final_layer_norm", out)
    _linear(v, f"{ct2}/linear_0", [f"{hf}.fc1"], out)
    _linear(v, f"{ct2}/linear_1", [f"{hf}.fc2"], out)


def _whisper_state_dict(v: _Variables, config) -> dict[str, torch.Tensor]:
    """The ``WhisperModel`` state dict of the CTranslate2 variables."""
    out: dict[str, torch.Tensor] = {}
    for conv in ("conv1", "conv2"):
        out[f"encoder.{conv}.weight"] = v.tensor(f"encoder/{conv}/weight")
        out[f"encoder.{conv}.bias"] = v.tensor(f"encoder/{conv}/bias")
    for stack in ("encoder", "decoder"):
        out[f"{stack}.embed_positions.weight"] = v.tensor(f"{stack}/position_encodings/encodings")
        _layer_norm(v, f"{stack}/layer_norm", f"{stack}.layer_norm", out)
    for i in range(config.encoder_layers):
        _attention(v, f"encoder/layer_{i}/self_attention", f"encoder.layers.{i}.self_attn", out)
        _ffn(v, f"encoder/layer_{i}/ffn", f"encoder.layers.{i}", out)
    for i in range(config.decoder_layers):
        _attention(v, f"decoder/layer_{i}/self_attention", f"decoder.layers.{i}.self_attn", out)
        _attention(v, f"decoder/layer_{i}/attention", f"decoder.layers.{i}.encoder_attn", out, cross=True)
        _ffn(v, f"decoder/layer_{i}/ffn", f"decoder.layers.{i}", out)
    out["decoder.embed_tokens.weight"] = v.tensor("decoder/embeddings/weight")
    # The output projection is an alias of the embeddings: transformers ties the two, so a
    # separate projection (not in Whisper) could not be represented.
    if "decoder/projection/weight" in v.arrays:
        if not torch.equal(v.tensor("decoder/projection/weight"), out["decoder.embed_tokens.weight"]):
            raise EmoPortraitsError(f"{v.source}: decoder/projection/weight differs from the token embeddings; "
                                    f"transformers' Whisper ties them")
    return out


def whisper_from_ctranslate2(folder):
    """A float32 ``transformers.WhisperModel`` with the weights of the CTranslate2 Whisper in
    ``folder`` (``model.bin`` + ``config.json``, optionally ``tokenizer.json`` / ``vocabulary.txt``
    for the special token ids). Every variable must be understood and every parameter filled."""
    try:
        from transformers import WhisperModel
    except ImportError as e:       # transformers is in the [speech] extra (and [app], [train])
        raise ImportError("converting Whisper needs transformers: pip install 'emoportraits[speech]'") from e
    folder = Path(folder)
    arrays, meta = read_ctranslate2(folder)
    if meta["spec"] != "WhisperSpec":
        raise EmoPortraitsError(f"{meta['path']} holds a CTranslate2 {meta['spec']}, not a Whisper model")
    v = _Variables(arrays, meta["path"])
    config = _config(v, folder if folder.is_dir() else folder.parent)
    state = _whisper_state_dict(v, config)
    unknown = v.unused()
    if unknown:
        raise EmoPortraitsError(f"{meta['path']}: {len(unknown)} variables are not understood by the converter: "
                                f"{unknown[:10]}{' …' if len(unknown) > 10 else ''}")
    # built on the meta device: no time spent on a random initialisation that is overwritten anyway
    with torch.device("meta"):
        model = WhisperModel(config)
    load_strict(model, state, f"converted {meta['path']}", assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise EmoPortraitsError(f"converting {meta['path']} left {left[:5]} unset")
    return model.eval()


def feature_extractor_for(config):
    """The ``WhisperFeatureExtractor`` of a Whisper ``config``: ``num_mel_bins`` log-mel bands of 16 kHz
    audio, windows of ``max_source_positions`` / 50 seconds (30 s for the released models)."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=16000, hop_length=160,
                                   chunk_length=max(1, round(config.max_source_positions / 50)))


def convert_ctranslate2_whisper(folder, out_dir):
    """Convert the CTranslate2 Whisper in ``folder`` and save it to ``out_dir`` (safetensors weights,
    config, feature extractor), loadable with ``WhisperModel.from_pretrained`` and ``WhisperFeatures``."""
    model = whisper_from_ctranslate2(folder)
    model.save_pretrained(os.fspath(out_dir))
    feature_extractor_for(model.config).save_pretrained(os.fspath(out_dir))
    return model
