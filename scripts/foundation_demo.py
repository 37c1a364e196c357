"""`make demo` (foundation stage): render a hand-made FlameSequence on the stand-in head with a synthetic voice-like
sound to OUT/demo.mp4. Replaced by `avitalk run` on the embedded checkpoint once the pipeline exists."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from avitalk.types import SAMPLE_RATE


def main(out_dir: str = "out/demo") -> None:
    from avitalk import audio as audio_io
    from avitalk.top.cli import main as cli
    from avitalk.flame.standin import demo_sequence
    from avitalk.types import Audio

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seq = demo_sequence(4.0)
    seq.save(out / "demo_flame.npz")
    # a buzz whose loudness follows the jaw, so sound and mouth line up when you watch it
    sr = SAMPLE_RATE
    t = np.arange(int(seq.duration * sr)) / sr
    jaw = np.interp(t, np.arange(seq.num_frames) / seq.fps, seq.jaw_pose[:, 0])
    f0 = 140 + 20 * np.sin(2 * np.pi * 1.5 * t)
    buzz = np.sign(np.sin(2 * np.pi * np.cumsum(f0) / sr)) * 0.5 + np.sin(2 * np.pi * np.cumsum(2 * f0) / sr) * 0.3
    audio_io.save_wav(out / "demo.wav", Audio((0.25 * buzz * np.clip(jaw / 0.16, 0, 1)).astype(np.float32)))
    code = cli(["render", str(out / "demo_flame.npz"), "--audio", str(out / "demo.wav"), "-o", str(out / "demo.mp4"), "--overwrite"])
    sys.exit(code)


if __name__ == "__main__":
    main(*sys.argv[1:2])
