"""Whisper's log-mel spectrogram in numpy (80 or 128 Slaney mel bins, 25 ms Hann window, 10 ms hop at 16 kHz).

The published recipe: centred STFT (reflect padding), power spectrum, Slaney-normalised mel filters from 0 to 8 kHz,
log10 with a 1e-10 floor, the last frame dropped, values clipped at (max - 8), then (x + 4) / 4.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..types import SAMPLE_RATE

N_FFT = 400
HOP = 160


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    mel = 3.0 * f / 200.0
    log_part = 15.0 + 27.0 * np.log(np.maximum(f, 1e-10) / 1000.0) / np.log(6.4)
    return np.where(f >= 1000.0, log_part, mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp(np.log(6.4) * (m - 15.0) / 27.0), 200.0 * m / 3.0)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = 80, n_fft: int = N_FFT, sr: int = SAMPLE_RATE) -> np.ndarray:
    """[n_fft // 2 + 1, n_mels] triangular filters with Slaney area normalisation."""
    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2)
    hz_pts = _mel_to_hz(mel_pts)
    diff = np.diff(hz_pts)
    slopes = hz_pts[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    fb *= 2.0 / (hz_pts[2:] - hz_pts[:-2])
    return fb


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float64)  # periodic Hann


def log_mel(samples: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """[n_mels, len(samples) // 160] float32 log-mel of 16 kHz mono samples (no padding to 30 s)."""
    x = np.asarray(samples, np.float64)
    pad = N_FFT // 2
    x = np.pad(x, pad, mode="reflect") if len(x) > pad else np.pad(x, pad, mode="constant")
    n_frames = 1 + (len(x) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * _window(), axis=1)) ** 2  # [frames, bins]
    mel = spec @ mel_filters(n_mels)
    logm = np.log10(np.maximum(mel, 1e-10)).T[:, :-1]
    logm = np.maximum(logm, logm.max() - 8.0)
    return ((logm + 4.0) / 4.0).astype(np.float32)
