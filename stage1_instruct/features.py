"""Stage 1's view of a corpus: per-clip encoder features (+ prosody channels, + augmented copies), batched and
sampled for training (:mod:`.train`) and for measurement (:mod:`eval.stage1`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avitalk.errors import DatasetError
from avitalk.training import crop_start
from avitalk.vocab import EMOTIONS


class FeatureBank:
    """Per-clip features of one split of one or more datasets (encoder features, with prosody channels appended when
    ``prosody`` caches are given), each clip with its augmented copies when ``augmented`` caches are given.

    ``sources``: ``[(root, cache, prosody_cache_or_None, augmented_cache_or_None, copies, exclude_speakers)]``; the
    first source is the main corpus, the others are marked ``real`` (sampled with ``real_fraction`` in training).
    """

    def __init__(self, root: Path | None = None, split: str = "train", cache=None, limit: int | None = None,
                 prosody=None, sources: list | None = None, dtype=np.float32):
        from avitalk.data.manifest import read_manifest
        from avitalk.encoders.cache import augmented_id

        if sources is None:
            sources = [(root, cache, prosody, None, 0, ())]
        self.clips, self.feats, self.variants, self.real, self.roots = [], [], [], [], []
        for n_src, (src_root, c_cache, p_cache, a_cache, copies, exclude) in enumerate(sources):
            clips = [c for c in read_manifest(src_root, split) if c.speaker not in set(exclude or ())][:limit]
            for c in clips:
                ids = [c.id] + ([augmented_id(c.id, k) for k in range(copies)] if a_cache is not None else [])
                vs = []
                for j, cid in enumerate(ids):
                    f = (c_cache if j == 0 else a_cache).get(cid)
                    if f is None:
                        raise DatasetError(f"{cid}: features missing from {(c_cache if j == 0 else a_cache).dir}")
                    if p_cache is not None:
                        p = p_cache.get(c.id)
                        if p is None:
                            raise DatasetError(f"{c.id}: prosody features missing from {p_cache.dir}")
                        n = min(len(f), len(p))
                        f = np.concatenate([f[:n], p[:n]], 1)
                    vs.append(np.asarray(f, dtype))
                self.clips.append(c)
                self.feats.append(vs[0])
                self.variants.append(vs)
                self.real.append(n_src > 0)
                self.roots.append(src_root)
        if not self.clips:
            raise DatasetError(f"no clips in split {split!r} of {[str(s[0]) for s in sources]}")
        self.real = np.asarray(self.real)

    def sample(self, n: int, rng: np.random.Generator, real_fraction: float) -> np.ndarray:
        """``n`` clip indices; ``real_fraction`` of them from the real (non-first) sources when there are any, drawn
        so that every emotion is equally likely (RAVDESS has twice as many neutral clips: neutral and calm)."""
        real = np.flatnonzero(self.real)
        main = np.flatnonzero(~self.real)
        if not len(real) or real_fraction <= 0:
            return rng.integers(0, len(self.clips), n)
        if not hasattr(self, "_real_p"):
            emo = [self.clips[i].emotion for i in real]
            counts = {e: emo.count(e) for e in set(emo)}
            p = np.array([1.0 / counts[e] for e in emo])
            self._real_p = p / p.sum()
        if not len(main) or real_fraction >= 1:
            return real[rng.choice(len(real), n, p=self._real_p)]
        k = int(rng.binomial(n, real_fraction))
        return np.concatenate([real[rng.choice(len(real), k, p=self._real_p)], main[rng.integers(0, len(main), n - k)]])

    def labels(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """Emotion and intensity class indices (-100 where a clip has none)."""
        emo = [EMOTIONS.index(self.clips[i].emotion) if self.clips[i].emotion in EMOTIONS else -100 for i in idx]
        inten = [int(self.clips[i].intensity) - 1 if self.clips[i].intensity in (1, 2, 3) else -100 for i in idx]
        return torch.tensor(emo), torch.tensor(inten)

    def batch(self, idx, crop: int | None = None, rng: np.random.Generator | None = None, *, augment_p: float,
              augment_p_main: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded features [B, L, D] and mask; ``crop``: a random window of at most that many frames per clip;
        ``augment_p``: the chance of taking one of the clip's augmented copies instead of the clean features
        (``augment_p_main``: the main corpus's chance, when it differs from the real sources')."""
        parts = []
        for i in idx:
            vs = self.variants[i]
            f = vs[0]
            p = augment_p if augment_p_main is None or self.real[i] else augment_p_main
            if p > 0 and len(vs) > 1 and rng is not None and rng.random() < p:
                f = vs[1 + int(rng.integers(len(vs) - 1))]
            if crop is not None and len(f) > crop:
                s = crop_start(len(f), crop, rng or np.random.default_rng())
                f = f[s : s + crop]
            parts.append(np.asarray(f, np.float32))
        from avitalk.data.dataset import pad_arrays

        return pad_arrays(parts)
