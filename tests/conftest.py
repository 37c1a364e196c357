"""Shared fixtures: synthetic audio files (never ../shared), the stand-in head, a tiny synthetic FLAME pickle."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

SR = 16_000


def tone(seconds: float = 1.0, sr: int = SR, freq: float = 220.0, amp: float = 0.3, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    if channels > 1:
        x = np.stack([x * (1 - 0.2 * c) for c in range(channels)], 1)
    return x


def write_m4a(path: Path, x: np.ndarray, sr: int = SR) -> Path:
    """AAC in an mp4 container (what MEAD ships), written with PyAV."""
    import av

    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=sr)
        s.layout = "mono"
        for i in range(0, len(x), 1024):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, i : i + 1024]), format="fltp", layout="mono")
            f.sample_rate, f.pts = sr, i
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


@pytest.fixture
def wav_file(tmp_path: Path):
    """Factory: write a tone to a file in any soundfile format and return its path."""
    import soundfile as sf

    def make(name: str = "speech.wav", seconds: float = 1.0, sr: int = SR, channels: int = 1, **kw) -> Path:
        p = tmp_path / name
        fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}[p.suffix]
        sub = {"OGG": "VORBIS", "MP3": "MPEG_LAYER_III", "WAV": "PCM_16", "FLAC": "PCM_16"}[fmt]
        sf.write(str(p), tone(seconds, sr, channels=channels, **kw), sr, format=fmt, subtype=sub)
        return p

    return make


@pytest.fixture(scope="session")
def standin():
    from avitalk.flame import FlameModel

    return FlameModel.standin()


def _fake_flame_dict(V: int = 120, K: int = 400, seed: int = 0) -> dict:
    """A small random model with the keys and layout of an official FLAME pickle."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    v = rng.normal(0, 0.05, (V, 3))
    faces = np.stack([np.arange(V - 2), np.arange(1, V - 1), np.arange(2, V)], 1).astype(np.uint32)
    weights = rng.random((V, 5)) ** 4
    weights /= weights.sum(1, keepdims=True)
    jr = np.zeros((5, V))
    for j in range(5):
        idx = rng.choice(V, 6, replace=False)
        jr[j, idx] = 1 / 6
    kt = np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
    return {
        "v_template": v,
        "f": faces,
        "shapedirs": rng.normal(0, 1e-3, (V, 3, K)),
        "posedirs": rng.normal(0, 1e-3, (V, 3, 36)),
        "J_regressor": sp.csc_matrix(jr),
        "weights": weights,
        "kintree_table": kt,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


@pytest.fixture
def fake_flame_dict():
    return _fake_flame_dict


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Run the avitalk CLI in-process: returns (exit_code, stdout, stderr)."""
    from avitalk.cli import main

    def run(*args: str, capsys=None):
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
        return code, out.getvalue(), err.getvalue()

    return run
