"""The evaluator motion network, trained here on a dataset's training split (never on generated motion).

One encoder, two uses: its 128-d clip features feed FID / KID on motion (trained contrastively against the sentence
encoder's embedding of the clip's instruction, as text-to-motion benchmarks do), and its emotion head reads the
emotion of generated motion (emotion accuracy, controllability).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avitalk.errors import CheckpointError, DatasetError
from avitalk.vocab import EMOTIONS


class MotionEvaluator(nn.Module):
    """Motion [B, T, 53] (+ mask) -> features [B, 128]; ``emotion_logits``; ``text_space`` for the contrastive loss."""

    def __init__(self, n_motion: int = 53, hidden: int = 128, text_dim: int = 384, n_classes: int = len(EMOTIONS)):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(n_motion, hidden, 5, padding=2), nn.GELU(), nn.Dropout(0.1),
                                 nn.Conv1d(hidden, hidden, 5, padding=2), nn.GELU(),
                                 nn.Conv1d(hidden, hidden, 5, padding=2), nn.GELU())
        self.out = nn.Linear(2 * hidden, hidden)
        self.head = nn.Linear(hidden, n_classes)
        self.to_text = nn.Linear(hidden, text_dim)
        self.register_buffer("mean", torch.zeros(n_motion))
        self.register_buffer("std", torch.ones(n_motion))
        self.num_features = hidden  # read by torchmetrics' FID / KID

    def forward(self, motion: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.net(((motion - self.mean) / self.std).transpose(1, 2)).transpose(1, 2)
        m = torch.ones(h.shape[:2], device=h.device) if mask is None else mask.float()
        m = m.unsqueeze(-1)
        mean = (h * m).sum(1) / m.sum(1).clamp_min(1)
        var = ((h - mean[:, None]) ** 2 * m).sum(1) / m.sum(1).clamp_min(1)
        return self.out(torch.cat([mean, (var + 1e-6).sqrt()], -1))

    def emotion_logits(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)

    # ---------------------------------------------------------------- batch helpers
    @torch.no_grad()
    def features(self, motions: list[np.ndarray], batch: int = 64) -> np.ndarray:
        out = []
        for s in range(0, len(motions), batch):
            m, mask = pad(motions[s : s + batch])
            out.append(self(m, mask).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.num_features), np.float32)

    @torch.no_grad()
    def classify(self, motions: list[np.ndarray]) -> np.ndarray:
        return self.emotion_logits(torch.as_tensor(self.features(motions))).argmax(-1).numpy()

    def save(self, path: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        from avitalk.io import atomic_path

        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(tmp),
                      metadata={"n_motion": str(self.mean.numel()), "text_dim": str(self.to_text.out_features)})
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MotionEvaluator":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
            m = cls(n_motion=int(meta.get("n_motion", 53)), text_dim=int(meta.get("text_dim", 384)))
            m.load_state_dict(state)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{path}: not an evaluator file ({e})") from e
        return m.eval()


def pad(motions: list[np.ndarray], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    from avitalk.data.dataset import pad_arrays

    return pad_arrays(motions, length)


def train_evaluator(motions: list[np.ndarray], emotions: list[str], text_emb: np.ndarray, steps: int = 800,
                    crop: int = 64, batch: int = 64, seed: int = 0, progress: bool = False) -> MotionEvaluator:
    """Train on ground-truth clips: emotion cross-entropy + InfoNCE between motion features and the sentence
    embedding of each clip's instruction (``text_emb`` [N, D])."""
    from tqdm import tqdm

    from avitalk.training import crop_start

    if len(motions) < 2:
        raise DatasetError(f"the evaluator needs at least 2 training clips, got {len(motions)}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = MotionEvaluator(n_motion=motions[0].shape[1], text_dim=text_emb.shape[1])
    allm = np.concatenate(motions)
    model.mean.copy_(torch.as_tensor(allm.mean(0)))
    model.std.copy_(torch.as_tensor(allm.std(0)).clamp_min(1e-3))
    y = torch.as_tensor([EMOTIONS.index(e) if e in EMOTIONS else -100 for e in emotions])
    te = nn.functional.normalize(torch.as_tensor(text_emb, dtype=torch.float32), dim=-1)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    model.train()
    for _ in tqdm(range(steps), desc="evaluator", disable=not progress or None):
        idx = rng.choice(len(motions), min(batch, len(motions)), replace=False)
        crops = []
        for i in idx:
            T = len(motions[i])
            s = crop_start(T, crop, rng)
            crops.append(motions[i][s : s + crop])
        m, mask = pad(crops, crop)
        f = model(m, mask)
        loss = nn.functional.cross_entropy(model.emotion_logits(f), y[idx], ignore_index=-100)
        a = nn.functional.normalize(model.to_text(f), dim=-1)
        logits = 14.0 * a @ te[idx].T
        tgt = torch.arange(len(idx))
        loss = loss + 0.5 * (nn.functional.cross_entropy(logits, tgt) + nn.functional.cross_entropy(logits.T, tgt))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
