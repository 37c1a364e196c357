"""Dropout whose mask costs a quarter of the random numbers on a CPU.

``torch.nn.Dropout`` on a CPU draws one Bernoulli number per element, one at a time (on this project's 2-core AMD
machine it was about a sixth of a stage-2 lip-sync step; docs/training.md). Here every 64-bit random integer gives four 16-bit draws: an element is kept when its draw is
at least ``p`` of the way up the 16-bit range, so ``p`` is exact to 1/65536, and kept elements are scaled by
1 / (1 - p) as usual. The same expectation and variance as ``nn.Dropout``, seeded by ``torch.manual_seed``; a GPU
uses torch's own (fast there). Identity outside training.
"""

from __future__ import annotations

import torch
from torch import nn

_LEVELS = 1 << 16


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Elements of ``x`` zeroed with probability ``p`` (the rest scaled by 1 / (1 - p)) when ``training``."""
    if not training or p <= 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return nn.functional.dropout(x, p, True)
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(1 << 63), (1 << 63) - 1)
    keep = bits.view(torch.int16)[:n].view(x.shape) >= round(p * _LEVELS) - _LEVELS // 2
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


class Dropout(nn.Module):
    """A drop-in ``nn.Dropout`` (same ``p``, no weights) drawn by :func:`dropout`."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def cheap_dropouts(module: nn.Module) -> nn.Module:
    """``module`` with every ``nn.Dropout`` inside it (e.g. in ``nn.TransformerEncoderLayer``) replaced by
    :class:`Dropout` of the same ``p``, in place. Attention weights' dropout inside ``nn.MultiheadAttention`` stays
    torch's (cheap there)."""
    for name, child in module.named_children():
        if type(child) is nn.Dropout:
            setattr(module, name, Dropout(child.p))
        else:
            cheap_dropouts(child)
    return module
