"""Recording-condition augmentation for training on voices: what real recordings do to speech that espeak-ng and a
studio never do. Each call draws a random chain (deterministic for a generator):

- gain: -18 .. +6 dB (clipped to [-1, 1] like a hot microphone);
- room reverberation (p 0.5): a synthetic impulse response (exponentially decaying noise, RT60 0.15-0.7 s, with the
  direct path), mixed wet;
- background noise (p 0.6): white, pink or brown noise, or babble (other clips mixed) when a bank is given, at an SNR
  of 5-30 dB, over the whole clip (pauses included, as in a real room);
- band limits (p 0.3): telephone band (300-3400 Hz) or a low-pass at 3-6 kHz;
- codec (p 0.2): 8 kHz mu-law (8-bit) telephone coding and back.

The output has the input's length and sample rate (16 kHz) and is finite.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .types import SAMPLE_RATE


def _db(x: float) -> float:
    return float(10 ** (x / 20))


def _colored_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    w = rng.standard_normal(n)
    if kind == "white":
        return w
    spec = np.fft.rfft(w)
    f = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0)
    spec = spec / (np.sqrt(f) if kind == "pink" else f)
    return np.fft.irfft(spec, n)


def room_impulse(rng: np.random.Generator, rt60: float | None = None) -> np.ndarray:
    rt60 = float(rng.uniform(0.15, 0.7)) if rt60 is None else rt60
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    h = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    h[: int(0.002 * SAMPLE_RATE)] = 0.0  # the first reflections arrive after the direct path
    h *= 0.5 / (np.sqrt((h**2).sum()) + 1e-9)
    h[0] = 1.0
    return h


def _band(x: np.ndarray, lo: float | None, hi: float) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    if lo is None:
        sos = butter(6, hi, btype="low", fs=SAMPLE_RATE, output="sos")
    else:
        sos = butter(4, [lo, hi], btype="band", fs=SAMPLE_RATE, output="sos")
    return sosfiltfilt(sos, x)


def _mulaw(x: np.ndarray) -> np.ndarray:
    import soxr

    y = soxr.resample(x.astype(np.float32), SAMPLE_RATE, 8000)
    mu = 255.0
    c = np.sign(y) * np.log1p(mu * np.minimum(np.abs(y), 1.0)) / np.log1p(mu)
    c = np.round((c + 1) * 127.5) / 127.5 - 1  # 8 bits
    y = np.sign(c) * ((1 + mu) ** np.abs(c) - 1) / mu
    z = soxr.resample(y.astype(np.float32), 8000, SAMPLE_RATE)
    return np.pad(z, (0, max(0, len(x) - len(z))))[: len(x)]


def augment(samples: np.ndarray, rng: np.random.Generator, babble: Sequence[np.ndarray] = ()) -> np.ndarray:
    """One random recording-condition chain applied to 16 kHz mono samples (see the module docstring)."""
    x = np.asarray(samples, np.float64).copy()
    n = len(x)
    if rng.random() < 0.5:
        from scipy.signal import fftconvolve

        x = fftconvolve(x, room_impulse(rng))[:n]
    if rng.random() < 0.6:
        kinds = ["white", "pink", "brown"] + (["babble"] if len(babble) else [])
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "babble":
            noise = np.zeros(n)
            for _ in range(int(rng.integers(2, 5))):
                b = np.asarray(babble[int(rng.integers(len(babble)))], np.float64)
                b = np.tile(b, int(np.ceil(n / max(1, len(b)))) + 1)
                s = int(rng.integers(0, max(1, len(b) - n)))
                noise += b[s : s + n]
        else:
            noise = _colored_noise(n, kind, rng)
        p_sig = np.mean(x**2) + 1e-12
        p_noise = np.mean(noise**2) + 1e-12
        snr = float(rng.uniform(5, 30))
        x = x + noise * np.sqrt(p_sig / p_noise / 10 ** (snr / 10))
    r = rng.random()
    if r < 0.15:
        x = _band(x, 300.0, 3400.0)
    elif r < 0.3:
        x = _band(x, None, float(rng.uniform(3000, 6000)))
    peak = np.abs(x).max() + 1e-9
    x = x / peak * float(rng.uniform(0.05, 0.99))  # level before gain: recordings are rarely normalised
    x = np.clip(x * _db(float(rng.uniform(-18, 6))), -1.0, 1.0)
    if rng.random() < 0.2:
        x = _mulaw(x)
    x = np.nan_to_num(x)
    if np.abs(x).max() < 1e-4:  # never return silence: the encoders refuse it
        x = x / (np.abs(x).max() + 1e-12) * 1e-2
    return x.astype(np.float32)
