"""FID and KID with torchmetrics, on any features: motion features from our evaluator (offline, the default) or
rendered frames through a TorchScript Inception network the user provides (e.g. clean-fid's inception-2015-12-05.pt).

FID: Frechet distance between Gaussians fitted to the two feature sets. KID: the unbiased squared MMD with the cubic
polynomial kernel (x.y/d + 1)^3 on the features standardised per dimension by the real set's mean and std, as the mean
and standard deviation over random subsets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from avitalk.errors import CheckpointError, SequenceError


class _Given(nn.Module):
    """A feature 'extractor' for features already computed (torchmetrics reads ``num_features``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@dataclass
class FidKid:
    fid: float
    kid_mean: float | None
    kid_std: float | None
    kid_subset_size: int | None


def fid_kid(real: np.ndarray, fake: np.ndarray, subsets: int = 50, subset_size: int = 100, seed: int = 0) -> FidKid:
    """FID and KID between two feature sets [N, D]. KID needs at least 2 samples per side; its subset size is cut to
    the smaller set (reported), and it is skipped (None) below 2."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    r = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
        raise SequenceError(f"features must be [N, D] with the same D, got {tuple(r.shape)} and {tuple(f.shape)}")
    if len(r) < 2 or len(f) < 2:
        raise SequenceError(f"FID needs at least 2 samples per side, got {len(r)} and {len(f)}")
    # sync_on_compute=False: the features are complete here (under torchrun the main process measures alone)
    fid = FrechetInceptionDistance(feature=_Given(r.shape[1]), normalize=True, sync_on_compute=False)
    fid.update(r, real=True)
    fid.update(f, real=False)
    n = min(subset_size, len(r), len(f))
    kid_m = kid_s = None
    if n >= 2:
        import warnings

        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=_Given(r.shape[1]), subsets=subsets, subset_size=n, normalize=True,
                                      sync_on_compute=False)
        # KID on per-dimension z-scores (the real set's mean and std): the cubic kernel (x.y/d + 1)^3 assumes
        # comparable dimensions; a few high-variance dimensions would otherwise dominate x.y and make the subsets'
        # estimates scatter by more than the differences KID measures
        mu, sd = r.mean(0, keepdim=True), r.std(0, keepdim=True).clamp_min(1e-8)
        kid.update(((r - mu) / sd).float(), real=True)
        kid.update(((f - mu) / sd).float(), real=False)
        with torch.random.fork_rng():  # KID's random subsets: the same for a given input, whatever ran before
            torch.manual_seed(seed)
            m, s = kid.compute()
        kid_m, kid_s = float(m), float(s)
    return FidKid(float(fid.compute()), kid_m, kid_s, n if n >= 2 else None)


def inception_features(frames: np.ndarray, path: str | os.PathLike, batch: int = 32) -> np.ndarray:
    """Features of RGB frames [N, H, W, 3] uint8 from a TorchScript Inception file (``torch.jit.load``; its forward
    takes float [B, 3, H, W] in 0..255 and returns [B, D], as clean-fid's file does)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such Inception file (give a TorchScript file, e.g. inception-2015-12-05.pt)")
    try:
        net = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a TorchScript file ({e})") from e
    out = []
    with torch.no_grad():
        for s in range(0, len(frames), batch):
            x = torch.as_tensor(np.asarray(frames[s : s + batch])).permute(0, 3, 1, 2).float()
            y = net(x)
            out.append((y[0] if isinstance(y, (tuple, list)) else y).reshape(len(x), -1).numpy())
    return np.concatenate(out)
