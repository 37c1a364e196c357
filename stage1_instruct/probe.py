"""The utterance probe: a second, simple opinion on the speaker's emotion beside the Q-Former's emotion head.

A multinomial logistic regression on the mean and standard deviation over the speech (the clip's
:func:`avitalk.audio.speech_span`, 0.1 s margins: how the recording was cut does not matter) of every channel stage 1
reads, standardised, with a strong L2 penalty. On its own it reads about what the head reads; the two disagree on
different clips, so stage 1 multiplies their probabilities (``stage1.utterance_probe`` is the probe's exponent) before
the emotion word is chosen (README "Real speech", the utterance probe). It is fitted in seconds after the Q-Former
(``stage1_instruct.train``) on the same clips.

How it is made (``stage1.train.probe_experts``), from the main corpus (SynthTalk) clean and real speech clean and
through its augmented copies:

- ``joint``: one regression on both corpora, weighted equally.
- ``main`` (the default): the joint regression, plus the main corpus's own regression for speech that lies where the
  main corpus lies (:class:`SubspaceGate`: a clip's distance from the principal subspace of the main corpus's
  statistics, under the 99.5th percentile of the main corpus's own distances). The two corpora pull one regression two
  ways; this reads SynthTalk with SynthTalk's regression and leaves every other voice to the joint one.
- ``corpus``: one regression per corpus mixed by a learned two-class gate. Measured and not recommended: with one real
  corpus the gate learns "that corpus or not", and real recordings of other corpora go to the SynthTalk regression.

A :class:`CorpusProbe` mixes the experts: p(e | x) = sum_k gate_k(x) expert_k(e | x). Stored in ``probe.safetensors``
(README "Real speech", the utterance probe).
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
GATE_C = 0.001  # the learned gate's inverse L2 strength (probe_experts: corpus)
SUBSPACE_DIM = 64  # the main corpus's principal components the subspace gate keeps
SUBSPACE_QUANTILE = 0.995  # the gate's threshold: this quantile of the main corpus's own distances
SUBSPACE_SOFTNESS = 0.02  # the gate's logistic width, as a share of the threshold


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


class _Standardised:
    """What both the probe and the gate do first: check [B, 2 D] statistics and standardise them."""

    mean: torch.Tensor
    scale: torch.Tensor

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def standardised(self, stats) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(stats, np.float32))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"utterance statistics of shape {tuple(x.shape)}; the probe reads [B, {self.dim}]")
        return (x - self.mean) / self.scale


class EmotionProbe(_Standardised):
    """Standardise, then ``weight @ x + bias``; log-probabilities over ``n`` emotions (avitalk.vocab.EMOTIONS)."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
        self.mean, self.scale = mean.float(), scale.float()
        self.weight, self.bias = weight.float(), bias.float()

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])

    def log_probs(self, stats) -> torch.Tensor:
        """[B, E] log-probabilities for [B, 2 D] utterance statistics."""
        return torch.log_softmax(self.standardised(stats) @ self.weight.T + self.bias, -1)

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
            gate = SubspaceGate.from_tensors(s, "gate.") if "gate.basis" in s else cls.from_tensors(s, "gate.")
            probe = CorpusProbe(gate, [cls.from_tensors(s, f"expert{k}.") for k in range(gate.n_out)])
            if any(e.dim != gate.dim or e.weight.shape[0] != probe.experts[0].weight.shape[0] for e in probe.experts):
                raise ValueError("its gate and experts do not match")
            return probe
        except (KeyError, OSError, RuntimeError, ValueError, SafetensorError) as e:
            raise CheckpointError(f"{path}: not an utterance probe ({e})") from e


class SubspaceGate(_Standardised):
    """Is this clip's speech where the main corpus's speech lies? Standardise, take the root mean square of what the
    main corpus's first ``k`` principal components leave unexplained (its distance from their subspace), and compare
    it with ``threshold`` (a high quantile of the main corpus's own distances): [B, 2] log-probabilities of (inside,
    outside), a logistic of width ``softness`` around the threshold. One-class: it needs no example of the voices it
    sends elsewhere, so voices of corpora never heard go to the joint regression rather than to the main corpus's."""

    n_out = 2

    def __init__(self, mean, scale, center, basis, threshold, softness):
        self.mean, self.scale, self.center, self.basis = mean.float(), scale.float(), center.float(), basis.float()
        self.threshold, self.softness = threshold.float().reshape(()), softness.float().reshape(())

    def distance(self, stats) -> torch.Tensor:
        """[B] the distance from the main corpus's subspace (about 1 for unrelated speech, lower inside)."""
        z = self.standardised(stats) - self.center
        r = z - (z @ self.basis) @ self.basis.T
        return r.square().mean(1).sqrt()

    def log_probs(self, stats) -> torch.Tensor:
        a = (self.threshold - self.distance(stats)) / (self.softness * self.threshold)
        return torch.stack([torch.nn.functional.logsigmoid(a), torch.nn.functional.logsigmoid(-a)], 1)

    @classmethod
    def fit(cls, x: np.ndarray, k: int | None = None, quantile: float = SUBSPACE_QUANTILE,
            softness: float = SUBSPACE_SOFTNESS) -> "SubspaceGate":
        """The gate of the main corpus's [N, 2 D] statistics ``x`` (``k``: SUBSPACE_DIM when not given)."""
        k = SUBSPACE_DIM if k is None else int(k)
        x = np.asarray(x, np.float64)
        mean, scale = x.mean(0), x.std(0) + 1e-3
        z = (x - mean) / scale
        center = z.mean(0)
        _, _, vt = np.linalg.svd(z - center, full_matrices=False)
        basis = vt[: min(k, len(vt))].T
        gate = cls(*(torch.as_tensor(a, dtype=torch.float32) for a in (mean, scale, center, basis)),
                   torch.tensor(1.0), torch.tensor(float(softness)))
        gate.threshold = torch.quantile(gate.distance(x.astype(np.float32)), float(quantile))
        return gate

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        return {prefix + k: getattr(self, k).contiguous()
                for k in ("mean", "scale", "center", "basis", "threshold", "softness")}

    @classmethod
    def from_tensors(cls, s: dict, prefix: str = "") -> "SubspaceGate":
        return cls(*(s[prefix + k] for k in ("mean", "scale", "center", "basis", "threshold", "softness")))


class CorpusProbe:
    """:class:`EmotionProbe` experts (the main corpus's first) mixed by ``gate`` (an EmotionProbe over the corpora, or a
    :class:`SubspaceGate`): p(e | x) = sum_k gate_k(x) expert_k(e | x). Reads like an EmotionProbe."""

    def __init__(self, gate: "EmotionProbe | SubspaceGate", experts: list[EmotionProbe]):
        self.gate, self.experts = gate, list(experts)

    @property
    def dim(self) -> int:
        return self.gate.dim

    def corpus_log_probs(self, stats) -> torch.Tensor:
        """[B, K] the gate's log-probabilities of each expert."""
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


def fit_probe(bank, c: float = 0.01, experts: str = "joint", progress: bool = False) -> "EmotionProbe | CorpusProbe":
    """The probe for a FeatureBank (``experts``: joint / main / corpus, see the module), the speech span read from
    each clip's audio: the main corpus clean, the real sources clean and through every augmented copy. With one corpus
    only: one regression whatever ``experts`` says."""
    from tqdm import tqdm

    from avitalk import audio as audio_io
    from avitalk.config import CHOICES
    from avitalk.vocab import EMOTIONS

    kinds = CHOICES["stage1.train.probe_experts"]
    if experts not in kinds:
        raise ValueError(f"probe experts {experts!r}: one of {', '.join(kinds)}")
    rows, labels, real, clean = [], [], [], []
    for i, c_ in enumerate(tqdm(bank.clips, desc="stage1 utterance probe", disable=not progress or None)):
        samples = audio_io.load(Path(bank.roots[i]) / c_.audio).samples
        # the main corpus's augmented copies are read by the learned gate only
        for j, f in enumerate(bank.variants[i] if bank.real[i] or experts == "corpus" else bank.variants[i][:1]):
            rows.append(utterance_stats(f, samples))
            labels.append(EMOTIONS.index(c_.emotion) if c_.emotion in EMOTIONS else -100)
            real.append(bool(bank.real[i]))
            clean.append(j == 0)
    x, y, real, clean = np.stack(rows), np.asarray(labels), np.asarray(real), np.asarray(clean)
    emo = real | clean  # what reads the emotion: the main corpus clean, real speech clean and augmented
    if not (real.any() and (~real).any()):
        return EmotionProbe.fit(x[emo], y[emo], len(EMOTIONS), c=c)
    main = ~real & clean
    if experts == "corpus":
        w = np.where(real, (~real).sum() / real.sum(), 1.0)
        gate = EmotionProbe.fit(x, real.astype(np.int64), 2, w, c=GATE_C)
        return CorpusProbe(gate, [EmotionProbe.fit(x[m], y[m], len(EMOTIONS), c=c) for m in (main, real)])
    w = np.where(real, main.sum() / real.sum(), 1.0)
    joint = EmotionProbe.fit(x[emo], y[emo], len(EMOTIONS), w[emo], c=c)
    if experts == "joint":
        return joint
    return CorpusProbe(SubspaceGate.fit(x[main]), [EmotionProbe.fit(x[main], y[main], len(EMOTIONS), c=c), joint])
