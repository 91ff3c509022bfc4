"""Speech-driven mode: audio decoding, Whisper features (windowing), alignment to video frames, E_aud."""
import wave

import numpy as np
import pytest

from helpers import tiny_whisper
import torch
from safetensors.torch import load_file, save_file

from emoportraits.audio import WhisperFeatures, align_to_frames, load_audio, n_frames_for
from emoportraits.errors import MediaError, WeightsMismatchError
from emoportraits.media.video import VideoWriter
from emoportraits.models.speech import SpeechEncoder, SpeechEncoderConfig

transformers = pytest.importorskip("transformers")


# ---- alignment ------------------------------------------------------------------------------------

def _ramp(T, D=3):
    """Feature j = [j, 2j, −j, …]: linear in j, so interpolated values are known exactly."""
    return torch.arange(T, dtype=torch.float64)[:, None] * torch.tensor([1.0, 2.0, -1.0][:D], dtype=torch.float64)


@pytest.mark.parametrize("fps", [25, 30, 24.7])
def test_alignment_samples_the_frame_interval(fps):
    seconds = 3.3
    T = round(seconds * 50)
    n = n_frames_for(seconds, fps)
    assert n == round(seconds * fps)
    out = align_to_frames(_ramp(T), n, fps)
    assert out.shape == (n, 2, 3)
    t = torch.arange(n, dtype=torch.float64)[:, None] + torch.tensor([0.25, 0.75], dtype=torch.float64)
    expect = (t / fps * 50 - 0.5).clamp(0, T - 1)          # feature-frame position of each sample time
    torch.testing.assert_close(out[..., 0], expect, rtol=0, atol=1e-9)
    torch.testing.assert_close(out[..., 1], 2 * expect, rtol=0, atol=1e-9)
    assert align_to_frames(_ramp(T), n, fps, flatten=True).shape == (n, 6)


def test_alignment_at_25_fps_is_exactly_two_whisper_frames():
    feats = torch.randn(100, 8)
    out = align_to_frames(feats, 50, 25)
    assert torch.equal(out, feats.reshape(50, 2, 8))
    assert align_to_frames(feats, 50, 25, k=4).shape == (50, 4, 8)


def test_alignment_clamps_past_the_end():
    out = align_to_frames(_ramp(10), 8, 25)                 # 8 frames need 16 features: the tail repeats the last
    assert torch.all(out[-3:, :, 0] == 9)


# ---- load_audio -----------------------------------------------------------------------------------

def _write_wav(path, left, right, rate):
    data = (np.stack([left, right], axis=1) * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(data.tobytes())


def test_load_audio_wav_stereo_44k_to_16k_mono(tmp_path):
    seconds, rate = 1.5, 44100
    t = np.arange(int(seconds * rate)) / rate
    tone = np.sin(2 * np.pi * 440 * t)
    _write_wav(tmp_path / "a.wav", 0.8 * tone, 0.2 * tone, rate)
    audio = load_audio(tmp_path / "a.wav")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size - seconds * 16000) <= 16
    assert np.abs(audio).max() <= 1
    ref = 0.5 * np.sin(2 * np.pi * 440 * np.arange(audio.size) / 16000)   # the mean of the two channels
    inner = slice(200, -200)
    assert np.abs(audio[inner] - ref[inner]).max() < 0.02


def test_load_audio_of_a_video(tmp_path):
    rate = 16000
    t = np.arange(2 * rate) / rate
    _write_wav(tmp_path / "speech.wav", 0.3 * np.sin(2 * np.pi * 300 * t), 0.3 * np.sin(2 * np.pi * 300 * t), rate)
    frame = np.zeros((32, 32, 3), np.uint8)
    with VideoWriter(tmp_path / "talk.mp4", 25, audio_from=tmp_path / "speech.wav") as w:
        for _ in range(25):
            w.write(frame)
    audio = load_audio(tmp_path / "talk.mp4")
    assert abs(audio.size - 16000) <= 400                    # 1 s of video, AAC priming trimmed by ffmpeg
    assert 0.15 < np.sqrt(np.mean(audio[1000:-1000] ** 2)) < 0.25     # 0.3·sin has RMS 0.212

    with VideoWriter(tmp_path / "silent.mp4", 25) as w:
        for _ in range(5):
            w.write(frame)
    with pytest.raises(MediaError, match=r"^silent\.mp4: has no audio track"):
        load_audio(tmp_path / "silent.mp4")


def test_load_audio_errors(tmp_path):
    with pytest.raises(MediaError, match="nope.wav: no such file"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all" * 10)
    with pytest.raises(MediaError, match=r"^junk\.wav: could not be read as audio") as e:
        load_audio(tmp_path / "junk.wav")
    assert "\n" not in str(e.value)


# ---- Whisper features -----------------------------------------------------------------------------

def _tiny_whisper(local: bool = False):
    """Random tiny Whisper: windows of max_source_positions = 100 frames = 2 s. ``local``: positions and
    attention zeroed, so each output frame depends only on nearby mel frames (not on where the
    window starts) and the windowed path must reproduce any single window exactly."""
    model = tiny_whisper()
    if local:
        enc = model.get_encoder()
        with torch.no_grad():
            enc.embed_positions.weight.zero_()
            for layer in enc.layers:
                layer.self_attn.out_proj.weight.zero_()
                layer.self_attn.out_proj.bias.zero_()
    return model


def _speechlike(seconds, seed=0):
    """A voiced tone with noise loud enough that Whisper's per-window log-mel floor (max − 8) never
    clips, so log-mels of overlapping windows agree (except at the windows' own edges)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * 16000))) / 16000
    voiced = 0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.2 * np.sin(2 * np.pi * 0.7 * t)))
    return (voiced * (0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t)) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def test_whisper_features_length_and_frozen():
    wf = WhisperFeatures(_tiny_whisper())
    assert wf.window_seconds == 2.0 and wf.feature_extractor.n_samples == 32000
    assert not wf.encoder.training and not any(p.requires_grad for p in wf.encoder.parameters())
    feats = wf(_speechlike(5.3))                           # 4 windows of 2 s, hop 1 s
    assert feats.shape == (265, 32) and feats.dtype == torch.float32
    assert wf(_speechlike(0.5)).shape == (25, 32)          # shorter than one window
    assert torch.isfinite(feats).all()


def test_windowing_has_no_seams_and_no_offset():
    """With a local encoder, every frame away from the audio's end equals the encoder run on a window
    centred on it: any seam, off-by-one window offset or mis-trimmed padding would show."""
    wf = WhisperFeatures(_tiny_whisper(local=True))
    audio = _speechlike(5.3)
    feats = wf(audio)
    for boundary in (50, 75, 100, 125, 150, 175, 200):     # window starts, blend zones, middles
        s = boundary - 50
        ref = wf.encode_windows([audio[s * 320:(s + 100) * 320]])[0]
        torch.testing.assert_close(feats[boundary - 20:boundary + 20], ref[30:70], rtol=1e-4, atol=1e-4)


def test_windowing_crossfades_between_windows():
    """With the full (attention) encoder windows disagree; the blend must still be continuous: the
    biggest frame-to-frame change in the blend zones is no bigger than inside single windows."""
    wf = WhisperFeatures(_tiny_whisper())
    audio = _speechlike(5.3)
    feats = wf(audio)
    jumps = (feats[1:] - feats[:-1]).norm(dim=1)
    one = wf.encode_windows([audio[:32000]])[0]
    inside = (one[1:88] - one[:87]).norm(dim=1).max()
    blend = jumps[60:90].max()                              # windows 0 and 1 blend over frames 62.5 … 87.5
    assert blend <= 1.05 * inside
    torch.testing.assert_close(feats[:62], one[:62])        # weight 1 for window 0 alone there
    # a hard switch between windows would jump: check that the test would see it
    two = wf.encode_windows([audio[50 * 320:150 * 320]])[0]
    assert (two[25] - one[74]).norm() > 1.05 * inside


# ---- E_aud ----------------------------------------------------------------------------------------

def _inputs(model, B=2, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    return (torch.randn(B, c.z_dim, generator=g), torch.randn(B, T, c.audio_frames_per_step, c.audio_dim, generator=g),
            torch.randn(B, T, c.z_dim, generator=g))


@pytest.fixture
def speech_model():
    torch.manual_seed(0)
    model = SpeechEncoder(SpeechEncoderConfig.tiny()).eval()
    with torch.no_grad():     # as if trained: the zero-initialised output layers (see below) get weights
        for mlp in (model.mlp_b, model.mlp_c):
            mlp[-1].weight.normal_(0, 0.3)
            mlp[-1].bias.normal_(0, 0.1)
    return model


def test_untrained_model_predicts_the_still_face():
    """Zero-initialised outputs: before training E_aud returns z_0 for every frame, whatever the audio."""
    torch.manual_seed(0)
    model = SpeechEncoder(SpeechEncoderConfig.tiny()).eval()
    z0, audio, _ = _inputs(model)
    with torch.no_grad():
        out = model(z0, audio)
    assert torch.equal(out, z0[:, None].expand_as(out))


def test_rollout_equals_step_loop(speech_model):
    z0, audio, _ = _inputs(speech_model)
    with torch.no_grad():
        out = speech_model(z0, audio)
        base, prev, steps = speech_model.base(z0), z0, []
        for t in range(audio.shape[1]):
            prev = speech_model.step(base, prev, audio[:, t])
            steps.append(prev)
    assert out.shape == (2, 7, 16)
    assert torch.equal(out, torch.stack(steps, 1))
    assert torch.equal(speech_model(z0, audio.flatten(2)), out)        # (B, T, k·D) works too


def test_teacher_forcing(speech_model):
    z0, audio, teacher = _inputs(speech_model)
    with torch.no_grad():
        forced = speech_model(z0, audio, teacher, teacher_ratio=1.0)
        base = speech_model.base(z0)
        loop = [speech_model.step(base, z0 if t == 0 else teacher[:, t - 1], audio[:, t]) for t in range(7)]
        assert torch.equal(forced, torch.stack(loop, 1))
        assert torch.equal(speech_model(z0, audio, teacher, teacher_ratio=0.0), speech_model(z0, audio))
        half = [speech_model(z0, audio, teacher, 0.5, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(half[0], half[1])                                # reproducible with a generator
    assert not torch.equal(half[0], forced)


def test_bad_shapes_are_reported(speech_model):
    z0, audio, _ = _inputs(speech_model)
    with pytest.raises(ValueError, match="audio must be"):
        speech_model(z0, audio[..., :5])
    with pytest.raises(ValueError, match="teacher must be"):
        speech_model(z0, audio, torch.zeros(2, 3, 16), teacher_ratio=0.5)


def test_speech_encoder_hub_round_trip(speech_model, tmp_path):
    speech_model.save_pretrained(tmp_path / "eaud")
    loaded = SpeechEncoder.from_pretrained(tmp_path / "eaud")
    assert loaded.config == speech_model.config and not loaded.training
    for (k, a), (k2, b) in zip(speech_model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    z0, audio, _ = _inputs(speech_model)
    with torch.no_grad():
        assert torch.equal(speech_model(z0, audio), loaded(z0, audio))
    assert "library_name: emoportraits" in (tmp_path / "eaud" / "README.md").read_text()

    state = load_file(tmp_path / "eaud" / "model.safetensors")
    state["mlp_c.0.bias"] = torch.zeros(5)
    save_file(state, tmp_path / "eaud" / "model.safetensors")
    with pytest.raises(WeightsMismatchError, match=r"wrong shapes \[mlp_c\.0\.bias"):
        SpeechEncoder.from_pretrained(tmp_path / "eaud")
    del state["mlp_c.0.bias"]
    save_file(state, tmp_path / "eaud" / "model.safetensors")
    with pytest.raises(WeightsMismatchError, match=r"missing keys \[mlp_c\.0\.bias\]"):
        SpeechEncoder.from_pretrained(tmp_path / "eaud")
    with pytest.raises(ValueError, match="strictly"):
        SpeechEncoder.from_pretrained(tmp_path / "eaud", strict=False)
