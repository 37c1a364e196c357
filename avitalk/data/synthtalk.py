"""SynthTalk: a synthetic emotional talking-face corpus whose ground truth is known exactly.

For each clip: an English sentence is spoken by espeak-ng with one of many voices (speaker-disjoint train / val /
test splits) and an emotion prosody profile (8 MEAD emotions x 3 intensities); the per-phoneme timing of the
synthesiser drives the mouth (phoneme -> viseme -> jaw opening and lip shapes, blended with Cohen-Massaro style
dominance functions so there are no square steps); the emotion drives facial action units with onset envelopes,
intensity scaling and loudness modulation; blinks and a per-speaker style (gains and biases) are added. Motion is a
:class:`~avitalk.types.FlameSequence` on the stand-in head (50 expression coefficients built through its
action-unit matrix + 3 jaw), and each clip gets several MeadText-style instruction paraphrases plus the structured
labels they were written from.

Everything is deterministic for a seed; generation runs in parallel processes, writes atomically and resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import DatasetError
from ..io import atomic_path, atomic_write_json, atomic_write_text
from ..types import MOTION_FPS, SAMPLE_RATE, FlameSequence
from ..vocab import EMOTIONS, load_vocabulary

log = logging.getLogger(__name__)
VERSION = 2  # 2: bilabial stops sealed before their release (STOP_CLOSURE_S), not after
MIN_SECONDS, MAX_SECONDS = 2.0, 6.0

# ------------------------------------------------------------------------------------------------- sentences
_SUBJECTS = [
    "The old man", "A young girl", "My brother", "The teacher", "Her mother", "The small dog", "A tall woman",
    "The farmer", "Our neighbour", "The pilot", "His sister", "The baker", "A quiet boy", "The doctor",
    "The captain", "My friend", "The driver", "Your cousin", "The artist", "A stranger",
]
_VERBS = [
    "carried", "painted", "found", "lost", "opened", "cleaned", "bought", "sold", "moved", "dropped", "fixed",
    "washed", "brought", "showed", "wrapped", "hid", "lifted", "pushed", "checked", "kept",
]
_OBJECTS = [
    "a red box", "the wooden chair", "an old map", "the blue kettle", "a heavy bag", "the silver key", "a thin book",
    "the broken clock", "a bright lamp", "the green coat", "a paper boat", "the brass bell", "a warm blanket",
    "the glass jar", "a long rope", "the tiny ring", "a clay pot", "the plastic cup", "a yellow kite",
    "the leather belt",
]
_PLACES = [
    "near the door", "in the garden", "before dinner", "after the storm", "by the river", "at the station",
    "on Monday", "under the bridge", "for the party", "in the morning", "behind the house", "at the market",
    "across the street", "late last night", "",
]
_CLAUSES = [
    "", "", "", "and then it started to rain", "but nobody noticed", "while everyone waited outside",
    "just as the bus arrived", "because the room was cold", "and walked slowly home",
]
_HANDWRITTEN = [
    "Kids are talking by the door.", "Dogs are sitting by the door.", "Please call me when you get home.",
    "The sun was warm on the old stone wall.", "We will meet again at noon tomorrow.",
    "She reads the paper every single morning.", "There is a letter waiting for you on the table.",
    "The train leaves from the second platform.", "I never thought it would end like this.",
    "Bring the chairs in before it gets dark.", "The soup is hot, so wait a minute.",
    "Nobody told me the shop was closed today.", "He keeps his tools in a metal box.",
    "The children painted the fence bright yellow.", "Turn left at the church and keep going.",
    "My phone was in my pocket the whole time.", "They moved to a small town by the sea.",
    "You can leave your coat on the hook.", "The music was far too loud for me.",
    "We planted three apple trees last spring.", "Her voice carried across the empty hall.",
    "The meeting has been moved to Friday.", "I found your keys under the sofa.",
    "The river rose quickly after the rain.", "Put the milk back in the fridge, please.",
    "The old bridge was closed for repairs.", "He whistled a tune as he worked.",
    "Our flight was delayed by two hours.", "The cat slept all afternoon in the sun.",
    "This is the last time I will ask you.",
]


def sentences(n: int = 400, seed: int = 12345) -> list[str]:
    """The built-in sentence list: hand-written sentences plus ``n`` from a small grammar (deterministic)."""
    rng = np.random.default_rng(seed)
    out = list(_HANDWRITTEN)
    seen = set(out)
    while len(out) < len(_HANDWRITTEN) + n:
        parts = [
            _SUBJECTS[rng.integers(len(_SUBJECTS))],
            _VERBS[rng.integers(len(_VERBS))],
            _OBJECTS[rng.integers(len(_OBJECTS))],
            _PLACES[rng.integers(len(_PLACES))],
        ]
        s = " ".join(p for p in parts if p)
        clause = _CLAUSES[rng.integers(len(_CLAUSES))]
        if clause:
            s += ", " + clause
        s += "."
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


# -------------------------------------------------------------------------------------------------- speakers
ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-us-nyc", "en-029")
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
    "Alicia", "Annie", "linda", "john", "david", "norbert", "michel",
)
_FEMALE = {"f1", "f2", "f3", "f4", "f5", "Alicia", "Annie", "linda"}
SPLIT_SPEAKERS = {"test": 12, "val": 12}  # the rest train


def _stable_hash(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "little")


@dataclass(frozen=True)
class Speaker:
    name: str  # espeak voice, e.g. "en-us+m3"
    gender: str
    split: str
    # style, fixed per speaker (derived from the name, the same in every corpus)
    pitch: float
    rate: float
    range: float
    jaw_gain: float
    lip_gain: float
    emo_gain: float
    smile_bias: float
    brow_bias: float
    blink_rate: float


def speakers() -> list[Speaker]:
    """All SynthTalk speakers with fixed speaker-disjoint splits (12 test, 12 val, the rest train)."""
    names = [f"{a}+{v}" for a in ACCENTS for v in VARIANTS]
    order = sorted(names, key=lambda n: _stable_hash("split:" + n))
    split = {}
    for i, n in enumerate(order):
        split[n] = "test" if i < SPLIT_SPEAKERS["test"] else "val" if i < sum(SPLIT_SPEAKERS.values()) else "train"
    out = []
    for n in names:
        r = np.random.default_rng(_stable_hash("style:" + n))
        variant = n.split("+")[1]
        out.append(
            Speaker(
                name=n,
                gender="female" if variant in _FEMALE else "male",
                split=split[n],
                pitch=float(r.uniform(-8, 8)),
                rate=float(r.uniform(0.9, 1.1)),
                range=float(r.uniform(-8, 8)),
                jaw_gain=float(r.uniform(0.8, 1.25)),
                lip_gain=float(r.uniform(0.8, 1.2)),
                emo_gain=float(r.uniform(0.85, 1.15)),
                smile_bias=float(r.uniform(0.0, 0.12)),
                brow_bias=float(r.uniform(-0.08, 0.08)),
                blink_rate=float(r.uniform(0.2, 0.4)),
            )
        )
    return out


# --------------------------------------------------------------------------------------- emotion: sound + face
INTENSITY_SCALE = {1: 0.5, 2: 0.75, 3: 1.0}
# espeak deltas at full intensity: rate factor, pitch (0-100 scale), range, volume factor, word gap (10 ms units)
PROSODY: dict[str, dict[str, float]] = {
    "neutral": dict(rate=1.0, pitch=0, range=0, volume=1.0, wordgap=0),
    "angry": dict(rate=1.12, pitch=8, range=30, volume=1.5, wordgap=0),
    "contempt": dict(rate=0.88, pitch=-4, range=-30, volume=0.85, wordgap=2),
    "disgusted": dict(rate=0.78, pitch=-12, range=25, volume=1.05, wordgap=1),
    "fear": dict(rate=1.25, pitch=22, range=-25, volume=0.8, wordgap=0),
    "happy": dict(rate=1.15, pitch=12, range=35, volume=1.2, wordgap=0),
    "sad": dict(rate=0.74, pitch=-14, range=-35, volume=0.65, wordgap=3),
    "surprised": dict(rate=0.95, pitch=30, range=60, volume=1.3, wordgap=1),
}
# facial action units per emotion at full intensity (EMFACS-style prototypes, on the stand-in's field names)
FACE: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"AU06_cheek_raise": 0.8, "AU12_lip_corner_pull": 1.0, "AU25_lips_part": 0.3},
    "sad": {"AU01_inner_brow_raise": 0.9, "AU04_brow_lower": 0.5, "AU15_lip_corner_depress": 0.8,
            "AU17_chin_raise": 0.4, "LID_upper_droop_outer": 0.6},
    "angry": {"AU04_brow_lower": 1.0, "AU05_upper_lid_raise": 0.4, "AU07_lid_tighten": 0.7,
              "AU23_lip_tighten": 0.6, "AU24_lip_press": 0.5, "AU10_upper_lip_raise": 0.3},
    "surprised": {"AU01_inner_brow_raise": 0.9, "AU02_outer_brow_raise": 1.0, "AU05_upper_lid_raise": 0.9,
                  "AU26_jaw_drop_soft": 0.6, "AU25_lips_part": 0.4},
    "fear": {"AU01_inner_brow_raise": 0.8, "AU02_outer_brow_raise": 0.6, "AU04_brow_lower": 0.5,
             "AU05_upper_lid_raise": 0.8, "AU20_lip_stretch": 0.8, "AU25_lips_part": 0.3, "AU07_lid_tighten": 0.2},
    "disgusted": {"AU09_nose_wrinkle": 0.9, "AU10_upper_lip_raise": 0.8, "AU15_lip_corner_depress": 0.5,
                  "AU16_lower_lip_depress": 0.4, "AU04_brow_lower": 0.4, "AU07_lid_tighten": 0.3},
    "contempt": {"ASYM_lip_corner_pull": 0.8, "AU14_dimpler": 0.6, "AU12_lip_corner_pull": 0.15},
}
EXTRA_JAW = {"surprised": 0.05, "fear": 0.02, "happy": 0.01}  # radians added to the mouth opening at full intensity
BLINK_FACTOR = {"fear": 1.8, "angry": 0.7, "surprised": 0.6, "sad": 0.8}

# ----------------------------------------------------------------------------------------- phonemes -> visemes
# espeak-ng English phoneme mnemonics (stress and length marks stripped) -> viseme(s); diphthongs get two
_VISEME_OF: dict[str, tuple[str, ...]] = {}
for _ph, _vis in {
    ("p", "b", "m"): ("VIS_MBP",),
    ("f", "v"): ("VIS_FV",),
    ("T", "D"): ("VIS_TH",),
    ("s", "z"): ("VIS_SZ",),
    ("S", "Z", "tS", "dZ"): ("VIS_SH",),
    ("l", "L"): ("VIS_L",),
    ("r", "w", "W", "r-"): ("VIS_WR",),
    ("t", "d", "n", "k", "g", "N", "h", "j", "x", "?", "t#", "d#"): ("VIS_IH",),
    ("a", "a#", "A", "A:", "A@", "&", "V", "0", "aa"): ("VIS_AA",),
    ("E", "e", "e@", "E2", "E@"): ("VIS_EE",),
    ("i", "i:", "I", "I2", "I#", "i@", "i@3", "y"): ("VIS_EE",),
    ("@", "3", "3:", "@L", "@2", "@5", "a2", "@r"): ("VIS_IH",),
    ("o", "O", "O:", "O@", "o@", "O2"): ("VIS_OH",),
    ("u", "u:", "U", "U@", "u@"): ("VIS_OO",),
    ("aI", "aI@", "aI3"): ("VIS_AA", "VIS_EE"),
    ("aU", "aU@"): ("VIS_AA", "VIS_OO"),
    ("oU", "o@", "@U"): ("VIS_OH", "VIS_OO"),
    ("eI", "eI@"): ("VIS_EE", "VIS_IH"),
    ("OI",): ("VIS_OH", "VIS_EE"),
    ("_", ";", "_:", "_!", "||", "|"): ("SIL",),
}.items():
    for _p in _ph:
        _VISEME_OF[_p] = _vis
JAW_OF = {  # mouth opening (radians) of each viseme before speaker gain and loudness
    "VIS_AA": 0.2, "VIS_EE": 0.1, "VIS_IH": 0.08, "VIS_OH": 0.15, "VIS_OO": 0.06, "VIS_FV": 0.035,
    "VIS_MBP": 0.0, "VIS_TH": 0.06, "VIS_SZ": 0.035, "VIS_SH": 0.06, "VIS_L": 0.09, "VIS_WR": 0.05, "SIL": 0.0,
}
_VOWELS = {"VIS_AA", "VIS_EE", "VIS_OH", "VIS_OO", "SIL"}
DOMINANCE = {"VIS_MBP": 3.0, "VIS_FV": 2.0, "VIS_OO": 1.3, "VIS_WR": 1.3, "SIL": 0.6}  # default 1.0


def _phoneme_core(name: str) -> str:
    """An espeak phoneme mnemonic without its stress and length marks ("'aI:" -> "aI")."""
    return name.strip().lstrip("'%,=").rstrip(":")


def phoneme_visemes(name: str) -> tuple[str, ...]:
    """Viseme(s) of an espeak phoneme mnemonic ("'aI" -> AA then EE); unknown symbols count as a neutral IH."""
    core = _phoneme_core(name)
    if core in _VISEME_OF:
        return _VISEME_OF[core]
    if core.rstrip(":;") in _VISEME_OF:
        return _VISEME_OF[core.rstrip(":;")]
    return ("SIL",) if not core else ("VIS_IH",)


# espeak's event for a stop marks its release (the energy rises within a few ms of it: measured on SynthTalk); the
# closure, silent or voiced, comes before it and is counted in the previous phoneme. Lips are sealed through a
# bilabial stop's closure and part at its release, so /b p/ get the STOP_CLOSURE_S before their event (until
# 2026-11-27 they got the interval after it: the sealed lips came 40-60 ms late, while the next vowel sounded)
STOP_CLOSURE_S = 0.06
_BILABIAL_STOPS = ("b", "p")


def _segments(phonemes: list[tuple[str, float]], duration: float) -> list[tuple[str, float, float]]:
    segs = []
    for i, (ph, t0) in enumerate(phonemes):
        t1 = phonemes[i + 1][1] if i + 1 < len(phonemes) else min(duration, t0 + 0.15)
        t1 = max(t1, t0 + 0.01)
        if _phoneme_core(ph) in _BILABIAL_STOPS:
            t0, t1 = t0 - STOP_CLOSURE_S, t0 + 0.01
        vis = phoneme_visemes(ph)
        step = (t1 - t0) / len(vis)
        for k, v in enumerate(vis):
            segs.append((v, t0 + k * step, t0 + (k + 1) * step))
    # rest at both ends
    first = segs[0][1] if segs else duration
    return [("SIL", -0.3, max(first, 0.0))] + segs + [("SIL", segs[-1][2] if segs else 0.0, duration + 0.3)]


def loudness_envelope(samples: np.ndarray, sr: int, T: int, fps: float = MOTION_FPS) -> np.ndarray:
    """RMS in 40 ms windows at the motion frame times, normalised to [0, 1] by the clip's 95th percentile."""
    win = int(0.04 * sr)
    centres = ((np.arange(T) + 0.5) / fps * sr).astype(int)
    sq = np.concatenate([[0.0], np.cumsum(samples.astype(np.float64) ** 2)])
    lo = np.clip(centres - win // 2, 0, len(samples))
    hi = np.clip(centres + win // 2, 0, len(samples))
    rms = np.sqrt((sq[hi] - sq[lo]) / np.maximum(hi - lo, 1))
    ref = np.percentile(rms, 95) if np.any(rms > 0) else 1.0
    return np.clip(rms / max(ref, 1e-8), 0, 1).astype(np.float32)


def _smooth(x: np.ndarray, sigma_frames: float) -> np.ndarray:
    if sigma_frames <= 0:
        return x
    r = int(np.ceil(3 * sigma_frames))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_frames) ** 2)
    k /= k.sum()
    pad = np.pad(x, [(r, r)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    if x.ndim == 1:
        return np.convolve(pad, k, mode="valid")
    return np.stack([np.convolve(pad[:, j], k, mode="valid") for j in range(x.shape[1])], 1)


def speech_motion(
    phonemes: list[tuple[str, float]], duration: float, envelope: np.ndarray, speaker: Speaker, T: int, fps: float = MOTION_FPS
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Jaw opening [T] (radians) and viseme activations {viseme: [T]} from phoneme timing (dominance blending)."""
    segs = _segments(phonemes, duration)
    t = np.arange(T) / fps
    keys = [k for k in JAW_OF if k != "SIL"]
    targets = np.zeros((len(segs), 1 + len(keys)))
    dom = np.zeros((len(segs), T))
    for i, (v, t0, t1) in enumerate(segs):
        targets[i, 0] = JAW_OF[v]
        if v != "SIL":
            targets[i, 1 + keys.index(v)] = 1.0
        c = 0.5 * (t0 + t1)
        tau = 0.5 * (t1 - t0) + 0.02
        shape = 1.5 if v in _VOWELS else 2.5  # consonants: strong at their centre, falling off fast
        dom[i] = DOMINANCE.get(v, 1.0) * np.exp(-np.abs((t - c) / tau) ** shape)
    w = dom / np.maximum(dom.sum(0, keepdims=True), 1e-9)
    blend = w.T @ targets  # [T, 1 + visemes]
    blend = _smooth(blend, 0.8)
    gate = _smooth(0.08 + 0.95 * envelope**0.8, 0.7)  # loud syllables open wider; silence lets the mouth rest
    jaw = blend[:, 0] * speaker.jaw_gain * gate
    acts = {k: np.clip(blend[:, 1 + j], 0, 1) * speaker.lip_gain * (0.3 + 0.75 * gate) for j, k in enumerate(keys)}
    return jaw.astype(np.float32), acts


def bilabial_closure(vis: dict[str, np.ndarray]) -> np.ndarray:
    """How closed the lips must be per frame (0..1): 1 around the middle of each /b p m/, where the lips touch
    whatever the jaw, the emotion or a neighbouring vowel would otherwise do (real lips seal for a bilabial stop)."""
    m = vis.get("VIS_MBP")
    if m is None or not np.any(m > 0):
        return np.zeros(len(next(iter(vis.values()))) if vis else 0, np.float32)
    share = m / max(float(np.max(m)), 1e-6) if np.max(m) > 1 else m
    return np.clip((share - 0.1) / 0.25, 0, 1).astype(np.float32)


LIP_PARTING = ("AU25_lips_part", "AU26_jaw_drop_soft", "AU27_mouth_stretch", "AU16_lower_lip_depress",
               "AU10_upper_lip_raise", "AU20_lip_stretch")


def emotion_motion(
    emotion: str, intensity: int, speaker: Speaker, envelope: np.ndarray, T: int, rng: np.random.Generator,
    fps: float = MOTION_FPS,
) -> tuple[dict[str, np.ndarray], dict[str, float], np.ndarray]:
    """AU activations {name: [T]}, their clip-mean strengths (the labels), and extra jaw opening [T]."""
    s = INTENSITY_SCALE[int(intensity)] * speaker.emo_gain
    t = np.arange(T) / fps
    dur = T / fps
    onset = rng.uniform(0.15, 0.5)
    env = np.clip(0.3 + 0.7 * t / onset, 0, 1) * np.clip(1 - 0.25 * (t - (dur - 0.4)) / 0.4, 0.75, 1)
    slow = _smooth(envelope, 6.0)
    drift = _smooth(rng.normal(0, 1, T), 10.0)
    drift = 0.06 * drift / max(np.abs(drift).max(), 1e-6)
    acts: dict[str, np.ndarray] = {}
    labels: dict[str, float] = {}
    for au, a in FACE[emotion].items():
        gain = a * s * rng.uniform(0.9, 1.1)
        curve = gain * env * (1 + 0.25 * (slow - slow.mean())) * (1 + drift)
        acts[au] = np.clip(curve, 0, 1.2).astype(np.float32)
        labels[au] = round(float(acts[au].mean()), 3)
    extra_jaw = np.full(T, EXTRA_JAW.get(emotion, 0.0) * s, np.float32) * env
    # speaker style biases (present whatever the emotion)
    acts["AU12_lip_corner_pull"] = acts.get("AU12_lip_corner_pull", np.zeros(T, np.float32)) + speaker.smile_bias
    brow = "AU01_inner_brow_raise" if speaker.brow_bias > 0 else "AU04_brow_lower"
    acts[brow] = acts.get(brow, np.zeros(T, np.float32)) + abs(speaker.brow_bias)
    # blinks: a Poisson process, ~150 ms each
    rate = speaker.blink_rate * BLINK_FACTOR.get(emotion, 1.0)
    blink = np.zeros(T, np.float32)
    tb = rng.uniform(0.2, 1.5)
    while tb < dur:
        blink = np.maximum(blink, np.exp(-0.5 * ((t - tb) / rng.uniform(0.035, 0.05)) ** 2).astype(np.float32))
        tb += rng.exponential(1.0 / rate) + 0.3
    acts["AU43_eyes_closed"] = blink
    return acts, labels, extra_jaw


# --------------------------------------------------------------------------------------------- audio effects
def emotion_audio(x: np.ndarray, sr: int, emotion: str, intensity: int, rng: np.random.Generator) -> np.ndarray:
    """Cheap effects that make emotions easier to hear: tremolo (fear), darker tone (sad), drive (angry),
    roughness (disgusted), brighter tone (happy)."""
    s = INTENSITY_SCALE[int(intensity)]
    t = np.arange(len(x)) / sr
    if emotion == "fear":
        x = x * (1 - 0.35 * s * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(6, 8) * t)))
    elif emotion == "sad":
        a = np.exp(-2 * np.pi * (5000 - 3000 * s) / sr)  # one-pole low-pass
        from scipy.signal import lfilter

        x = lfilter([1 - a], [1, -a], x)
    elif emotion == "angry":
        g = 1 + 2.5 * s
        x = np.tanh(g * x) / np.tanh(g)
    elif emotion == "disgusted":  # a rough, creaky voice: fast amplitude flutter
        x = x * (1 - 0.3 * s * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(25, 32) * t)))
    elif emotion == "happy":  # brighter: pre-emphasis, loudness kept
        y = np.concatenate([[x[0]], x[1:] - 0.5 * s * x[:-1]])
        x = y * (np.abs(x).max() / max(np.abs(y).max(), 1e-9))
    return x.astype(np.float32)


# ------------------------------------------------------------------------------------------------- one clip
@dataclass(frozen=True)
class ClipSpec:
    index: int
    seed: int
    split: str
    speaker: str
    emotion: str
    intensity: int
    text: str

    @property
    def id(self) -> str:
        return f"st{self.index:06d}"


def plan(num_clips: int, seed: int, splits: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> list[ClipSpec]:
    """What each clip will be (split, speaker, emotion, intensity, sentence), deterministic for the seed."""
    rng = np.random.default_rng([seed, 0])
    spk = speakers()
    by_split = {s: [p.name for p in spk if p.split == s] for s in ("train", "val", "test")}
    sents = sentences()
    names = ("train", "val", "test")
    out = []
    for i in range(num_clips):
        split = names[int(rng.choice(3, p=np.asarray(splits) / sum(splits)))]
        pool = by_split[split]
        out.append(
            ClipSpec(
                index=i,
                seed=seed,
                split=split,
                speaker=pool[int(rng.integers(len(pool)))],
                emotion=EMOTIONS[int(rng.integers(len(EMOTIONS)))],
                intensity=int(rng.integers(1, 4)),
                text=sents[int(rng.integers(len(sents)))],
            )
        )
    return out


def make_clip(spec: ClipSpec, au_matrix: np.ndarray, au_names: list[str], n_paraphrases: int = 3) -> dict[str, Any]:
    """Synthesise one clip in memory: audio (16 kHz), FlameSequence and the manifest record (without paths)."""
    from ..audio import resample
    from .espeak import Utterance, synthesize

    rng = np.random.default_rng([spec.seed, spec.index, 1])
    spk = {s.name: s for s in speakers()}[spec.speaker]
    pro = PROSODY[spec.emotion]
    s = INTENSITY_SCALE[spec.intensity]
    params = dict(
        rate=int(round(165 * spk.rate * (1 + s * (pro["rate"] - 1)) * rng.uniform(0.95, 1.05))),
        pitch=int(np.clip(50 + spk.pitch + s * pro["pitch"] + rng.uniform(-3, 3), 0, 100)),
        range=int(np.clip(50 + spk.range + s * pro["range"], 0, 100)),
        volume=int(np.clip(100 * (1 + s * (pro["volume"] - 1)), 10, 200)),
        wordgap=int(round(s * pro["wordgap"])),
    )
    text = spec.text
    if spec.emotion == "surprised" and spec.intensity >= 2:
        text = text.rstrip(".") + "!"  # exclamatory intonation
    sents = sentences()
    utt = synthesize(text, spec.speaker, seed=spec.seed * 1_000_003 + spec.index, **params)
    for _ in range(4):  # keep clips within MIN..MAX_SECONDS: add a sentence to short ones, swap long ones
        if utt.duration < MIN_SECONDS:
            text = text + " " + sents[int(rng.integers(len(_HANDWRITTEN)))]
        elif utt.duration > MAX_SECONDS:
            text = sents[int(rng.integers(len(_HANDWRITTEN)))]
        else:
            break
        utt = synthesize(text, spec.speaker, seed=spec.seed * 1_000_003 + spec.index, **params)
    if utt.duration < 0.3:
        raise DatasetError(f"{spec.id}: espeak produced {utt.duration:.2f} s of audio for {text!r}")
    # real recordings start and end with pauses (RAVDESS: about a second before the first word); espeak's output
    # barely has any, so a model would never see the mouth rest through a long one: pad with silence
    pad_rng = np.random.default_rng([spec.seed, spec.index, 7])
    lead, trail = float(pad_rng.uniform(0.1, 1.0)), float(pad_rng.uniform(0.1, 0.8))
    n0, n1 = int(lead * utt.sample_rate), int(trail * utt.sample_rate)
    utt = Utterance(np.concatenate([np.zeros(n0, np.float32), utt.samples, np.zeros(n1, np.float32)]),
                    utt.sample_rate, [(p, t + n0 / utt.sample_rate) for p, t in utt.phonemes],
                    [t + n0 / utt.sample_rate for t in utt.words])
    x = emotion_audio(utt.samples, utt.sample_rate, spec.emotion, spec.intensity, rng)
    x = resample(x, utt.sample_rate, SAMPLE_RATE)
    x = np.clip(x, -1, 1).astype(np.float32)
    duration = len(x) / SAMPLE_RATE
    T = max(1, int(round(duration * MOTION_FPS)))
    envelope = loudness_envelope(x, SAMPLE_RATE, T)
    jaw, vis = speech_motion(utt.phonemes, duration, envelope, spk, T)
    acts, labels, extra_jaw = emotion_motion(spec.emotion, spec.intensity, spk, envelope, T, rng)
    closure = bilabial_closure(vis)
    # the emotion's own mouth opening (a surprised or fearful face parts the lips) follows the voice: full while
    # speaking, a fifth of it in pauses, so the mouth rests when the speaker is silent
    speaking = 0.2 + 0.8 * _smooth(np.clip(envelope / 0.1, 0, 1), 2.0)
    extra_jaw = extra_jaw * speaking
    A = np.zeros((T, len(au_names)), np.float32)
    for name, curve in vis.items():
        A[:, au_names.index(name)] += curve
    for name, curve in acts.items():
        A[:, au_names.index(name)] += curve * (speaking if name in LIP_PARTING else 1.0)
    for name in LIP_PARTING:  # at a bilabial nothing may hold the lips apart
        if name in au_names:
            A[:, au_names.index(name)] *= 1 - closure
    expression = A @ au_matrix
    jaw_pose = np.zeros((T, 3), np.float32)
    jaw_pose[:, 0] = (jaw + extra_jaw) * (1 - closure)
    vocab = load_vocabulary()
    label_acts = sorted(labels.items(), key=lambda kv: -kv[1])
    instructions = []
    for k in range(n_paraphrases * 3):
        txt = vocab.write(spec.emotion, spec.intensity, label_acts, spk.gender, np.random.default_rng([spec.seed, spec.index, 2, k]))
        if txt not in instructions:
            instructions.append(txt)
        if len(instructions) == n_paraphrases:
            break
    seq = FlameSequence(
        expression,
        jaw_pose,
        fps=MOTION_FPS,
        meta={"id": spec.id, "phonemes": [[p, round(t, 4)] for p, t in utt.phonemes], "text": text},
    )
    record = {
        "id": spec.id,
        "split": spec.split,
        "speaker": spec.speaker,
        "gender": spk.gender,
        "emotion": spec.emotion,
        "intensity": spec.intensity,
        "text": text,
        "duration": round(duration, 4),
        "num_frames": T,
        "instructions": instructions,
        "labels": {"emotion": spec.emotion, "intensity": spec.intensity, "action_units": dict(label_acts)},
        "espeak": params,
        "source": "synthtalk",
    }
    return {"audio": x, "sequence": seq, "record": record}


# ------------------------------------------------------------------------------------------ corpus on disk
_WORKER: dict[str, Any] = {}


def _init_worker(au_matrix: np.ndarray, au_names: list[str]) -> None:
    _WORKER["M"], _WORKER["names"] = au_matrix, au_names


def _write_clip(out: str, spec: ClipSpec) -> dict[str, Any]:
    import soundfile as sf

    root = Path(out)
    rec_path = root / "records" / f"{spec.id}.json"
    if rec_path.is_file():  # finished in an earlier run
        rec = json.loads(rec_path.read_text())
        if (root / rec["audio"]).is_file() and (root / rec["flame"]).is_file():
            return rec
    clip = make_clip(spec, _WORKER["M"], _WORKER["names"])
    rec = clip["record"]
    rec["audio"], rec["flame"] = f"audio/{spec.id}.wav", f"flame/{spec.id}.npz"
    with atomic_path(root / rec["audio"]) as tmp:
        sf.write(str(tmp), clip["audio"], SAMPLE_RATE, subtype="PCM_16", format="WAV")
    clip["sequence"].save(root / rec["flame"])
    atomic_write_json(rec_path, rec)  # written last: its presence means the clip is complete
    return rec


def _chunks(seq: list, n: int) -> Iterable[list]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _write_many(out: str, specs: list[ClipSpec]) -> list[dict[str, Any]]:
    return [_write_clip(out, s) for s in specs]


def generate(
    out: str | os.PathLike,
    num_clips: int,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write (or complete) a SynthTalk corpus: manifest.jsonl + audio/ + flame/ (+ records/, dataset.json)."""
    from tqdm import tqdm

    from ..flame.standin import AU_NAMES, standin_arrays

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    info_path = root / "dataset.json"
    info = {"name": "synthtalk", "version": VERSION, "seed": int(seed), "fps": MOTION_FPS, "sample_rate": SAMPLE_RATE}
    if info_path.is_file():
        old = json.loads(info_path.read_text())
        if any(old.get(k) != v for k, v in info.items()):
            raise DatasetError(f"{root}: holds a SynthTalk corpus made with {old}; refusing to mix it with {info} "
                               "(remove the folder or pick another --out to make a new one)")
    atomic_write_json(info_path, {**info, "num_clips": int(num_clips), "flame_model": "standin"})
    M = standin_arrays()[0]["au_to_expression"]
    specs = plan(num_clips, seed)
    workers = max(1, int(workers or os.cpu_count() or 1))
    records: list[dict[str, Any]] = []
    bar = tqdm(total=len(specs), unit="clip", desc="synthtalk", disable=not progress or None)
    if workers == 1:
        _init_worker(M, list(AU_NAMES))
        for s in specs:
            records.append(_write_clip(str(root), s))
            bar.update(1)
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(M, list(AU_NAMES))) as pool:
            futs = [pool.submit(_write_many, str(root), c) for c in _chunks(specs, 16)]
            for f in futs:
                recs = f.result()
                records.extend(recs)
                bar.update(len(recs))
    bar.close()
    records.sort(key=lambda r: r["id"])
    atomic_write_text(root / "manifest.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    return root / "manifest.jsonl"


def say(text: str, emotion: str = "happy", intensity: int = 3, speaker: str | None = None, seed: int = 0) -> dict[str, Any]:
    """One SynthTalk utterance of your sentence (default speaker: the first test-split speaker, unseen in training):
    ``{"audio": float32 16 kHz, "sequence": FlameSequence, "record": manifest record}``."""
    from ..flame.standin import AU_NAMES, standin_arrays

    if emotion not in EMOTIONS:
        raise DatasetError(f"unknown emotion {emotion!r} (one of {', '.join(EMOTIONS)})")
    if intensity not in INTENSITY_SCALE:
        raise DatasetError(f"intensity must be 1, 2 or 3, got {intensity!r}")
    text = " ".join(str(text).split())
    if not text:
        raise DatasetError("nothing to say (empty text)")
    spk = {s.name: s for s in speakers()}
    if speaker is None:
        speaker = sorted(n for n, s in spk.items() if s.split == "test")[0]
    if speaker not in spk:
        raise DatasetError(f"unknown speaker {speaker!r} (e.g. {', '.join(sorted(spk)[:3])})")
    spec = ClipSpec(index=0, seed=seed, split=spk[speaker].split, speaker=speaker, emotion=emotion,
                    intensity=int(intensity), text=text)
    return make_clip(spec, standin_arrays()[0]["au_to_expression"], list(AU_NAMES))
