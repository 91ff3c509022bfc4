"""bench/_speech_probe.py (bench_speech.py --probe): the pairs, the metric, the lag search and the
linear probe, on synthetic clips whose answers are known."""
import sys

import numpy as np
import pytest

from helpers import REPO

sys.path.insert(0, str(REPO / "bench"))
from _speech_probe import LinearSpeechProbe, _rows, constant_error, loudness_correlation  # noqa: E402


def clip(T=120, seed=0, gain=1.0, noise=0.05):
    """12-D audio features spanned by 3 sources (+ noise), the first mouth PC driven by source 0."""
    rng = np.random.default_rng(seed)
    sources = rng.normal(size=(T, 3))
    audio = sources @ np.random.default_rng(99).normal(size=(3, 12)) + 0.05 * rng.normal(size=(T, 12))
    pc = np.zeros((T, 8))
    pc[:, 0] = gain * sources[:, 0]
    pc += noise * rng.normal(size=pc.shape)
    return {"name": f"clip{seed}", "pc": pc, "audio": audio, "log_rms": audio[:, 0].copy()}


def test_rows_pairs_and_scoring_sources():
    c = clip(T=10)
    s, t, y = _rows(c, 0.0, 0.5, pairs=True)            # frames 0..4: all s < t
    assert len(s) == 10 and (s < t).all() and t.max() == 4
    np.testing.assert_allclose(y, c["pc"][t] - c["pc"][s])
    s, t, _ = _rows(c, 0.5, 1.0, pairs=False)           # scored from the segment's first frame
    assert set(s) == {5} and list(t) == [6, 7, 8, 9]


def test_constant_error_is_the_mean_abs_pc_change_from_the_first_frame():
    c = {"pc": np.zeros((5, 8))}
    c["pc"][1:, 0] = [1.0, 2.0, 3.0, 4.0]
    total, n = constant_error([c], (0.0, 1.0))
    assert n == 4 and total == pytest.approx((1 + 2 + 3 + 4) / 8)


def test_loudness_correlation_finds_the_planted_lag_and_sign():
    rng = np.random.default_rng(1)
    loud = rng.normal(size=200)
    pc = np.zeros((200, 8))
    pc[:-3, 0] = -loud[3:]                              # the mouth leads the sound by 3 frames
    pc[:, 1:] = rng.normal(size=(200, 7))
    r, lag = loudness_correlation({"pc": pc, "log_rms": loud})[0]
    assert lag == 3 and r < -0.95


def test_linear_probe_learns_a_planted_audio_map_and_beats_the_constant():
    clips = [clip(seed=0), clip(seed=1)]
    probe = LinearSpeechProbe(alpha=1.0, use_audio=True).fit(clips, (0.0, 0.75))
    err, n = probe.error(clips, (0.75, 1.0))
    const, _ = constant_error(clips, (0.75, 1.0))
    assert err / n < 0.25 * const / n
    blind = LinearSpeechProbe(alpha=1.0, use_audio=False).fit(clips, (0.0, 0.75))
    assert blind.error(clips, (0.75, 1.0))[0] > 2 * err        # without the audio it cannot
