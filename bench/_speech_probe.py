"""What the speech data can teach at all: the diagnostics of ``bench_speech.py --probe``.

E_aud has to learn a map from Whisper features to the mouth part of E_motion's z. Before blaming
the network, this asks the data, with models too simple to overfit:

* **loudness vs mouth**: per clip, the correlation of each mouth principal component PC_k(z_t)
  with the frame's log RMS at the best lag in ±4 frames (speech leads or lags the lips by a few
  frames). If the sign differs between speakers, a map learned on one cannot transfer to the other.
* **a linear E_aud**: ridge regression of PC(z_t) − PC(z_s) (z_s: the window's first frame, as
  E_aud's z_0) on [PC(z_s), the frame's Whisper features (standardised per clip, reduced to 8
  dimensions by a PCA fitted on the training frames)], trained on every (s, t) pair of the
  training frames, its strength chosen on the validation part exactly like E_aud's learning rate,
  and scored on the same held-out sets with the same metric as E_aud; also without the audio
  (only PC(z_s): how far mean reversion alone goes).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

ALPHAS = tuple(10.0 ** e for e in range(7))        # 1 … 1e6
N_PC = 8


@torch.inference_mode()
def clip_arrays(main_dir: Path, whisper: str, data: Path, pca_path: Path) -> list[dict]:
    """Per clip of ``data``: mouth PCs of E_motion's z (T, 8), Whisper features (T, k·D), log RMS (T,)."""
    from emoportraits import EmoPortraits
    from emoportraits.audio import WhisperFeatures
    from emoportraits.data.speech import SpeechClipDataset
    from emoportraits.losses import MouthPCA

    model = EmoPortraits.from_pretrained(main_dir).eval()
    pca = MouthPCA.load(pca_path)
    clips = SpeechClipDataset(data, WhisperFeatures(whisper), clip_frames=(10_000, 10_000),
                              resolution=model.config.image_size)
    out = []
    for i in range(len(clips)):
        item = clips[i]
        z = model.expression(item["images"], item["thetas"])
        header = clips.shards.header(item["clip"])
        samples = clips.read_audio(item["clip"])
        hop = float(header.get("audio_sample_rate", 16000)) / float(item["fps"])
        rms = [np.sqrt(np.mean(samples[int(f * hop):int((f + 1) * hop)] ** 2) + 1e-10)
               for f in item["frame_indices"].tolist()]
        out.append({"name": header.get("video", str(item["clip"])),
                    "pc": pca.project(z)[:, :N_PC].double().numpy(),
                    "audio": item["audio"].flatten(1).double().numpy(),
                    "log_rms": np.log(np.asarray(rms))})
    return out


def loudness_correlation(clip: dict, max_lag: int = 4) -> list[tuple[float, int]]:
    """(correlation, lag) of PC_k(z_t) with log RMS(t + lag), at the lag of largest |correlation|."""
    pc, loud = clip["pc"], clip["log_rms"]
    best = []
    for k in range(pc.shape[1]):
        cands = []
        for lag in range(-max_lag, max_lag + 1):
            a, b = (pc[:len(pc) - lag, k], loud[lag:]) if lag >= 0 else (pc[-lag:, k], loud[:lag])
            cands.append((float(np.corrcoef(a, b)[0, 1]), lag))
        best.append(max(cands, key=lambda c: abs(c[0])))
    return best


def _rows(clip: dict, lo: float, hi: float, pairs: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(PC(z_s), frame index t, target PC(z_t) − PC(z_s)) of the segment [lo·T, hi·T): all pairs
    s < t (training) or only s = the segment's first frame (scoring, as the E_aud benchmark)."""
    T = len(clip["pc"])
    first, end = int(round(lo * T)), int(round(hi * T))
    sources = range(first, end - 1) if pairs else [first]
    s = np.array([a for a in sources for _ in range(a + 1, end)])
    t = np.array([b for a in sources for b in range(a + 1, end)])
    return s, t, clip["pc"][t] - clip["pc"][s]


def _standardised(audio: np.ndarray) -> np.ndarray:
    """Per clip, zero mean and unit variance per feature: a speaker / channel normalisation."""
    return (audio - audio.mean(0)) / (audio.std(0) + 1e-6)


class LinearSpeechProbe:
    """Ridge from [PC(z_s), reduced audio of frame t] to PC(z_t) − PC(z_s)."""

    def __init__(self, alpha: float, use_audio: bool):
        self.alpha, self.use_audio = alpha, use_audio

    def features(self, clip: dict, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        parts = [clip["pc"][s]]
        if self.use_audio:
            parts.append(self.reduce.transform(_standardised(clip["audio"])[t]))
        return np.concatenate(parts, 1)

    def fit(self, clips: list[dict], segment: tuple[float, float]) -> "LinearSpeechProbe":
        from sklearn.decomposition import PCA
        from sklearn.linear_model import Ridge

        if self.use_audio:
            frames = []
            for c in clips:
                a = _standardised(c["audio"])
                T = len(a)
                frames.append(a[int(round(segment[0] * T)):int(round(segment[1] * T))])
            frames = np.concatenate(frames)
            self.reduce = PCA(min(N_PC, frames.shape[1]), random_state=0).fit(frames)
        X, Y = [], []
        for c in clips:
            s, t, y = _rows(c, *segment, pairs=True)
            X.append(self.features(c, s, t))
            Y.append(y)
        self.ridge = Ridge(alpha=self.alpha).fit(np.concatenate(X), np.concatenate(Y))
        return self

    def error(self, clips: list[dict], segment: tuple[float, float]) -> tuple[float, int]:
        """(sum over frames of mean_k |ΔPC_k|, frames) — the E_aud benchmark's metric."""
        total, n = 0.0, 0
        for c in clips:
            s, t, y = _rows(c, *segment, pairs=False)
            total += float(np.abs(y - self.ridge.predict(self.features(c, s, t))).mean(1).sum())
            n += len(t)
        return total, n


def constant_error(clips: list[dict], segment: tuple[float, float]) -> tuple[float, int]:
    total, n = 0.0, 0
    for c in clips:
        _, t, y = _rows(c, *segment, pairs=False)
        total += float(np.abs(y).mean(1).sum())
        n += len(t)
    return total, n


def report(train: list[dict], heldout: list[dict]) -> None:
    """Print the loudness correlations and the linear probes' held-out table."""
    print("\nloudness vs mouth: correlation of PC_k(z_t) with log RMS(t + lag), best lag in ±4 frames")
    for c in train + heldout:
        cells = "  ".join(f"PC{k + 1} {r:+.2f}@{lag:+d}" for k, (r, lag) in enumerate(loudness_correlation(c)[:4]))
        print(f"  {c['name']:<44}{cells}")
    sets = {"held-out ends of the training clips": (train, (0.75, 1.0))}
    if heldout:
        sets["held-out clips"] = (heldout, (0.0, 1.0))
    print("\nlinear probes (ridge; strength chosen on [0.6, 0.75) after fitting on [0, 0.6), then refit on [0, 0.75))")
    const, n = constant_error(train, (0.6, 0.75))
    print(f"  constant z_0: validation {const / n:.4f}")
    chosen = {}
    for use_audio in (False, True):
        val = {a: LinearSpeechProbe(a, use_audio).fit(train, (0.0, 0.6)).error(train, (0.6, 0.75)) for a in ALPHAS}
        alpha = min(val, key=lambda a: val[a][0] / val[a][1])
        chosen[use_audio] = LinearSpeechProbe(alpha, use_audio).fit(train, (0.0, 0.75))
        print(f"  {'PC(z_0) + audio' if use_audio else 'PC(z_0) only'}: alpha {alpha:g} "
              f"(validation {val[alpha][0] / val[alpha][1]:.4f})")
    print(f"{'held-out set':<52}{'frames':>8}{'constant z_0':>14}{'ridge z_0':>11}{'ridge z_0+audio':>17}")
    pooled = np.zeros(4)
    for name, (clips, segment) in sets.items():
        for clip in clips:                            # one row per clip: the sets are a few dozen frames
            const, n = constant_error([clip], segment)
            no_audio, _ = chosen[False].error([clip], segment)
            audio, _ = chosen[True].error([clip], segment)
            pooled += (const, no_audio, audio, n)
            label = f"{name.replace('held-out ', '')}: {clip['name'][:3]}"
            print(f"{label:<52}{n:>8}{const / n:>14.4f}{no_audio / n:>11.4f}{audio / n:>17.4f}")
    print(f"{'pooled':<52}{int(pooled[3]):>8}{pooled[0] / pooled[3]:>14.4f}{pooled[1] / pooled[3]:>11.4f}"
          f"{pooled[2] / pooled[3]:>17.4f}")
