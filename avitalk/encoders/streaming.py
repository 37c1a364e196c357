"""Streaming encoding: audio arrives in chunks of any size; each call returns the features of the last few seconds.

Whisper attends over its whole input in both directions, so a frame's features depend on the audio after it and on
where the frame sits in the window: features computed on a growing buffer would change with the buffer and cost more
every second. Here every call encodes the most recent ``context_s`` seconds as one clip, exactly as the offline path
encodes a clip that ends now (same log-mel, same unpadded forward): the cost of a call depends on ``context_s`` only,
however long the stream has run, and what the face decoder reads near the end of the window is what it reads at the
end of any clip in training.

The one clip-level quantity is the relative loudness channel of ``whisper_layers`` (prosody channel 0): offline it is
the log energy relative to the clip's loud level (the 95th percentile of its frames). A stream cannot see its future,
so here the loud level is the 95th percentile of the last ``level_s`` seconds heard, and never below ``level_floor``
(a log RMS; while only silence has arrived, silence must not count as loud).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..errors import AudioError
from ..types import FEATURES_PER_FRAME, LISTEN_WINDOW_S, MOTION_FPS, SAMPLE_RATE, Audio
from .base import AudioEncoder, to_motion_rate
from .prosody import frame_log_energy, loud_level

FRAME_SAMPLES = int(SAMPLE_RATE / MOTION_FPS)  # 640: one motion frame of audio
FEATURE_SAMPLES = FRAME_SAMPLES // FEATURES_PER_FRAME  # 320: one encoder frame
LEVEL_FLOOR = float(np.log(0.01))  # -40 dB re full scale: a loud level below this is taken as this


class StreamingEncoder:
    """Push 16 kHz mono samples with :meth:`push`; :meth:`encode` returns ``(first, features)``: the features at the
    motion frame rate [n, dim] of motion frames ``first .. first + n - 1`` (absolute, counted from the stream's first
    sample), the window ending at the last whole motion frame received."""

    def __init__(self, encoder: AudioEncoder, context_s: float = 2.0, level_s: float = LISTEN_WINDOW_S,
                 level_floor: float = LEVEL_FLOOR):
        if context_s * MOTION_FPS < 2:
            raise ValueError(f"context_s must hold at least two motion frames, got {context_s}")
        self.encoder = encoder
        self.context = int(round(context_s * MOTION_FPS)) * FRAME_SAMPLES  # samples, whole motion frames
        self.level_floor = float(level_floor)
        self._relative = bool(getattr(encoder, "prosody", False)) and getattr(encoder, "prosody_dim", 0) > 0
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0  # absolute sample index of _buf[0]
        self._energy: deque[float] = deque(maxlen=max(1, int(level_s * SAMPLE_RATE / FEATURE_SAMPLES)))
        self._energy_upto = 0  # absolute encoder frames whose energy is in _energy
        self.samples_in = 0

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    @property
    def frames_ready(self) -> int:
        """Whole motion frames of audio received so far."""
        return self.samples_in // FRAME_SAMPLES

    @property
    def level(self) -> float:
        """The loud level in force (log RMS): the 95th percentile of the last ``level_s`` heard, floored."""
        if not self._energy:
            return self.level_floor
        return max(loud_level(np.fromiter(self._energy, np.float64)), self.level_floor)

    def push(self, samples: np.ndarray) -> None:
        x = np.asarray(samples, np.float32).reshape(-1)
        if not np.isfinite(x).all():
            raise AudioError("audio chunk has NaN or infinite samples")
        self._buf = np.concatenate([self._buf, x])
        self.samples_in += len(x)
        # the energy of every whole encoder frame, once
        done = self.samples_in // FEATURE_SAMPLES
        if done > self._energy_upto:
            a = self._energy_upto * FEATURE_SAMPLES - self._buf_start
            self._energy.extend(frame_log_energy(self._buf[a : a + (done - self._energy_upto) * FEATURE_SAMPLES]))
            self._energy_upto = done
        # keep the context (whole motion frames) and whatever encoder frame is still incomplete
        keep_from = max(0, (self.frames_ready * FRAME_SAMPLES - self.context))
        keep_from = min(keep_from, self._energy_upto * FEATURE_SAMPLES)
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start :]
            self._buf_start = keep_from

    def encode(self) -> tuple[int, np.ndarray]:
        """(first motion frame, features [n, dim] at the motion frame rate) of the last ``context_s`` seconds; the
        window ends at the last whole motion frame received (needs at least one)."""
        n = self.frames_ready
        if n < 1:
            raise AudioError("no whole motion frame of audio yet (40 ms)")
        end = n * FRAME_SAMPLES
        start = max(0, end - self.context)
        clip = Audio(np.ascontiguousarray(self._buf[start - self._buf_start : end - self._buf_start]))
        if self._relative:
            feats = self.encoder.encode_batch([clip], levels=[self.level])[0]
        else:
            feats = self.encoder.encode(clip)
        frames = (end - start) // FRAME_SAMPLES
        return start // FRAME_SAMPLES, to_motion_rate(feats, frames)
