"""The per-clip, per-encoder feature cache and the padding helper the trainers and the benchmark share. (The trainers
hold whole splits in memory: stage 1's FeatureBank, stage 2's ClipBank.)"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..io import atomic_path



class FeatureCache:
    """Encoder features per clip and per encoder: ``<dir>/<encoder key>/<clip id>.npy`` (no pickles, atomic).

    ``key`` should name the encoder and its settings (e.g. ``whisper_ct2-tiny.en-int8``): a different key never
    reads another encoder's features.
    """

    def __init__(self, directory: str | os.PathLike, key: str):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)
        if safe != key:
            safe += "-" + hashlib.sha1(key.encode()).hexdigest()[:8]
        self.dir = Path(directory) / safe
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, clip_id: str) -> Path:
        return self.dir / f"{clip_id}.npy"

    def get(self, clip_id: str) -> np.ndarray | None:
        p = self.path(clip_id)
        if not p.is_file():
            return None
        try:
            return np.load(p, allow_pickle=False)
        except (OSError, ValueError):  # a damaged file is recomputed
            return None

    def put(self, clip_id: str, features: np.ndarray) -> np.ndarray:
        arr = np.ascontiguousarray(features, np.float32)
        with atomic_path(self.path(clip_id)) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, arr, allow_pickle=False)
        return arr

    def get_or_compute(self, clip_id: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        got = self.get(clip_id)
        return got if got is not None else self.put(clip_id, compute())


def pad_arrays(arrs: list[np.ndarray], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack [T_i, D] arrays into a zero-padded float32 batch [B, L, D] and a mask [B, L] (True = real); ``length``
    pads or cuts every array to L (default: the longest)."""
    L = length or max(len(a) for a in arrs)
    out = np.zeros((len(arrs), L, arrs[0].shape[1]), np.float32)
    mask = np.zeros((len(arrs), L), bool)
    for i, a in enumerate(arrs):
        n = min(L, len(a))
        out[i, :n] = a[:n]
        mask[i, :n] = True
    return torch.from_numpy(out), torch.from_numpy(mask)
