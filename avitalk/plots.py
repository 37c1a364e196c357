"""Training plots shared by both stages."""

from __future__ import annotations

from pathlib import Path

from .io import atomic_path


def plot_history(history: dict, path: Path) -> None:
    """One panel per phase (log-scale losses over steps), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = {k: ([{"step": i, "loss": v} for i, v in enumerate(h)] if h and not isinstance(h[0], dict) else h)
               for k, h in history.items()}  # a plain list of losses is one per logged step
    keys = [k for k in history if history[k]]
    if not keys:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.2), squeeze=False)
    for ax, k in zip(axes[0], keys):
        steps = [h["step"] for h in history[k]]
        for name, v in history[k][0].items():
            if name != "step" and isinstance(v, (int, float)):  # (not e.g. the clips each process trained on)
                ax.plot(steps, [h[name] for h in history[k]], label=name)
        ax.set_yscale("log")
        ax.set_title(k)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
