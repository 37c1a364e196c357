"""Run a frozen encoder once per clip of a dataset and keep the features (FeatureCache)."""

from __future__ import annotations

import os
from pathlib import Path

from ..data.dataset import FeatureCache
from ..data.manifest import read_manifest
from .base import AudioEncoder


def cache_dataset_features(
    root: str | os.PathLike,
    encoder: AudioEncoder,
    cache_dir: str | os.PathLike | None = None,
    splits: tuple[str, ...] | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> FeatureCache:
    """Features of every clip (of ``splits``) in ``cache_dir`` (default ``ROOT/features``); finished clips are kept."""
    from tqdm import tqdm

    from .. import audio as audio_io

    root = Path(root)
    cache = FeatureCache(cache_dir or root / "features", encoder.key)
    clips = [c for c in read_manifest(root) if splits is None or c.split in splits]
    todo = [c for c in clips if cache.get(c.id) is None]
    bar = tqdm(total=len(todo), unit="clip", desc=f"features {encoder.key}", disable=not progress or None)
    for s in range(0, len(todo), batch_size):
        chunk = todo[s : s + batch_size]
        feats = encoder.encode_batch([audio_io.load(root / c.audio) for c in chunk])
        for c, f in zip(chunk, feats):
            cache.put(c.id, f)
        bar.update(len(chunk))
    bar.close()
    return cache
