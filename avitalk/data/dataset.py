"""torch Datasets over a dataset folder, fixed-length random crops with padding masks, and a per-clip feature cache.

Time bases: motion at 25 fps, audio at 16 kHz (640 samples a frame), encoder features at 50 Hz (2 a frame). A crop
of ``crop_frames`` motion frames takes the matching audio samples and feature rows, so every modality of an item
covers the same stretch of time.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DatasetError
from ..io import atomic_path
from ..types import MOTION_FPS, SAMPLE_RATE, FlameSequence
from ..vocab import EMOTIONS
from .manifest import Clip, read_manifest

SAMPLES_PER_FRAME = int(SAMPLE_RATE / MOTION_FPS)  # 640
FEATURES_PER_FRAME = 2  # 50 Hz encoder features


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


class TalkingFaceDataset(Dataset):
    """Items of one split: motion [L, n_exp + 3], audio [L * 640], optional features [L * 2, D], a mask, an
    instruction and the labels. ``crop_frames=None`` gives whole clips (pad them with :func:`collate`)."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        crop_frames: int | None = 100,
        with_audio: bool = True,
        features: FeatureCache | None = None,
        instruction: str = "random",  # "random" paraphrase or "first"
        seed: int = 0,
    ):
        self.root = Path(root)
        self.clips: list[Clip] = read_manifest(self.root, split)
        self.split = split
        self.crop = crop_frames
        self.with_audio = with_audio
        self.features = features
        if instruction not in ("random", "first"):
            raise ValueError("instruction must be 'random' or 'first'")
        self.instruction = instruction
        self.rng = np.random.default_rng(seed)
        self.speakers = sorted({c.speaker for c in self.clips})

    def __len__(self) -> int:
        return len(self.clips)

    def _load(self, c: Clip) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        seq = FlameSequence.load(self.root / c.flame)
        motion = seq.motion()
        audio = None
        if self.with_audio:
            from .. import audio as audio_io

            audio = audio_io.load(self.root / c.audio).samples
        feats = None
        if self.features is not None:
            feats = self.features.get(c.id)
            if feats is None:
                raise DatasetError(f"{c.id}: no cached features in {self.features.dir} (compute them first)")
        return motion, audio, feats

    def __getitem__(self, i: int) -> dict[str, Any]:
        c = self.clips[i]
        motion, audio, feats = self._load(c)
        T = motion.shape[0]
        L = self.crop or T
        start = int(self.rng.integers(0, T - L + 1)) if T > L else 0
        n = min(L, T - start)
        m = np.zeros((L, motion.shape[1]), np.float32)
        m[:n] = motion[start : start + n]
        mask = np.zeros(L, bool)
        mask[:n] = True
        item: dict[str, Any] = {
            "id": c.id,
            "motion": torch.from_numpy(m),
            "mask": torch.from_numpy(mask),
            "start_frame": start,
            "emotion": EMOTIONS.index(c.emotion),
            "intensity": c.intensity,
            "speaker": c.speaker,
            "instruction": (c.instructions[int(self.rng.integers(len(c.instructions)))] if self.instruction == "random"
                            else c.instructions[0]) if c.instructions else "",
        }
        if audio is not None:
            a = np.zeros(L * SAMPLES_PER_FRAME, np.float32)
            seg = audio[start * SAMPLES_PER_FRAME : (start + n) * SAMPLES_PER_FRAME]
            a[: len(seg)] = seg
            item["audio"] = torch.from_numpy(a)
        if feats is not None:
            f = np.zeros((L * FEATURES_PER_FRAME, feats.shape[1]), np.float32)
            seg = feats[start * FEATURES_PER_FRAME : (start + n) * FEATURES_PER_FRAME]
            f[: len(seg)] = seg
            item["features"] = torch.from_numpy(f)
        return item


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


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad items to the longest in the batch (time first) and stack; ``mask`` marks real frames."""
    L = max(b["motion"].shape[0] for b in batch)
    out: dict[str, Any] = {}
    for key in batch[0]:
        vals = [b[key] for b in batch]
        if key in ("motion", "mask", "audio", "features"):
            per_frame = {"motion": 1, "mask": 1, "audio": SAMPLES_PER_FRAME, "features": FEATURES_PER_FRAME}[key]
            n = L * per_frame
            padded = []
            for v in vals:
                pad = n - v.shape[0]
                padded.append(torch.nn.functional.pad(v, (0, 0) * (v.ndim - 1) + (0, pad)) if pad else v)
            out[key] = torch.stack(padded)
        elif isinstance(vals[0], (int, np.integer)):
            out[key] = torch.tensor(vals)
        else:
            out[key] = vals
    return out
