"""Vertex metrics of the speech-driven 3D face literature, each named with its convention.

Inputs are vertex sequences [T, V, 3] in metres (what FlameModel returns); results are in millimetres (mm or mm^2).

- ``lve_squared_max``: CodeTalker / FaceFormer convention (torchmetrics' ``LipVertexError``): per frame the largest
  *squared* L2 error over the lip vertices, averaged over frames. Reported in mm^2.
- ``lve_euclidean_max``: MMHead convention: per frame the largest L2 error over the lip vertices, averaged. mm.
- ``mve``: mean L2 error over all vertices and frames. mm.
- ``eve``: per frame the largest L2 error over the eye region and forehead, averaged. mm.
- ``fdd``: upper-face dynamics deviation (CodeTalker): for each upper-face vertex the standard deviation over time
  of its squared displacement from the template, averaged over those vertices; ground truth minus prediction. mm^2.
"""

from __future__ import annotations

import numpy as np
import torch

from avitalk.errors import SequenceError


def _pair(pred, gt) -> tuple[torch.Tensor, torch.Tensor]:
    p, g = torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(gt, dtype=torch.float64)
    if p.ndim != 3 or p.shape[-1] != 3 or p.shape[1:] != g.shape[1:]:
        raise SequenceError(f"vertex sequences must be [T, V, 3] with the same V, got {tuple(p.shape)} and {tuple(g.shape)}")
    n = min(len(p), len(g))  # sequences of a few frames' different length are compared over the common part
    if n == 0:
        raise SequenceError("empty vertex sequence")
    return p[:n], g[:n]


def lve_squared_max(pred, gt, lips) -> float:
    from torchmetrics.multimodal import LipVertexError

    p, g = _pair(pred, gt)
    metric = LipVertexError(mouth_map=[int(i) for i in np.asarray(lips)], sync_on_compute=False)
    return float(metric(p.float() * 1000, g.float() * 1000))


def lve_euclidean_max(pred, gt, lips) -> float:
    p, g = _pair(pred, gt)
    idx = torch.as_tensor(np.asarray(lips), dtype=torch.long)
    return float((p[:, idx] - g[:, idx]).norm(dim=-1).max(dim=1).values.mean() * 1000)


def mve(pred, gt) -> float:
    p, g = _pair(pred, gt)
    return float((p - g).norm(dim=-1).mean() * 1000)


def eve(pred, gt, upper) -> float:
    p, g = _pair(pred, gt)
    idx = torch.as_tensor(np.asarray(upper), dtype=torch.long)
    return float((p[:, idx] - g[:, idx]).norm(dim=-1).max(dim=1).values.mean() * 1000)


def fdd(pred, gt, template, upper) -> float:
    p, g = _pair(pred, gt)
    idx = torch.as_tensor(np.asarray(upper), dtype=torch.long)
    t = torch.as_tensor(template, dtype=torch.float64)[idx]

    def dyn(v: torch.Tensor) -> torch.Tensor:
        d = ((v[:, idx] - t) * 1000).pow(2).sum(-1)  # [T, U] squared displacement in mm^2
        return d.std(dim=0, unbiased=False).mean()

    return float(dyn(g) - dyn(p))


def upper_face(model) -> np.ndarray:
    """Eye region + forehead vertex ids of a FlameModel (the 'upper face' of EVE and FDD)."""
    names = [n for n in ("eye_region", "forehead") if n in model.regions]
    if not names:
        raise SequenceError("the FLAME model has no eye_region / forehead regions (convert it with --masks)")
    return np.unique(np.concatenate([model.region(n) for n in names]))
