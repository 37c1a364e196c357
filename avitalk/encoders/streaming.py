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

    def __init__(self, encoder: AudioEncoder, context_s: float, level_s: float = LISTEN_WINDOW_S,
                 level_floor: float = LEVEL_FLOOR):
        if context_s * MOTION_FPS < 2:
            raise ValueError(f"context_s must hold at least two motion frames, got {context_s}")
        self.encoder = encoder
        self.context = int(round(context_s * MOTION_FPS)) * FRAME_SAMPLES  # samples, whole motion frames
        self.level_floor = float(level_floor)
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
        clip = np.ascontiguousarray(self._buf[start - self._buf_start : end - self._buf_start])
        return start // FRAME_SAMPLES, _window_features(self.encoder, [clip], [self.level])[0]


def _window_features(encoder: AudioEncoder, clips: list[np.ndarray], levels: list[float]) -> list[np.ndarray]:
    """Features at the motion frame rate of windows of whole motion frames, each encoded as one clip (with the given
    loud levels when the encoder has a relative loudness channel)."""
    auds = [Audio(c) for c in clips]
    if bool(getattr(encoder, "prosody", False)) and getattr(encoder, "prosody_dim", 0) > 0:
        feats = encoder.encode_batch(auds, levels=levels)
    else:
        feats = encoder.encode_batch(auds)
    return [to_motion_rate(f, len(c) // FRAME_SAMPLES) for f, c in zip(feats, clips)]


def stream_windows(encoder: AudioEncoder, samples: list[np.ndarray], ends: list[int], context_s: float,
                   level_s: float = LISTEN_WINDOW_S, level_floor: float = LEVEL_FLOOR) -> list[tuple[int, np.ndarray]]:
    """What :meth:`StreamingEncoder.encode` returns once a stream has received ``samples[i]`` up to motion frame
    ``ends[i]`` (exclusive), for many streams in one batch: ``(first frame, features [n, dim])`` each. Training copies
    of the stream's windows (``stage2.train.stream``): the features a live decoder reads, edge and all."""
    ctx = int(round(context_s * MOTION_FPS)) * FRAME_SAMPLES
    keep = max(1, int(level_s * SAMPLE_RATE / FEATURE_SAMPLES))
    clips, levels, firsts = [], [], []
    for x, e in zip(samples, ends):
        end = int(e) * FRAME_SAMPLES
        if e < 1 or end > len(x):
            raise AudioError(f"a stream window must end within the audio (frame 1..{len(x) // FRAME_SAMPLES}), got {e}")
        start = max(0, end - ctx)
        energy = frame_log_energy(np.asarray(x[:end], np.float32))[-keep:]
        levels.append(max(loud_level(energy.astype(np.float64)), level_floor) if len(energy) else level_floor)
        clips.append(np.ascontiguousarray(x[start:end], np.float32))
        firsts.append(start // FRAME_SAMPLES)
    return list(zip(firsts, _window_features(encoder, clips, levels)))
