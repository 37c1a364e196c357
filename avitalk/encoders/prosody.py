"""Prosody features at 50 Hz: loudness, pitch, voicing and brightness, computed by signal processing (no weights).

Whisper was trained to transcribe, and what it keeps of *how* something is said is weak: on SynthTalk's unseen test
speakers a small classifier reads the emotion from pooled Whisper tiny.en features in about 70% of clips, from these
four prosody channels in about 82% (see the stage-1 notes in the README). Stage 1 reads both: the Q-Former gets the
frozen encoder's features and these channels side by side.

Channels (one row per 20 ms, the same time base as the encoder features), scaled to roughly unit range:
  0 log RMS energy of the 20 ms hop; 1 log F0 of the 40 ms window (0 where unvoiced), by normalised autocorrelation
  over 60-400 Hz; 2 voicing strength (the autocorrelation peak); 3 zero-crossing rate.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import AudioError
from ..types import SAMPLE_RATE, Audio
from .base import FEATURE_RATE, AudioEncoder

HOP = SAMPLE_RATE // FEATURE_RATE  # 320 samples
WIN = 2 * HOP  # 40 ms analysis window
F0_MIN, F0_MAX = 60.0, 400.0
VOICED = 0.4  # autocorrelation peak above which a window counts as voiced
PROSODY_CHANNELS = 4  # the columns of prosody_features: log energy, pitch, voicing, zero crossings


def loud_level(energy: np.ndarray) -> float:
    """A speaker's loud level: the 95th percentile of per-frame log energies (channel 0 before scaling)."""
    return float(np.percentile(energy, 95))


def prosody_features(samples: np.ndarray, relative_energy: bool = False, level: float | None = None) -> np.ndarray:
    """[round(len / 320), 4] float32 prosody channels of 16 kHz mono samples. ``relative_energy``: channel 0 is the
    log energy relative to the clip's loud level (:func:`loud_level` of its frames), so a recording's gain does not
    matter and a pause reads as far below 0 whatever the microphone (version 2, used by ``whisper_layers``);
    ``level``: that loud level given instead (a stream's, measured over what it has heard; implies relative)."""
    x = np.asarray(samples, np.float32)
    n = int(round(len(x) / HOP))
    if n < 1:
        raise AudioError(f"too short for prosody features ({len(x)} samples)")
    padded = np.pad(x, (HOP // 2, n * HOP + WIN - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, WIN)[::HOP][:n].astype(np.float64)
    hop_part = frames[:, HOP // 2 : HOP // 2 + HOP]
    energy = _log_rms(hop_part)
    w = frames - frames.mean(1, keepdims=True)
    spec = np.fft.rfft(w, 2 * WIN)
    ac = np.fft.irfft(np.abs(spec) ** 2)[:, :WIN]
    lo, hi = int(SAMPLE_RATE / F0_MAX), int(SAMPLE_RATE / F0_MIN)
    peak = lo + np.argmax(ac[:, lo:hi], 1)
    r = np.take_along_axis(ac, peak[:, None], 1)[:, 0] / np.maximum(ac[:, 0], 1e-9)
    r = np.where(ac[:, 0] > 1e-6, np.clip(r, 0.0, 1.0), 0.0)
    f0 = np.where(r > VOICED, np.log(SAMPLE_RATE / peak), 0.0)
    zcr = (np.abs(np.diff(np.sign(hop_part), axis=1)) > 0).mean(1)
    if level is not None:
        e = (energy - float(level)) / 2.0
    else:
        e = (energy - loud_level(energy)) / 2.0 if relative_energy else (energy + 3.0) / 2.0
    out = np.stack([e, f0 / 5.0, r, zcr * 4.0], 1)
    return np.ascontiguousarray(out, np.float32)


def _log_rms(frames: np.ndarray) -> np.ndarray:
    return np.log(np.sqrt((frames**2).mean(1)) + 1e-4)


def frame_log_energy(samples: np.ndarray) -> np.ndarray:
    """[len // 320] log RMS energy of each whole 20 ms frame (prosody channel 0 before scaling): frame k reads samples
    [320 k, 320 (k + 1)) only, so it is final as soon as they have arrived."""
    x = np.asarray(samples, np.float32)
    n = len(x) // HOP
    return _log_rms(x[: n * HOP].reshape(n, HOP).astype(np.float64))


class ProsodyEncoder(AudioEncoder):
    """The prosody channels behind the AudioEncoder interface (so they are cached like encoder features)."""

    dim = 4
    key = "prosody-v1"

    def _encode_mel(self, mels):  # pragma: no cover - not mel based
        raise NotImplementedError

    def encode_batch(self, audios: Sequence[Audio]) -> list[np.ndarray]:
        out = []
        for a in audios:
            if a.sample_rate != SAMPLE_RATE:
                raise AudioError(f"{a.source or 'audio'}: expected {SAMPLE_RATE} Hz, got {a.sample_rate}")
            f = prosody_features(a.samples)
            out.append(f[: int(round(a.duration * FEATURE_RATE))])
        return out
