"""The frozen audio encoder interface: Audio -> features [T, D] at 50 Hz.

One padding policy everywhere (training and inference): the log-mel of a clip is encoded unpadded; audio longer
than one 30 s Whisper window is cut into overlapping 30 s windows whose features are cross-faded back together.
"""

from __future__ import annotations

import abc
import logging
from typing import Sequence

import numpy as np

from ..audio import chunk_spans, stitch
from ..errors import AudioError
from ..types import FEATURE_RATE, FEATURES_PER_FRAME, LISTEN_WINDOW_S, SAMPLE_RATE, Audio

log = logging.getLogger(__name__)

WINDOW_S = LISTEN_WINDOW_S
OVERLAP_S = 2.0
HOP = 160  # log-mel hop at 16 kHz (10 ms)


class AudioEncoder(abc.ABC):
    """Frozen speech encoder. ``key`` names the encoder and its settings (the feature-cache key)."""

    dim: int
    key: str

    @abc.abstractmethod
    def _encode_mel(self, mels: list[np.ndarray]) -> list[np.ndarray]:
        """Encode log-mel arrays [80, N] (each N <= 3000, even) into features [N // 2, dim]."""

    n_mels = 80

    def parts(self) -> list["AudioEncoder"]:
        """Encoders whose features, joined by :meth:`join`, are this one's, each cached under its own key (see
        :meth:`.whisper_layers.WhisperLayersEncoder.parts`); [] for an encoder in one piece."""
        return []

    def log_mel(self, samples: np.ndarray) -> np.ndarray:
        """Whisper's log-mel [n_mels, N] of the unpadded clip, N cut to an even count (the encoder halves it)."""
        from ..lean.mel import log_mel

        mel = log_mel(samples, self.n_mels)
        n = mel.shape[1] - mel.shape[1] % 2
        return np.ascontiguousarray(mel[:, : max(n, 2)], np.float32)

    def encode(self, audio: Audio) -> np.ndarray:
        return self.encode_batch([audio])[0]

    def encode_batch(self, audios: Sequence[Audio]) -> list[np.ndarray]:
        """Features [round(duration * 50), dim] per audio (float32)."""
        mels, owners, spans_of = [], [], []
        win = int(WINDOW_S * SAMPLE_RATE)
        for i, a in enumerate(audios):
            if a.sample_rate != SAMPLE_RATE:
                raise AudioError(f"{a.source or 'audio'}: expected {SAMPLE_RATE} Hz, got {a.sample_rate}")
            if a.num_samples < 2 * HOP:
                raise AudioError(f"{a.source or 'audio'}: too short to encode ({a.duration * 1000:.0f} ms)")
            spans = chunk_spans(a.num_samples, win, int(OVERLAP_S * SAMPLE_RATE))
            spans_of.append(spans)
            for s, e in spans:
                mels.append(self.log_mel(a.samples[s:e]))
                owners.append(i)
        feats = self._encode_mel(mels)
        out = []
        k = 0
        for i, a in enumerate(audios):
            spans = spans_of[i]
            parts = feats[k : k + len(spans)]
            k += len(spans)
            total = int(round(a.duration * FEATURE_RATE))
            if len(parts) == 1:
                f = parts[0]
            else:
                fspans = [(int(round(s / SAMPLE_RATE * FEATURE_RATE)), 0) for s, _ in spans]
                fspans = [(s, s + len(p)) for (s, _), p in zip(fspans, parts)]
                n = max(e for _, e in fspans)
                f = stitch(parts, fspans, n)
            out.append(fit_length(f, total))
        return out


def encode_grouped(mels: list[np.ndarray], run, batch_size: int = 8) -> list[np.ndarray]:
    """Call ``run`` on stacks [B, 80, N] of equal-length log-mels (at most ``batch_size`` at a time; a clip is usually
    one window) and return its per-item outputs in the input order."""
    by_len: dict[int, list[int]] = {}
    for i, m in enumerate(mels):
        by_len.setdefault(m.shape[1], []).append(i)
    out: dict[int, np.ndarray] = {}
    for idx in by_len.values():
        for s in range(0, len(idx), batch_size):
            chunk = idx[s : s + batch_size]
            y = run(np.ascontiguousarray(np.stack([mels[i] for i in chunk]), np.float32))
            for j, i in enumerate(chunk):
                out[i] = np.asarray(y[j], np.float32)
    return [out[i] for i in range(len(mels))]


def fit_length(f: np.ndarray, n: int) -> np.ndarray:
    """Trim or edge-pad features to exactly ``n`` rows."""
    if len(f) >= n:
        return np.ascontiguousarray(f[:n], np.float32)
    return np.ascontiguousarray(np.concatenate([f, np.repeat(f[-1:], n - len(f), 0)]), np.float32)


def to_motion_rate(features: np.ndarray, num_frames: int) -> np.ndarray:
    """50 Hz features [N, D] -> 25 fps [num_frames, D] by averaging each pair (edge-padded to fit)."""
    f = fit_length(features, FEATURES_PER_FRAME * num_frames)
    return f.reshape(num_frames, FEATURES_PER_FRAME, -1).mean(1)


