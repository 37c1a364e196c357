"""Audio loading, validation, resampling and chunking.

Everything in the pipeline sees :class:`~avitalk.types.Audio`: mono float32 in [-1, 1] at 16 kHz. Files are read
with soundfile (wav, flac, ogg, mp3) and, for containers libsndfile does not know (m4a/mp4/webm, e.g. MEAD's m4a),
with PyAV. Resampling uses soxr (high quality). Bad input raises :class:`~avitalk.errors.AudioError` naming the
file and the reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import AudioError
from .types import MOTION_FPS, SAMPLE_RATE, Audio

MIN_DURATION_S = 0.3
MAX_DURATION_S = 600.0  # 10 minutes
SILENCE_PEAK = 1e-4  # -80 dBFS: anything quieter everywhere is treated as silence


@dataclass(frozen=True)
class AudioLimits:
    min_duration_s: float = MIN_DURATION_S
    max_duration_s: float = MAX_DURATION_S
    silence_peak: float = SILENCE_PEAK


# ------------------------------------------------------------------------------------------------ decoding
def _read_soundfile(path: Path) -> tuple[np.ndarray, int] | None:
    """Decode with libsndfile; None when libsndfile does not recognise the format."""
    import soundfile as sf

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    return data, int(sr)


def _read_pyav(path: Path) -> tuple[np.ndarray, int] | None:
    """Decode the first audio stream of any container FFmpeg knows; None when there is none / not media."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError):
        return None
    with container:
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            return None
        stream = streams[0]
        sr = int(stream.codec_context.sample_rate or stream.rate or 0)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                arr = frame.to_ndarray()
                if arr.dtype.kind == "i":
                    arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
                else:
                    arr = arr.astype(np.float32)
                nch = len(frame.layout.channels)
                if frame.format.is_planar:
                    arr = arr.reshape(nch, -1).T
                else:
                    arr = arr.reshape(-1, nch)
                chunks.append(arr)
                sr = int(frame.sample_rate or sr)
        except av.error.FFmpegError:
            return None
    if not chunks or sr <= 0:
        return np.zeros((0, 1), np.float32), max(sr, 1)
    return np.concatenate(chunks, axis=0), sr


def _duration_hint(path: Path) -> float | None:
    """Cheap duration from the header (before decoding), used to refuse huge files early."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        return float(info.frames) / float(info.samplerate) if info.samplerate else None
    except Exception:
        return None


# ------------------------------------------------------------------------------------------------ public
def resample(samples: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """High-quality resampling with soxr (a no-op when the rates match). ``samples``: [N] or [N, C]."""
    if int(orig_sr) == int(target_sr):
        return np.asarray(samples, np.float32)
    import soxr

    return np.asarray(soxr.resample(np.asarray(samples, np.float32), int(orig_sr), int(target_sr), "HQ"), np.float32)


def from_array(
    samples: np.ndarray,
    sample_rate: int,
    *,
    source: str = "audio",
    limits: AudioLimits | None = None,
) -> Audio:
    """Mix to mono, resample to 16 kHz, validate and wrap samples already in memory.

    ``samples``: [N] or [N, C] (channels last), float in [-1, 1] or integer PCM.
    """
    limits = limits or AudioLimits()
    x = np.asarray(samples)
    if x.size == 0:
        raise AudioError(f"{source}: is empty (no audio samples)")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64) / float(np.iinfo(x.dtype).max)
    elif not np.issubdtype(x.dtype, np.floating):
        raise AudioError(f"{source}: expected numeric samples, got dtype {x.dtype}")
    if x.ndim == 2 and x.shape[0] < x.shape[1] and x.shape[0] <= 8:
        x = x.T  # accept [C, N] too
    if x.ndim == 2:
        x = x.astype(np.float64).mean(axis=1)
    elif x.ndim != 1:
        raise AudioError(f"{source}: expected samples [N] or [N, C], got shape {tuple(x.shape)}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{source}: contains NaN or infinite samples")
    if int(sample_rate) <= 0:
        raise AudioError(f"{source}: invalid sample rate {sample_rate}")
    duration = len(x) / float(sample_rate)
    if duration < limits.min_duration_s:
        raise AudioError(f"{source}: is {duration:.3f} s long; at least {limits.min_duration_s:g} s is needed")
    if duration > limits.max_duration_s:
        raise AudioError(
            f"{source}: is {duration:.1f} s long; the limit is {limits.max_duration_s:g} s (raise it with --max-duration, or max_duration_s in Python)"
        )
    if float(np.max(np.abs(x))) < limits.silence_peak:
        raise AudioError(f"{source}: is silent (peak below {20 * np.log10(limits.silence_peak):.0f} dBFS)")
    x = np.clip(resample(x, int(sample_rate), SAMPLE_RATE), -1.0, 1.0)
    return Audio(x, SAMPLE_RATE, source=source)


def load(
    path: str | os.PathLike,
    *,
    min_duration_s: float = MIN_DURATION_S,
    max_duration_s: float = MAX_DURATION_S,
) -> Audio:
    """Load an audio file (wav, flac, ogg, mp3; m4a/mp4/webm and other containers through PyAV) as 16 kHz mono."""
    p = Path(path)
    limits = AudioLimits(min_duration_s=min_duration_s, max_duration_s=max_duration_s)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: is empty (0 bytes)")
    hint = _duration_hint(p)
    if hint is not None and hint > max_duration_s:
        raise AudioError(f"{p}: is {hint:.1f} s long; the limit is {max_duration_s:g} s (raise it with --max-duration, or max_duration_s in Python)")
    decoded = _read_soundfile(p) or _read_pyav(p)
    if decoded is None:
        raise AudioError(f"{p}: not an audio file (no decodable audio stream)")
    data, sr = decoded
    if data.size == 0:
        raise AudioError(f"{p}: contains no audio samples")
    return from_array(data, sr, source=str(p), limits=limits)


def save_wav(path: str | os.PathLike, audio: Audio) -> Path:
    """Write 16-bit PCM wav atomically."""
    import soundfile as sf

    from .io import atomic_path

    with atomic_path(path) as tmp:
        sf.write(str(tmp), audio.samples, audio.sample_rate, subtype="PCM_16", format="WAV")
    return Path(path)


# ------------------------------------------------------------------------------------------------ chunking
def chunk_spans(total: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Cover ``[0, total)`` with windows of at most ``window`` items, consecutive windows sharing ``overlap``.

    The last window is shifted back so that it is full length whenever ``total >= window``.
    """
    if window <= 0:
        raise ValueError("window must be positive")
    if not 0 <= overlap < window:
        raise ValueError("overlap must be in [0, window)")
    if total <= window:
        return [(0, max(total, 0))]
    hop = window - overlap
    spans: list[tuple[int, int]] = []
    start = 0
    while True:
        end = start + window
        if end >= total:
            spans.append((total - window, total))
            break
        spans.append((start, end))
        start += hop
    # the shifted last window may duplicate the previous one
    out: list[tuple[int, int]] = []
    for s in spans:
        if not out or s != out[-1]:
            out.append(s)
    return out


def stitch(parts: Sequence[np.ndarray], spans: Sequence[tuple[int, int]], total: int) -> np.ndarray:
    """Blend per-item outputs of overlapping windows back into one array of length ``total``.

    In every overlap the two windows are cross-faded linearly (weights sum to one), so a quantity that agrees in
    both windows comes back unchanged and a disagreement is smoothed instead of jumping.
    """
    if len(parts) != len(spans) or not parts:
        raise ValueError("need one part per span")
    tail = parts[0].shape[1:]
    acc = np.zeros((total,) + tail, np.float64)
    wsum = np.zeros((total,), np.float64)
    for i, (part, (s, e)) in enumerate(zip(parts, spans)):
        n = e - s
        if part.shape[0] != n:
            raise ValueError(f"part {i} has {part.shape[0]} items, span {s}:{e} needs {n}")
        w = np.ones(n, np.float64)
        if i > 0:
            ov = max(0, spans[i - 1][1] - s)
            if ov:
                w[:ov] = np.minimum(w[:ov], (np.arange(ov) + 0.5) / ov)
        if i + 1 < len(spans):
            ov = max(0, e - spans[i + 1][0])
            if ov:
                w[n - ov :] = np.minimum(w[n - ov :], 1.0 - (np.arange(ov) + 0.5) / ov)
        acc[s:e] += part.astype(np.float64) * w.reshape((-1,) + (1,) * len(tail))
        wsum[s:e] += w
    if np.any(wsum <= 0):
        raise ValueError("spans do not cover every item")
    return (acc / wsum.reshape((-1,) + (1,) * len(tail))).astype(parts[0].dtype)


def chunk_audio(audio: Audio, window_s: float = 30.0, overlap_s: float = 1.0) -> list[tuple[int, Audio]]:
    """Split into windows of ``window_s`` seconds overlapping by ``overlap_s``; returns (start_sample, chunk)."""
    sr = audio.sample_rate
    spans = chunk_spans(audio.num_samples, int(round(window_s * sr)), int(round(overlap_s * sr)))
    return [(s, Audio(audio.samples[s:e], sr, source=audio.source)) for s, e in spans]


def loudness_db(samples: np.ndarray, num_frames: int, fps: float = MOTION_FPS) -> np.ndarray:
    """RMS level in dB per motion frame (40 ms at 25 fps), ``num_frames`` long."""
    hop = int(round(SAMPLE_RATE / fps))
    x = np.pad(np.asarray(samples, np.float64), (0, max(0, num_frames * hop - len(samples))))[: num_frames * hop]
    rms = np.sqrt((x.reshape(num_frames, hop) ** 2).mean(1))
    return 20 * np.log10(rms + 1e-8)


def speech_span(samples: np.ndarray, hop: int = SAMPLE_RATE // 100, margin_s: float = 0.25,
                floor_db: float = 35.0) -> tuple[int, int]:
    """First and last frame (of ``hop`` samples) of the speech in a clip: from ``margin_s`` before the first frame
    within ``floor_db`` of the clip's loudest to ``margin_s`` after the last one."""
    n = len(samples) // hop
    if n < 1:
        return 0, 0
    e = np.square(np.asarray(samples[: n * hop], np.float64)).reshape(n, hop).mean(1)
    db = 10 * np.log10(e + 1e-12)
    loud = np.flatnonzero(db > db.max() - floor_db)
    m = int(round(margin_s * SAMPLE_RATE / hop))
    return max(0, int(loud[0]) - m), min(n, int(loud[-1]) + 1 + m)


def even_margins(samples: np.ndarray, pad_s: float = 0.9, margin_s: float = 0.1, below_db: float = 60.0,
                 seed: int = 0) -> np.ndarray:
    """The speech of a clip (``speech_span`` with ``margin_s``) between ``pad_s`` of faint noise on each side (white,
    ``below_db`` under the clip's loudest 10 ms; deterministic). However tightly or loosely a recording was cut, stage 1
    then hears the same around the speech (stage1.listen_pad_s). The noise level follows the speech, not the
    recording's own floor: a clip cut tight to its words has no floor to measure (its quietest frames are speech,
    45-60 dB under the peak on RAVDESS), and the same speech cut two ways must give the same input."""
    x = np.asarray(samples, np.float32)
    hop = SAMPLE_RATE // 100
    n = len(x) // hop
    if n < 1:
        return x
    s, e = speech_span(x, hop, margin_s)
    peak = float(np.sqrt(np.square(x[: n * hop].astype(np.float64)).reshape(n, hop).mean(1)).max())
    floor = peak * 10 ** (-below_db / 20)
    rng = np.random.default_rng(seed)
    k = int(round(pad_s * SAMPLE_RATE))
    return np.concatenate([rng.standard_normal(k) * floor, x[s * hop : e * hop],
                           rng.standard_normal(k) * floor]).astype(np.float32)
