"""Is a corpus learnable? Two checks run before any model depends on it.

1. Emotion from simple audio statistics: pitch (autocorrelation), energy, voicing, spectral centroid, speaking
   rate and envelope modulation; a softmax-regression classifier trained on the train speakers and scored on the
   test speakers (unseen voices). Chance is 1/8.
2. Mouth follows sound: Pearson correlation between the jaw opening and the audio loudness envelope, per clip.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..types import SAMPLE_RATE

from ..vocab import EMOTIONS
from .manifest import Clip, read_manifest

FRAME, HOP = 640, 160  # 40 ms frames, 10 ms hop at 16 kHz


def _frames(x: np.ndarray) -> np.ndarray:
    n = 1 + max(0, (len(x) - FRAME) // HOP)
    idx = np.arange(FRAME)[None, :] + HOP * np.arange(n)[:, None]
    return np.pad(x, (0, FRAME))[idx]


def pitch_track(x: np.ndarray, sr: int = SAMPLE_RATE, fmin: float = 60, fmax: float = 400) -> tuple[np.ndarray, np.ndarray]:
    """F0 in Hz per 10 ms frame (0 where unvoiced) and the voicing strength, by normalised autocorrelation."""
    f = _frames(x) * np.hanning(FRAME)
    spec = np.fft.rfft(f, n=2 * FRAME)
    acf = np.fft.irfft(np.abs(spec) ** 2)[:, :FRAME]
    lo, hi = int(sr / fmax), int(sr / fmin)
    seg = acf[:, lo:hi] / np.maximum(acf[:, :1], 1e-12)
    lag = lo + np.argmax(seg, axis=1)
    strength = seg.max(axis=1)
    energy = np.sqrt((f**2).mean(1))
    voiced = (strength > 0.45) & (energy > 0.02 * energy.max())
    return np.where(voiced, sr / lag, 0.0), strength


def audio_features(x: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    f0, strength = pitch_track(x, sr)
    fr = _frames(x)
    rms = np.sqrt((fr**2).mean(1)) + 1e-8
    db = 20 * np.log10(rms)
    mag = np.abs(np.fft.rfft(fr * np.hanning(FRAME), axis=1))
    freqs = np.fft.rfftfreq(FRAME, 1 / sr)
    centroid = (mag * freqs).sum(1) / np.maximum(mag.sum(1), 1e-9)
    voiced = f0 > 0
    semis = 12 * np.log2(f0[voiced] / 100.0) if voiced.any() else np.zeros(1)
    loud = db > db.max() - 35
    env = rms / rms.max()
    # modulation spectrum of the envelope (100 Hz frame rate): syllable rate and tremolo bands
    m = np.abs(np.fft.rfft(env - env.mean()))
    mf = np.fft.rfftfreq(len(env), 1 / 100.0)
    band = lambda a, b: float(m[(mf >= a) & (mf < b)].sum() / max(m[(mf >= 1) & (mf < 20)].sum(), 1e-9))  # noqa: E731
    peaks = np.sum((env[1:-1] > env[:-2]) & (env[1:-1] > env[2:]) & (env[1:-1] > 0.3)) / (len(x) / sr)
    return np.array(
        [
            semis.mean(), semis.std(), np.percentile(semis, 10), np.percentile(semis, 90),
            np.abs(np.diff(semis)).mean() if len(semis) > 1 else 0.0,
            db[loud].mean(), db[loud].std(), db.max(), voiced.mean(), strength[loud].mean(),
            centroid[loud].mean(), centroid[loud].std(), peaks, band(2, 5), band(5, 9), band(9, 15),
            len(x) / sr,
        ],
        np.float64,
    )


PROBE_L2, PROBE_STEPS, PROBE_LR = 1e-2, 3000, 0.5  # the fixed linear probe (full-batch gradient descent)


def _softmax_regression(X: np.ndarray, y: np.ndarray, k: int):
    n, d = X.shape
    W = np.zeros((d, k))
    b = np.zeros(k)
    Y = np.eye(k)[y]
    for _ in range(PROBE_STEPS):
        z = X @ W + b
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        g = (p - Y) / n
        W -= PROBE_LR * (X.T @ g + PROBE_L2 * W)
        b -= PROBE_LR * g.sum(0)
    return W, b


def emotion_from_audio(root: str | os.PathLike, clips: list[Clip] | None = None) -> dict[str, Any]:
    """Train on the train split, score on the test split (speaker-disjoint)."""
    from .. import audio as audio_io

    root = Path(root)
    clips = clips if clips is not None else read_manifest(root)
    feats = {c.id: audio_features(audio_io.load(root / c.audio).samples) for c in clips}
    tr = [c for c in clips if c.split == "train"]
    te = [c for c in clips if c.split == "test"]
    Xtr = np.stack([feats[c.id] for c in tr])
    Xte = np.stack([feats[c.id] for c in te])
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-8
    ytr = np.array([EMOTIONS.index(c.emotion) for c in tr])
    yte = np.array([EMOTIONS.index(c.emotion) for c in te])
    W, b = _softmax_regression((Xtr - mu) / sd, ytr, len(EMOTIONS))
    pred = np.argmax(((Xte - mu) / sd) @ W + b, 1)
    conf = np.zeros((len(EMOTIONS), len(EMOTIONS)), int)
    for t, p in zip(yte, pred):
        conf[t, p] += 1
    per = {e: float(conf[i, i] / max(conf[i].sum(), 1)) for i, e in enumerate(EMOTIONS)}
    return {
        "accuracy": float((pred == yte).mean()),
        "chance": 1.0 / len(EMOTIONS),
        "train_clips": len(tr),
        "test_clips": len(te),
        "test_speakers": len({c.speaker for c in te}),
        "per_emotion": per,
        "confusion": conf.tolist(),
    }


def jaw_envelope_correlation(root: str | os.PathLike, clips: list[Clip] | None = None) -> dict[str, float]:
    from .. import audio as audio_io
    from ..types import FlameSequence
    from .synthtalk import loudness_envelope

    root = Path(root)
    clips = clips if clips is not None else read_manifest(root)
    rs = []
    for c in clips:
        seq = FlameSequence.load(root / c.flame)
        a = audio_io.load(root / c.audio)
        env = loudness_envelope(a.samples, a.sample_rate, seq.num_frames, seq.fps)
        jaw = seq.jaw_pose[:, 0]
        if jaw.std() > 1e-6 and env.std() > 1e-6:
            rs.append(float(np.corrcoef(jaw, env)[0, 1]))
    r = np.array(rs)
    return {"mean_r": float(r.mean()), "median_r": float(np.median(r)), "min_r": float(r.min()), "clips": len(rs)}
