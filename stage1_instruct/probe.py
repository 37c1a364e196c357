"""The utterance probe: a second, simple opinion on the speaker's emotion beside the Q-Former's emotion head.

A multinomial logistic regression on the mean and standard deviation over the speech (the clip's
:func:`avitalk.audio.speech_span`, 0.1 s margins: how the recording was cut does not matter) of every channel stage 1
reads, standardised, with a strong L2 penalty. On its own it reads about what the head reads; the two disagree on
different clips, so stage 1 multiplies their probabilities (``stage1.utterance_probe`` is the probe's exponent) before
the emotion word is chosen (README "Real speech", the utterance probe). It is fitted in seconds after the Q-Former
(``stage1_instruct.train``) on the same clips.

The probe is fitted on the main corpus (SynthTalk) clean and on real speech clean and through its augmented copies,
the two corpora weighted equally. ``stage1.train.probe_per_corpus`` fits a :class:`CorpusProbe` instead: one
regression per corpus on its own clips, mixed by a two-class regression that tells the corpora apart (the gate). Each
corpus is then read better (SynthTalk and RAVDESS alike), but the gate learns "RAVDESS or not" rather than "espeak or
human": real recordings of other corpora go to the SynthTalk expert, which reads them wrong and sure of itself, so it
is off by default (README "Real speech", the utterance probe). Stored in ``probe.safetensors`` (float32).
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
GATE_C = 0.001  # the gate's inverse L2 strength: espeak and real voices are told apart at any C; strong keeps it smooth


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

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        return {prefix + k: getattr(self, k).contiguous() for k in ("mean", "scale", "weight", "bias")}

    @classmethod
    def from_tensors(cls, s: dict, prefix: str = "") -> "EmotionProbe":
        return cls(*(s[prefix + k] for k in ("mean", "scale", "weight", "bias")))

    def save(self, path: str | os.PathLike) -> None:
        _save(self.tensors(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EmotionProbe | CorpusProbe":
        """The probe in ``path``: one regression, or a :class:`CorpusProbe` (its tensors prefixed ``gate.`` and
        ``expert<k>.``)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            s = load_file(str(path))
            if "gate.mean" not in s:
                return cls.from_tensors(s)
            gate = cls.from_tensors(s, "gate.")
            probe = CorpusProbe(gate, [cls.from_tensors(s, f"expert{k}.") for k in range(gate.weight.shape[0])])
            if any(e.dim != gate.dim or e.weight.shape[0] != probe.experts[0].weight.shape[0] for e in probe.experts):
                raise ValueError("its gate and experts do not match")
            return probe
        except (KeyError, OSError, RuntimeError, ValueError, SafetensorError) as e:
            raise CheckpointError(f"{path}: not an utterance probe ({e})") from e


class CorpusProbe:
    """One :class:`EmotionProbe` per corpus (``experts``, the main corpus first), mixed by ``gate`` (an EmotionProbe
    over the corpora): p(e | x) = sum_k gate_k(x) expert_k(e | x). Reads like an EmotionProbe."""

    def __init__(self, gate: EmotionProbe, experts: list[EmotionProbe]):
        self.gate, self.experts = gate, list(experts)

    @property
    def dim(self) -> int:
        return self.gate.dim

    def corpus_log_probs(self, stats) -> torch.Tensor:
        """[B, K] the gate's log-probabilities of each corpus."""
        return self.gate.log_probs(stats)

    def log_probs(self, stats) -> torch.Tensor:
        g = self.gate.log_probs(stats)  # [B, K]
        e = torch.stack([p.log_probs(stats) for p in self.experts], 1)  # [B, K, E]
        return torch.logsumexp(g[..., None] + e, 1)

    def save(self, path: str | os.PathLike) -> None:
        t = self.gate.tensors("gate.")
        for k, p in enumerate(self.experts):
            t.update(p.tensors(f"expert{k}."))
        _save(t, path)


def _save(tensors: dict, path: str | os.PathLike) -> None:
    from safetensors.torch import save_file

    from avitalk.io import atomic_path

    with atomic_path(Path(path)) as tmp:
        save_file(tensors, str(tmp))


def fit_probe(bank, c: float = 0.01, per_corpus: bool = False, progress: bool = False) -> "EmotionProbe | CorpusProbe":
    """The probe for a FeatureBank, the speech span read from each clip's audio: the main corpus clean, the real
    sources clean and through every augmented copy. With real sources and ``per_corpus``: a :class:`CorpusProbe`
    (one regression per corpus on its own clips; the gate on both corpora, clean and augmented, weighted equally);
    otherwise one regression on all of them, each corpus weighing as much as the other in all."""
    from tqdm import tqdm

    from avitalk import audio as audio_io
    from avitalk.vocab import EMOTIONS

    rows, labels, real, clean = [], [], [], []
    for i, c_ in enumerate(tqdm(bank.clips, desc="stage1 utterance probe", disable=not progress or None)):
        samples = audio_io.load(Path(bank.roots[i]) / c_.audio).samples
        for j, f in enumerate(bank.variants[i]):
            rows.append(utterance_stats(f, samples))
            labels.append(EMOTIONS.index(c_.emotion) if c_.emotion in EMOTIONS else -100)
            real.append(bool(bank.real[i]))
            clean.append(j == 0)
    x, y, real, clean = np.stack(rows), np.asarray(labels), np.asarray(real), np.asarray(clean)
    emo = real | clean  # what reads the emotion: the main corpus clean, real speech clean and augmented
    if not (real.any() and (~real).any()):
        return EmotionProbe.fit(x[emo], y[emo], len(EMOTIONS), c=c)
    if not per_corpus:
        w = np.where(real, (~real & emo).sum() / real.sum(), 1.0)
        return EmotionProbe.fit(x[emo], y[emo], len(EMOTIONS), w[emo], c=c)
    experts = [EmotionProbe.fit(x[m], y[m], len(EMOTIONS), c=c) for m in (~real & clean, real)]
    w = np.where(real, (~real).sum() / real.sum(), 1.0)
    gate = EmotionProbe.fit(x, real.astype(np.int64), 2, w, c=GATE_C)
    return CorpusProbe(gate, experts)
