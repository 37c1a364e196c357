"""The dataset format shared by SynthTalk, MEAD and RAVDESS: ``manifest.jsonl`` + ``audio/`` + ``flame/``.

One JSON object per line (one clip): ``id``, ``split`` (train / val / test), ``speaker``, ``emotion``,
``intensity`` (1..3), ``audio`` and ``flame`` (paths relative to the dataset folder), ``instructions`` (list of
texts), ``duration`` (seconds); optional: ``text``, ``gender``, ``labels``, ``num_frames``, ``source``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import DatasetError
from ..io import atomic_write_text
from ..vocab import EMOTIONS

REQUIRED = ("id", "split", "speaker", "emotion", "intensity", "audio", "flame", "instructions", "duration")
SPLITS = ("train", "val", "test")


@dataclass
class Clip:
    id: str
    split: str
    speaker: str
    emotion: str
    intensity: int
    audio: str
    flame: str
    instructions: list[str]
    duration: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in REQUIRED}
        d.update(self.extra)
        return d


def validate_record(rec: dict[str, Any], where: str = "manifest") -> Clip:
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise DatasetError(f"{where}: clip {rec.get('id', '?')} lacks {', '.join(missing)}")
    if rec["split"] not in SPLITS:
        raise DatasetError(f"{where}: clip {rec['id']} has split {rec['split']!r}; expected one of {SPLITS}")
    if rec["emotion"] not in EMOTIONS:
        raise DatasetError(f"{where}: clip {rec['id']} has emotion {rec['emotion']!r}; expected one of {EMOTIONS}")
    if int(rec["intensity"]) not in (1, 2, 3):
        raise DatasetError(f"{where}: clip {rec['id']} has intensity {rec['intensity']!r}; expected 1, 2 or 3")
    if not isinstance(rec["instructions"], list):
        raise DatasetError(f"{where}: clip {rec['id']}: instructions must be a list of texts")
    extra = {k: v for k, v in rec.items() if k not in REQUIRED}
    return Clip(
        id=str(rec["id"]), split=rec["split"], speaker=str(rec["speaker"]), emotion=rec["emotion"],
        intensity=int(rec["intensity"]), audio=str(rec["audio"]), flame=str(rec["flame"]),
        instructions=[str(t) for t in rec["instructions"]], duration=float(rec["duration"]), extra=extra,
    )


def read_manifest(root: str | os.PathLike, split: str | None = None) -> list[Clip]:
    """Clips of a dataset folder (optionally one split), validated; a clear DatasetError otherwise."""
    path = Path(root) / "manifest.jsonl"
    if not path.is_file():
        raise DatasetError(f"{root}: no manifest.jsonl (not a dataset folder; make one with `avitalk data synth`)")
    clips = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}:{n}: not valid JSON ({e})") from e
        clips.append(validate_record(rec, f"{path}:{n}"))
    if split is not None:
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; expected one of {SPLITS}")
        clips = [c for c in clips if c.split == split]
        if not clips:
            raise DatasetError(f"{root}: has no clips in split {split!r}")
    return clips


def write_manifest(root: str | os.PathLike, clips: Iterable[Clip | dict[str, Any]]) -> Path:
    lines = []
    for c in clips:
        rec = c.to_json() if isinstance(c, Clip) else c
        validate_record(rec)
        lines.append(json.dumps(rec, sort_keys=True) + "\n")
    return atomic_write_text(Path(root) / "manifest.jsonl", "".join(lines))


def stats(clips: list[Clip]) -> dict[str, Any]:
    import numpy as np

    d = np.array([c.duration for c in clips]) if clips else np.zeros(1)
    by = lambda key: dict(sorted(Counter(key(c) for c in clips).items()))  # noqa: E731
    return {
        "clips": len(clips),
        "hours": round(float(d.sum()) / 3600, 3),
        "duration_s": {"min": round(float(d.min()), 2), "median": round(float(np.median(d)), 2), "max": round(float(d.max()), 2)},
        "split": by(lambda c: c.split),
        "emotion": by(lambda c: c.emotion),
        "intensity": by(lambda c: c.intensity),
        "speakers": {s: len({c.speaker for c in clips if c.split == s}) for s in SPLITS},
        "clips_per_speaker": by(lambda c: c.speaker),
    }
