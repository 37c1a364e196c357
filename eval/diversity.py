"""Diversity as AVI-Talking defines it: K samples for one input, the sum of the pairwise L2 distances divided by
K * (K - 1), averaged over inputs."""

from __future__ import annotations

import numpy as np
import torch

from avitalk.errors import SequenceError


def diversity(samples) -> float:
    """``samples`` [K, ...] (K >= 2): mean pairwise L2 distance between the flattened samples."""
    x = torch.as_tensor(np.asarray(samples), dtype=torch.float64)
    if x.ndim < 2 or len(x) < 2:
        raise SequenceError(f"diversity needs at least 2 samples, got shape {tuple(x.shape)}")
    x = x.reshape(len(x), -1)
    k = len(x)
    return float(torch.cdist(x, x).sum() / (k * (k - 1)))


def vertex_diversity(vertex_samples) -> float:
    """``vertex_samples`` [K, T, V, 3] in metres: the mean over frames and vertices of the per-vertex distance between
    two samples, averaged over the K * (K - 1) ordered pairs (mm)."""
    v = torch.as_tensor(np.asarray(vertex_samples), dtype=torch.float64)
    if v.ndim != 4 or len(v) < 2:
        raise SequenceError(f"vertex diversity needs [K >= 2, T, V, 3], got {tuple(v.shape)}")
    k = len(v)
    tot = sum(float((v[a] - v[b]).norm(dim=-1).mean()) for a in range(k) for b in range(k) if a != b)
    return tot / (k * (k - 1)) * 1000
