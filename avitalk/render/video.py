"""Video files with PyAV: H.264 (yuv420p) at the motion frame rate, the speech muxed as AAC; written atomically."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import RenderError
from ..io import atomic_path
from ..types import MOTION_FPS, Audio

AAC_FRAME = 1024


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = MOTION_FPS,
    audio: Audio | None = None,
    crf: int = 20,
    preset: str = "veryfast",
    num_frames: int | None = None,
) -> Path:
    """Encode RGB frames ([H, W, 3] uint8, even sizes) to an mp4 with optional audio; the file appears only
    when complete. The audio is trimmed or padded with silence to the video's duration."""
    import av

    out = Path(path)
    if out.exists() and out.is_dir():
        raise RenderError(f"{out}: is a directory")
    rate = _fps_fraction(fps)
    count = 0
    try:
        with atomic_path(out) as tmp:
            with av.open(str(tmp), mode="w", format="mp4") as container:
                vstream = None
                for img in frames:
                    img = np.asarray(img)
                    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                        raise RenderError(f"frames must be [H, W, 3] uint8, got {img.dtype} {img.shape}")
                    if vstream is None:
                        h, w = img.shape[:2]
                        if h % 2 or w % 2:
                            raise RenderError(f"frame size must be even for yuv420p, got {w}x{h}")
                        vstream = container.add_stream("libx264", rate=rate)
                        vstream.width, vstream.height = w, h
                        vstream.pix_fmt = "yuv420p"
                        vstream.options = {"crf": str(crf), "preset": preset}
                        astream = None
                        if audio is not None:
                            astream = container.add_stream("aac", rate=audio.sample_rate)
                            astream.layout = "mono"
                    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                    frame.pts = count
                    frame.time_base = 1 / rate
                    for pkt in vstream.encode(frame):
                        container.mux(pkt)
                    count += 1
                if vstream is None:
                    raise RenderError("no frames to write")
                for pkt in vstream.encode():
                    container.mux(pkt)
                if audio is not None and astream is not None:
                    n = int(round(count / float(rate) * audio.sample_rate))
                    samples = np.zeros(n, np.float32)
                    k = min(n, audio.num_samples)
                    samples[:k] = audio.samples[:k]
                    for s in range(0, n, AAC_FRAME):
                        chunk = samples[s : s + AAC_FRAME]
                        af = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
                        af.sample_rate = audio.sample_rate
                        af.pts = s
                        af.time_base = Fraction(1, audio.sample_rate)
                        for pkt in astream.encode(af):
                            container.mux(pkt)
                    for pkt in astream.encode():
                        container.mux(pkt)
    except av.error.FFmpegError as e:
        raise RenderError(f"{out}: video encoding failed ({e})") from e
    except PermissionError as e:
        raise RenderError(f"{out}: cannot write ({e.strerror})") from e
    if num_frames is not None and count != num_frames:  # pragma: no cover - defensive
        raise RenderError(f"{out}: wrote {count} frames, expected {num_frames}")
    return out


def probe_video(path: str | os.PathLike) -> dict:
    """Decode a video back: frame count, size, fps, duration, and the audio stream's rate/duration if any."""
    import av

    p = Path(path)
    info: dict = {"path": str(p)}
    with av.open(str(p)) as c:
        v = next((s for s in c.streams if s.type == "video"), None)
        a = next((s for s in c.streams if s.type == "audio"), None)
        if v is not None:
            frames = 0
            last = None
            for f in c.decode(v):
                frames += 1
                last = f
            info.update(
                frames=frames,
                width=v.codec_context.width,
                height=v.codec_context.height,
                fps=float(v.average_rate) if v.average_rate else None,
                codec=v.codec_context.name,
                duration=frames / float(v.average_rate) if v.average_rate else None,
                last_frame=last.to_ndarray(format="rgb24") if last is not None else None,
            )
    if a is not None:
        with av.open(str(p)) as c:
            a = next(s for s in c.streams if s.type == "audio")
            n = 0
            chunks = []
            for f in c.decode(a):
                arr = f.to_ndarray()
                chunks.append(arr.reshape(-1) if arr.shape[0] == 1 else arr.mean(0))
                n += f.samples
            info.update(
                audio_codec=a.codec_context.name,
                audio_rate=a.codec_context.sample_rate,
                audio_duration=n / a.codec_context.sample_rate,
                audio=np.concatenate(chunks) if chunks else np.zeros(0, np.float32),
            )
    return info
