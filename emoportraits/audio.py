"""Audio front end of the speech-driven mode (SPEC §4): files → 16 kHz mono → Whisper encoder
features at 50 Hz → features aligned to video frames.

``load_audio``
    Decodes any audio file, or the audio track of a video, into float32 mono samples in [-1, 1] at
    16 kHz: ``emoportraits.media.audio``'s, re-exported here for the speech callers.

``WhisperFeatures``
    A frozen Whisper encoder. Whisper's encoder only takes windows of exactly
    ``max_source_positions`` output frames (30 s for the released models: 3000 mel frames at
    100 Hz, convolved with stride 2 into 1500 frames at 50 Hz), so long audio is cut into windows
    of W = max_source_positions frames (W / 50 seconds) with a hop of W / 2. Every window is
    featurised on its own, as Whisper was trained (log-mel normalised per window, the last window
    zero-padded like any short Whisper input), and the windows' outputs are blended with
    trapezoidal weights: a window's first and last W / 8 frames get weight 0 (they lack context on
    one side), the next W / 4 ramp linearly to 1, the middle W / 4 has weight 1. With a hop of W / 2
    the ramps of neighbouring windows are complementary (they sum to 1), so every output frame comes
    from frames at least W / 8 away from a window edge, and the switch from one window to the next
    is a linear crossfade rather than a seam. At the start and end of the audio the edge frames of
    the first and last window are the only ones there are, and get weight 1. The output has
    ceil(n_samples / 320) frames (one per 20 ms of audio, the last one possibly partial); the
    padding's frames are dropped.

``align_to_frames``
    Whisper frame j covers the audio [j, j + 1) / 50 s, centred at (j + 0.5) / 50 s. Video frame t
    at ``fps`` covers [t, t + 1) / fps; it is given the feature sequence sampled at the k times
    (t + (i + 0.5) / k) / fps, i = 0 … k − 1 (the centres of k equal sub-intervals of the frame),
    by linear interpolation between the two nearest Whisper frames (clamped to the first / last
    frame outside the audio). At 25 fps and k = 2 these times are exactly the centres of Whisper
    frames 2t and 2t + 1, so the frame gets exactly those two feature vectors; at other rates
    (30, 24.7, 29.97 …) the same rule interpolates, and every video frame gets k vectors.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch

from .media.audio import load_audio, resample
from .windows import window_weights

__all__ = ["SAMPLE_RATE", "WHISPER_HZ", "load_audio", "WhisperFeatures", "random_whisper", "n_frames_for",
           "align_to_frames"]

SAMPLE_RATE = 16000          # Whisper's sampling rate
WHISPER_HZ = 50              # encoder output frames per second (hop 160 samples, conv stride 2)
SAMPLES_PER_FRAME = SAMPLE_RATE // WHISPER_HZ     # 320


# ---- Whisper encoder -----------------------------------------------------------------------------

class WhisperFeatures:
    """Frozen Whisper encoder: 16 kHz mono audio of any length → (T, d_model) hidden states at 50 Hz.

    ``model``: a Hub id (``openai/whisper-tiny`` …), a local folder saved by transformers, or an
    already-built ``WhisperModel`` / ``WhisperForConditionalGeneration`` / ``WhisperEncoder``. Only
    the encoder is kept. ``device`` / ``dtype`` default to the model's (cpu / float32 for a loaded
    one). ``batch_size`` windows go through the encoder at once. See the module docstring for how
    long audio is windowed and blended.
    """

    def __init__(self, model="openai/whisper-tiny", device=None, dtype=None, batch_size: int = 8):
        try:
            from transformers import WhisperFeatureExtractor, WhisperModel
        except ImportError as e:       # transformers is in the [speech] extra (and [app], [train])
            raise ImportError("WhisperFeatures needs transformers: pip install 'emoportraits[speech]'") from e
        if isinstance(model, (str, os.PathLike)):
            model = WhisperModel.from_pretrained(os.fspath(model))
        if hasattr(model, "get_encoder"):
            encoder = model.get_encoder()
        elif hasattr(model, "conv1") and hasattr(model, "embed_positions"):
            encoder = model                                  # a WhisperEncoder
        else:
            raise TypeError(f"model must be a Whisper model, a Hub id or a folder, got {type(model).__name__}")
        self.config = encoder.config
        self.encoder = encoder.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.batch_size = int(batch_size)
        # W output frames per window: the encoder insists on 2·W mel frames (conv2 has stride 2).
        self.window_frames = int(self.config.max_source_positions)
        self.window_samples = self.window_frames * SAMPLES_PER_FRAME
        self.window_seconds = self.window_frames / WHISPER_HZ
        self.hop_frames = max(1, self.window_frames // 2)     # odd W: the weights are renormalised anyway
        fe = WhisperFeatureExtractor(feature_size=self.config.num_mel_bins, sampling_rate=SAMPLE_RATE,
                                     hop_length=SAMPLES_PER_FRAME // 2, chunk_length=self.window_seconds)
        fe.n_samples = self.window_samples                   # exact even when window_seconds is fractional
        fe.nb_max_frames = self.window_samples // fe.hop_length
        self.feature_extractor = fe

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype

    @property
    def dim(self) -> int:
        return int(self.config.d_model)

    @staticmethod
    def n_frames(n_samples: int) -> int:
        """Number of 50 Hz frames for ``n_samples`` 16 kHz samples: one per started 20 ms."""
        return math.ceil(n_samples / SAMPLES_PER_FRAME)

    def encode_windows(self, windows: list[np.ndarray]) -> torch.Tensor:
        """Encoder hidden states (N, W, d_model), float32, of N windows of at most ``window_samples``
        samples each (shorter ones are zero-padded, as Whisper pads short audio)."""
        out = []
        for i in range(0, len(windows), self.batch_size):
            mel = self.feature_extractor(windows[i:i + self.batch_size], sampling_rate=SAMPLE_RATE,
                                         padding="max_length", max_length=self.window_samples,
                                         truncation=True, return_tensors="pt").input_features
            with torch.inference_mode():
                hidden = self.encoder(mel.to(self.device, self.dtype)).last_hidden_state
            out.append(hidden.float())
        return torch.cat(out)

    def __call__(self, audio, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        """(T, d_model) float32 encoder features on the encoder's device, T = ceil(n_samples / 320)
        at 16 kHz. ``audio``: 1-D float samples (numpy or torch); resampled when ``sample_rate`` is
        not 16 kHz."""
        if isinstance(audio, torch.Tensor):
            audio = audio.detach().float().cpu().numpy()
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or audio.size == 0:
            raise ValueError(f"audio must be a non-empty 1-D array of mono samples, got shape {audio.shape}")
        if sample_rate != SAMPLE_RATE:
            audio = resample(audio, sample_rate)
        total = self.n_frames(audio.size)
        W, H = self.window_frames, self.hop_frames
        n_windows = 1 if total <= W else 1 + math.ceil((total - W) / H)
        starts = [k * H for k in range(n_windows)]
        hidden = self.encode_windows([audio[s * SAMPLES_PER_FRAME:(s + W) * SAMPLES_PER_FRAME] for s in starts])
        acc = torch.zeros(starts[-1] + W, hidden.shape[-1], dtype=torch.float64, device=hidden.device)
        norm = torch.zeros(starts[-1] + W, 1, dtype=torch.float64, device=hidden.device)
        for k, s in enumerate(starts):
            w = window_weights(W, k == 0, k == n_windows - 1).to(hidden.device)[:, None]
            acc[s:s + W] += w * hidden[k].double()
            norm[s:s + W] += w
        return (acc[:total] / norm[:total]).float()


# ---- alignment to video frames -------------------------------------------------------------------

def random_whisper(d_model: int = 32, layers: int = 1, heads: int = 2, window_frames: int = 100, seed: int = 0,
                   vocab_size: int = 51865):
    """A Whisper model with random (seeded) weights: the real architecture and feature extractor,
    for tests and for the offline demo checkpoint, where no pretrained Whisper can be downloaded.
    Its features are a fixed random function of the log-mel spectrogram (they still carry loudness
    and spectral shape); use a real ``openai/whisper-*`` model for real speech features.
    ``window_frames``: encoder positions per window (1500 = Whisper's 30 s; 100 = 2 s windows).
    ``vocab_size`` only sizes the (unused) decoder: make it small to save a small file."""
    import transformers

    torch.manual_seed(seed)
    special = {} if vocab_size > 50257 else {k: vocab_size - 1 for k in (
        "pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")}
    return transformers.WhisperModel(transformers.WhisperConfig(
        **special, d_model=d_model, encoder_layers=layers, decoder_layers=1, encoder_attention_heads=heads,
        decoder_attention_heads=heads, encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model,
        max_source_positions=window_frames, num_mel_bins=80, vocab_size=vocab_size))


def n_frames_for(audio_seconds: float, fps: float) -> int:
    """Number of video frames for ``audio_seconds`` of audio at ``fps``: round(seconds · fps)."""
    return int(round(audio_seconds * fps))


def align_to_frames(features: torch.Tensor, n_frames: int, fps: float, k: int = 2, *,
                    feature_hz: float = WHISPER_HZ, flatten: bool = False) -> torch.Tensor:
    """50 Hz features (..., T, D) → (..., n_frames, k, D) (or (..., n_frames, k·D) with ``flatten``):
    video frame t gets the features linearly interpolated at the k times (t + (i + 0.5) / k) / fps,
    i < k (see the module docstring; at 25 fps and k = 2 exactly Whisper frames 2t and 2t + 1).
    Times past either end take the first / last feature."""
    if not isinstance(features, torch.Tensor):
        features = torch.as_tensor(np.asarray(features))
    if features.ndim < 2 or features.shape[-2] == 0:
        raise ValueError(f"features must be (..., T, D) with T > 0, got shape {tuple(features.shape)}")
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if int(n_frames) != n_frames or n_frames < 0 or int(k) != k or k < 1:
        raise ValueError(f"n_frames must be an integer >= 0 and k >= 1, got {n_frames}, {k}")
    n_frames, k = int(n_frames), int(k)
    T = features.shape[-2]
    t = torch.arange(n_frames, dtype=torch.float64)[:, None] + (torch.arange(k, dtype=torch.float64) + 0.5) / k
    u = (t * (feature_hz / fps) - 0.5).clamp(0, T - 1).reshape(-1)     # position in feature frames
    lo = u.floor().long().clamp(max=T - 1)
    hi = (lo + 1).clamp(max=T - 1)
    frac = (u - lo).to(features.device)
    lo, hi = lo.to(features.device), hi.to(features.device)
    a, b = features.index_select(-2, lo), features.index_select(-2, hi)
    frac = frac.to(features.dtype if features.is_floating_point() else torch.float32)[:, None]
    out = a + (b - a) * frac
    out = torch.where(frac == 0, a, out)           # exact copies where a sample time hits a frame centre
    out = out.reshape(*features.shape[:-2], n_frames, k, features.shape[-1])
    return out.flatten(-2) if flatten else out
