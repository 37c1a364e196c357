"""The utterance probe: a second, simple opinion on the speaker's emotion beside the Q-Former's emotion head.

A multinomial logistic regression on the mean and standard deviation over the speech (the clip's
:func:`avitalk.audio.speech_span`, 0.1 s margins: how the recording was cut does not matter) of every channel stage 1
reads, standardised, with a strong L2 penalty. On its own it reads about what the head reads; the two disagree on
different clips, so stage 1 multiplies their probabilities (``stage1.utterance_probe`` is the probe's exponent) before
the emotion word is chosen (README "Real speech", the utterance probe). It is fitted in seconds after the Q-Former
(``stage1_instruct.train``) on the same clips, SynthTalk clean, real speech clean and through its augmented copies,
the two corpora weighted equally; stored in ``probe.safetensors`` (float32, about 50 KB).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from avitalk.errors import CheckpointError
from avitalk.types import FEATURE_RATE, SAMPLE_RATE

PROBE_FILE = "probe.safetensors"
SPAN_MARGIN_S = 0.1


def speech_frames(samples: np.ndarray | None, n_frames: int) -> slice:
    """The feature frames (at FEATURE_RATE) of a clip's speech: its speech_span with 0.1 s margins; all frames when
    the samples are not given or the span is empty."""
    if samples is None or n_frames < 1:
        return slice(0, n_frames)
    from avitalk.audio import speech_span

    hop = SAMPLE_RATE // 100
    s0, s1 = speech_span(np.asarray(samples), hop=hop, margin_s=SPAN_MARGIN_S)
    per = 100 // FEATURE_RATE  # 10 ms frames per feature frame
    f0, f1 = min(s0 // per, n_frames - 1), min(n_frames, -(-s1 // per))
    return slice(f0, max(f0 + 1, f1))


def utterance_stats(feats: np.ndarray, samples: np.ndarray | None = None) -> np.ndarray:
    """[2 D] float32: mean and standard deviation over the speech frames of [T, D] features."""
    f = np.asarray(feats, np.float32)[speech_frames(samples, len(feats))]
    return np.concatenate([f.mean(0), f.std(0)]).astype(np.float32)


class EmotionProbe:
    """Standardise, then ``weight @ x + bias``; log-probabilities over ``n`` emotions (avitalk.vocab.EMOTIONS)."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
        self.mean, self.scale = mean.float(), scale.float()
        self.weight, self.bias = weight.float(), bias.float()

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def log_probs(self, stats) -> torch.Tensor:
        """[B, E] log-probabilities for [B, 2 D] utterance statistics."""
        x = torch.as_tensor(np.asarray(stats, np.float32))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"utterance statistics of shape {tuple(x.shape)}; the probe reads [B, {self.dim}]")
        return torch.log_softmax(((x - self.mean) / self.scale) @ self.weight.T + self.bias, -1)

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, n_classes: int, sample_weight: np.ndarray | None = None,
            c: float = 0.01, max_iter: int = 500) -> "EmotionProbe":
        """Minimise sum_i w_i CE_i + |W|^2 / (2 c) (scikit-learn's C = ``c``; the bias is not penalised) by L-BFGS in
        float64. Rows with a label < 0 are left out."""
        x, y = np.asarray(x, np.float64), np.asarray(y)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
        keep = y >= 0
        x, y, w = x[keep], y[keep], w[keep]
        if len(y) == 0:
            raise ValueError("no labelled clips to fit the utterance probe on")
        mean, scale = x.mean(0), x.std(0) + 1e-3  # stays a normal float16 when the pipeline halves it
        xt = torch.as_tensor((x - mean) / scale)
        yt, wt = torch.as_tensor(y, dtype=torch.long), torch.as_tensor(w)
        weight = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-7,
                                tolerance_change=1e-10, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            ce = torch.nn.functional.cross_entropy(xt @ weight.T + bias, yt, reduction="none")
            loss = (wt * ce).sum() + weight.square().sum() / (2 * c)
            loss.backward()
            return loss

        opt.step(closure)
        return cls(torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(scale, dtype=torch.float32),
                   weight.detach().float(), bias.detach().float())

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        from avitalk.io import atomic_path

        with atomic_path(Path(path)) as tmp:
            save_file({"mean": self.mean.contiguous(), "scale": self.scale.contiguous(),
                       "weight": self.weight.contiguous(), "bias": self.bias.contiguous()}, str(tmp))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EmotionProbe":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            s = load_file(str(path))
            return cls(s["mean"], s["scale"], s["weight"], s["bias"])
        except (KeyError, OSError, RuntimeError, SafetensorError) as e:
            raise CheckpointError(f"{path}: not an utterance probe ({e})") from e


def fit_probe(bank, c: float = 0.01, progress: bool = False) -> EmotionProbe:
    """The probe for a FeatureBank: the main corpus clean, the real sources clean and through every augmented copy,
    each corpus weighing as much as the other in all; the speech span read from each clip's audio."""
    from tqdm import tqdm

    from avitalk import audio as audio_io
    from avitalk.vocab import EMOTIONS

    rows, labels, real = [], [], []
    for i, c_ in enumerate(tqdm(bank.clips, desc="stage1 utterance probe", disable=not progress or None)):
        samples = audio_io.load(Path(bank.roots[i]) / c_.audio).samples
        vs = bank.variants[i] if bank.real[i] else bank.variants[i][:1]
        for f in vs:
            rows.append(utterance_stats(f, samples))
            labels.append(EMOTIONS.index(c_.emotion) if c_.emotion in EMOTIONS else -100)
            real.append(bool(bank.real[i]))
    real = np.asarray(real)
    w = np.ones(len(rows))
    if real.any() and (~real).any():
        w[real] = (~real).sum() / real.sum()
    return EmotionProbe.fit(np.stack(rows), np.asarray(labels), len(EMOTIONS), w, c=c)
