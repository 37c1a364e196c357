"""LSE-D / LSE-C (lip-sync error distance / confidence) by the syncnet_python algorithm, and an offline sync expert.

The algorithm (Chung & Zisserman's SyncNet evaluation, as used by Wav2Lip and AVI-Talking): 25 fps video in windows of
5 frames; audio as 13 MFCC at 100 Hz (python_speech_features defaults), 20 MFCC frames per window; one embedding per
window on each side; for every video window i the L2 distance to the audio windows i-15 .. i+15 (zero-padded at the
ends); the mean over i of each offset's distance; LSE-D = the smallest mean distance, LSE-C = median - minimum,
AV offset = 15 - argmin.

Embeddings come from (a) SyncNet with the user's ``syncnet_v2.model`` on mouth crops of rendered frames (not bundled:
licence), or (b) offline, :class:`SyncExpert`: an audio <-> lip-motion embedding pair trained here on the training
split's ground truth (motion windows of 5 frames of FLAME expression + jaw, contrastive against the MFCC windows).
Numbers from (b) are ours and not comparable with papers' LSE values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avitalk.types import SAMPLE_RATE
from torch import nn

from avitalk.errors import CheckpointError, SequenceError

VSHIFT = 15
WINDOW = 5  # video frames per window (0.2 s at 25 fps)
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps
MFCC_WINDOW = 20


@dataclass
class SyncResult:
    lse_d: float
    lse_c: float
    offset: int
    distances: np.ndarray  # mean distance per offset, [2 * VSHIFT + 1]


def sync_distances(video_emb, audio_emb, vshift: int = VSHIFT) -> np.ndarray:
    """Mean L2 distance per offset: video window i against audio windows i - vshift .. i + vshift (zero padded)."""
    v = torch.as_tensor(np.asarray(video_emb), dtype=torch.float32)
    a = torch.as_tensor(np.asarray(audio_emb), dtype=torch.float32)
    if v.ndim != 2 or a.ndim != 2 or v.shape[1] != a.shape[1]:
        raise SequenceError(f"embeddings must be [N, D] with the same D, got {tuple(v.shape)} and {tuple(a.shape)}")
    n = min(len(v), len(a))
    if n < 1:
        raise SequenceError("no sync windows (the clip is shorter than 5 frames)")
    v, a = v[:n], a[:n]
    ap = torch.cat([a.new_zeros(vshift, a.shape[1]), a, a.new_zeros(vshift, a.shape[1])])
    width = 2 * vshift + 1
    idx = torch.arange(n)[:, None] + torch.arange(width)[None]  # [n, width] rows of the padded audio
    d = (v[:, None, :] - ap[idx] + 1e-6).norm(dim=-1)  # the +eps matches torch's pairwise_distance
    return d.mean(0).numpy()


def lse(video_emb, audio_emb, vshift: int = VSHIFT) -> SyncResult:
    d = sync_distances(video_emb, audio_emb, vshift)
    k = int(np.argmin(d))
    return SyncResult(lse_d=float(d[k]), lse_c=float(np.median(d) - d[k]), offset=vshift - k, distances=d)


def mfcc_windows(samples: np.ndarray, sample_rate: int = SAMPLE_RATE, num_windows: int | None = None) -> np.ndarray:
    """[N, 20, 13] MFCC windows, one per 5-frame video window (python_speech_features defaults: 13 coefficients at
    100 Hz)."""
    import python_speech_features as psf

    m = psf.mfcc(np.asarray(samples, np.float64), sample_rate).astype(np.float32)  # [F, 13]
    n = len(m) // MFCC_PER_FRAME - WINDOW + 1
    if num_windows is not None:
        n = min(n, num_windows)
    if n < 1:
        raise SequenceError("audio shorter than one 0.2 s sync window")
    return np.stack([m[i * MFCC_PER_FRAME : i * MFCC_PER_FRAME + MFCC_WINDOW] for i in range(n)])


def motion_windows(motion: np.ndarray) -> np.ndarray:
    """[N, 5, D] windows of a motion sequence [T, D] (one per start frame)."""
    m = np.asarray(motion, np.float32)
    n = len(m) - WINDOW + 1
    if n < 1:
        raise SequenceError("motion shorter than one 5-frame sync window")
    return np.stack([m[i : i + WINDOW] for i in range(n)])


class SyncExpert(nn.Module):
    """Offline sync expert: MFCC window [20, 13] and motion window [5, 53] -> unit embeddings in one space."""

    def __init__(self, n_motion: int = 53, dim: int = 64, hidden: int = 256):
        super().__init__()
        self.audio = nn.Sequential(nn.Flatten(), nn.LayerNorm(MFCC_WINDOW * 13), nn.Linear(MFCC_WINDOW * 13, hidden),
                                   nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.motion = nn.Sequential(nn.Flatten(), nn.Linear(WINDOW * n_motion, hidden), nn.GELU(),
                                    nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.register_buffer("mean", torch.zeros(n_motion))
        self.register_buffer("std", torch.ones(n_motion))
        self.n_motion = n_motion

    def embed_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.audio(mfcc), dim=-1)

    def embed_motion(self, windows: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.motion((windows - self.mean) / self.std), dim=-1)

    def score(self, samples: np.ndarray, motion: np.ndarray, sample_rate: int = SAMPLE_RATE) -> SyncResult:
        """LSE-D / LSE-C of one clip: speech samples and its motion [T, 53] at 25 fps."""
        return self.score_windows(mfcc_windows(samples, sample_rate), motion)

    @torch.no_grad()
    def score_windows(self, mfcc: np.ndarray, motion: np.ndarray) -> SyncResult:
        """The same with the clip's MFCC windows [N, 20, 13] computed once (several motions for one speech)."""
        mw = motion_windows(motion)
        n = min(len(mw), len(mfcc))
        v = self.embed_motion(torch.as_tensor(mw[:n]))
        a = self.embed_audio(torch.as_tensor(mfcc[:n]))
        return lse(v.numpy(), a.numpy())

    def save(self, path: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        from avitalk.io import atomic_path

        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(tmp),
                      metadata={"n_motion": str(self.n_motion)})
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SyncExpert":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                n = int((f.metadata() or {}).get("n_motion", 53))
                state = {k: f.get_tensor(k) for k in f.keys()}
            m = cls(n_motion=n)
            m.load_state_dict(state)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{path}: not a sync expert file ({e})") from e
        return m.eval()


def train_sync_expert(clips: list[tuple[np.ndarray, np.ndarray]], steps: int = 1500, batch: int = 256,
                      seed: int = 0, progress: bool = False) -> SyncExpert:
    """Contrastive training on (speech samples, motion [T, 53]) pairs: a motion window's positive is the MFCC window
    at the same time; the negatives are the other windows of the batch, half of them taken from the same clip at
    other times (so the expert must use timing, not only the speaker or the emotion)."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    data = []
    for samples, motion in clips:
        mw = motion_windows(motion)
        aw = mfcc_windows(samples, SAMPLE_RATE, len(mw))
        n = min(len(mw), len(aw))
        if n >= 2:
            data.append((mw[:n], aw[:n]))
    if not data:
        raise SequenceError("no clips long enough to train the sync expert")
    allm = np.concatenate([np.asarray(m).reshape(-1, m.shape[-1]) for m, _ in data])
    model = SyncExpert(n_motion=allm.shape[1])
    model.mean.copy_(torch.as_tensor(allm.mean(0)))
    model.std.copy_(torch.as_tensor(allm.std(0)).clamp_min(1e-4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    scale = 20.0
    for _ in tqdm(range(steps), desc="sync expert", disable=not progress or None):
        ms, as_ = [], []
        for _ in range(batch // 2):  # pairs of windows from one clip at two different times
            mw, aw = data[int(rng.integers(len(data)))]
            i, j = rng.choice(len(mw), 2, replace=len(mw) < 2)
            ms += [mw[i], mw[j]]
            as_ += [aw[i], aw[j]]
        v = model.embed_motion(torch.as_tensor(np.stack(ms)))
        a = model.embed_audio(torch.as_tensor(np.stack(as_)))
        logits = scale * v @ a.T
        target = torch.arange(len(v))
        loss = 0.5 * (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
