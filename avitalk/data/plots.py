"""Plots of dataset clips: waveform with the jaw opening and the strongest expression coefficients over time."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io import atomic_path


def plot_clips(root: str | os.PathLike, clips: list, out: str | os.PathLike, max_clips: int = 4) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import audio as audio_io
    from ..types import FlameSequence

    root = Path(root)
    chosen = clips[:max_clips]
    fig, axes = plt.subplots(len(chosen), 1, figsize=(11, 2.6 * len(chosen)), squeeze=False)
    for ax, c in zip(axes[:, 0], chosen):
        a = audio_io.load(root / c.audio)
        seq = FlameSequence.load(root / c.flame)
        t_a = np.arange(a.num_samples) / a.sample_rate
        t_m = np.arange(seq.num_frames) / seq.fps
        ax.plot(t_a, a.samples / max(np.abs(a.samples).max(), 1e-6) * 0.5, color="0.75", lw=0.5, label="waveform")
        jaw = seq.jaw_pose[:, 0]
        ax.plot(t_m, jaw / max(np.abs(jaw).max(), 1e-6), color="C3", lw=1.6, label="jaw opening (norm.)")
        top = np.argsort(-np.abs(seq.expression).mean(0))[:3]
        for k, j in enumerate(top):
            e = seq.expression[:, j]
            ax.plot(t_m, e / max(np.abs(seq.expression[:, top]).max(), 1e-6), lw=1, color=f"C{k}", label=f"exp[{j}]")
        ax.set_title(f"{c.id}  {c.emotion} (level {c.intensity})  {c.speaker}: {c.instructions[0][:90]}", fontsize=8)
        ax.set_xlim(0, max(t_a[-1], t_m[-1]))
        ax.set_ylim(-1.05, 1.05)
        ax.legend(fontsize=7, loc="upper right", ncol=5)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(out)
