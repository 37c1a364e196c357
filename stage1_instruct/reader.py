"""The emotion reader: one object that reads the speaker's emotion from the voice, with probabilities that mean what
they say, and that names an emotion only when it hears one.

Input: a clip's utterance statistics (:func:`utterance_stats`: the mean and standard deviation, over the speech, of
every channel stage 1 reads). Output: calibrated probabilities over :data:`avitalk.vocab.EMOTIONS`
(:meth:`EmotionReader.probs`) and the emotion an instruction should name (:meth:`EmotionReader.decide`: the most
likely one when its probability reaches :attr:`EmotionReader.threshold`, else neutral).

Inside: a multinomial logistic regression on the standardised statistics with an L2 penalty, fitted on SynthTalk and
on real speech (acted emotional speech and plain read speech of many speakers, clean and through augmented copies);
a temperature and the threshold fitted on speakers the regression never heard (``scripts/voice_folds.py``;
docs/reading-the-voice.md). Stored in ``reader.safetensors``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from avitalk.errors import CheckpointError
from avitalk.types import FEATURE_RATE, SAMPLE_RATE

READER_FILE = "reader.safetensors"
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


class EmotionReader:
    """Standardise, ``weight @ x + bias``, divide by ``temperature``: calibrated log-probabilities over the emotions;
    :meth:`decide` names the most likely emotion when its probability reaches ``threshold``, else neutral."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 temperature: float = 1.0, threshold: float = 0.0):
        self.mean, self.scale = mean.float(), scale.float()
        self.weight, self.bias = weight.float(), bias.float()
        self.temperature, self.threshold = float(temperature), float(threshold)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def logits(self, stats) -> torch.Tensor:
        """[B, E] the regression's raw logits for [B, 2 D] utterance statistics."""
        x = torch.as_tensor(np.asarray(stats, np.float32))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"utterance statistics of shape {tuple(x.shape)}; the reader reads [B, {self.dim}]")
        return ((x - self.mean) / self.scale) @ self.weight.T + self.bias

    def log_probs(self, stats) -> torch.Tensor:
        """[B, E] calibrated log-probabilities."""
        return torch.log_softmax(self.logits(stats) / max(self.temperature, 1e-6), -1)

    def probs(self, stats) -> torch.Tensor:
        return self.log_probs(stats).exp()

    def decide(self, probs: torch.Tensor) -> torch.Tensor:
        """[B] the emotion (index) an instruction should name: the most likely one when it reaches the threshold,
        else neutral."""
        from avitalk.vocab import EMOTIONS

        p, e = probs.max(-1)
        return torch.where(p >= self.threshold, e, torch.full_like(e, EMOTIONS.index("neutral")))

    def vote_log_probs(self, stats) -> torch.Tensor:
        """[B, E] what guides the instruction's emotion word: the calibrated log-probabilities where the reader names
        an emotion; where it does not (below the threshold), all the weight on neutral."""
        from avitalk.vocab import EMOTIONS

        lp = self.log_probs(stats)
        unsure = self.decide(lp.exp()) != lp.argmax(-1)
        neutral = torch.full_like(lp, -30.0)
        neutral[:, EMOTIONS.index("neutral")] = 0.0
        return torch.where(unsure[:, None], neutral, lp)

    # ---------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, n_classes: int, sample_weight: np.ndarray | None = None,
            c: float = 0.01, max_iter: int = 500) -> "EmotionReader":
        """Minimise sum_i w_i CE_i + |W|^2 / (2 c) (scikit-learn's C = ``c``; the bias is not penalised) by L-BFGS in
        float64. Rows with a label < 0 are left out. Temperature 1, threshold 0 (:meth:`calibrate` sets them)."""
        x, y = np.asarray(x, np.float64), np.asarray(y)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
        keep = y >= 0
        x, y, w = x[keep], y[keep], w[keep]
        if len(y) == 0:
            raise ValueError("no labelled clips to fit the emotion reader on")
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

    def calibrated(self, temperature: float, threshold: float) -> "EmotionReader":
        """The same regression with another temperature and threshold (fitted on held-out speakers)."""
        return EmotionReader(self.mean, self.scale, self.weight, self.bias, temperature, threshold)

    # ---------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        from avitalk.io import atomic_path

        t = {k: getattr(self, k).contiguous() for k in ("mean", "scale", "weight", "bias")}
        t["temperature"] = torch.tensor(self.temperature, dtype=torch.float64)  # float64: kept exact when the
        t["threshold"] = torch.tensor(self.threshold, dtype=torch.float64)  # pipeline halves its float32 weights
        with atomic_path(Path(path)) as tmp:
            save_file(t, str(tmp))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EmotionReader":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            s = load_file(str(path))
            r = cls(*(s[k] for k in ("mean", "scale", "weight", "bias")), float(s["temperature"]),
                    float(s["threshold"]))
            if r.weight.shape[1] != r.dim or r.bias.shape[0] != r.weight.shape[0]:
                raise ValueError("its weights do not match its statistics")
            return r
        except (KeyError, OSError, RuntimeError, ValueError, SafetensorError) as e:
            raise CheckpointError(f"{path}: not an emotion reader ({e})") from e


# -------------------------------------------------------------------------------------------- calibration
def softmax(logits: np.ndarray, t: float = 1.0) -> np.ndarray:
    """softmax(logits / t) over the last axis, in float64."""
    z = np.asarray(logits, np.float64) / t
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels) -> float:
    """The temperature T (0.25-20, log grid) that minimises the negative log-likelihood of softmax(logits / T)."""
    y = np.asarray(labels)
    grid = np.exp(np.linspace(np.log(0.25), np.log(20.0), 121))
    nll = [-np.log(softmax(logits, t)[np.arange(len(y)), y] + 1e-12).mean() for t in grid]
    return float(grid[int(np.argmin(nll))])


THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(20))  # 0.0 .. 0.95
MIN_PRECISION = 0.85  # of the instructions that name an emotion, at least this share name the right one


def decide_np(p: np.ndarray, threshold: float) -> np.ndarray:
    """:meth:`EmotionReader.decide` on a numpy [N, E] probability array."""
    from avitalk.vocab import EMOTIONS

    return np.where(p.max(1) >= threshold, p.argmax(1), EMOTIONS.index("neutral"))


def choose_threshold(p: np.ndarray, y: np.ndarray, corpus: np.ndarray) -> float:
    """The rule the README states: among the thresholds whose instructions that name an emotion (not neutral) name the
    right one at least :data:`MIN_PRECISION` of the time, the one with the best accuracy averaged over the corpora
    (each corpus counts once however many clips it has); when none reaches that precision, the most precise."""
    from avitalk.vocab import EMOTIONS

    neutral = EMOTIONS.index("neutral")
    names = sorted(set(np.asarray(corpus).tolist()))
    best, best_key = 0.0, None
    for t in THRESHOLDS:
        d = decide_np(p, t)
        named = d != neutral
        prec = float((d[named] == y[named]).mean()) if named.any() else 1.0
        acc = float(np.mean([(d[corpus == n] == y[corpus == n]).mean() for n in names]))
        key = (prec >= MIN_PRECISION, acc if prec >= MIN_PRECISION else prec)
        if best_key is None or key > best_key:
            best, best_key = float(t), key
    return best


def bank_rows(bank, clean_only: bool = False, progress: bool = False) -> dict[str, np.ndarray]:
    """The reader's rows of a stage-1 FeatureBank: each clip's utterance statistics, the main corpus's clean, the real
    sources' clean and through every augmented copy (``clean_only``: one row a clip), with labels (-100: none), which
    rows are real speech, and each row's source folder (its corpus)."""
    from tqdm import tqdm

    from avitalk import audio as audio_io
    from avitalk.vocab import EMOTIONS

    rows, labels, real, corpus = [], [], [], []
    for i, clip in enumerate(tqdm(bank.clips, desc="stage1 emotion reader", disable=not progress or None)):
        samples = audio_io.load(Path(bank.roots[i]) / clip.audio).samples
        for f in bank.variants[i] if bank.real[i] and not clean_only else bank.variants[i][:1]:
            rows.append(utterance_stats(f, samples))
            labels.append(EMOTIONS.index(clip.emotion) if clip.emotion in EMOTIONS else -100)
            real.append(bool(bank.real[i]))
            corpus.append(str(bank.roots[i]))
    return {"x": np.stack(rows), "y": np.asarray(labels), "real": np.asarray(real), "corpus": np.asarray(corpus)}


def fit_reader(x: np.ndarray, y: np.ndarray, real: np.ndarray, c: float = 0.01) -> EmotionReader:
    """The reader's regression: real speech weighted so that it counts as much as the main corpus (SynthTalk) in all.
    Temperature 1 and threshold 0 until :func:`calibrate`."""
    from avitalk.vocab import EMOTIONS

    real = np.asarray(real, bool)
    w = np.ones(len(y))
    if real.any() and (~real).any():
        w[real] = (~real).sum() / real.sum()
    return EmotionReader.fit(x, y, len(EMOTIONS), w, c=c)


def calibrate(reader: EmotionReader, x: np.ndarray, y: np.ndarray, corpus: np.ndarray) -> EmotionReader:
    """The reader with its temperature and threshold fitted on held-out clips (speakers it never heard)."""
    keep = np.asarray(y) >= 0
    x, y, corpus = np.asarray(x)[keep], np.asarray(y)[keep], np.asarray(corpus)[keep]
    with torch.no_grad():
        z = reader.logits(x).double().numpy()
    t = fit_temperature(z, y)
    return reader.calibrated(t, choose_threshold(softmax(z, t), y, corpus))
