"""GRID (the audiovisual sentence corpus: Cooke, Barker, Cunningham and Shao, 2006; CC BY 4.0) -> avitalk's dataset.

GRID's layout: ``sN/<clip>.mpg`` (360x288, 25 fps, a talker reading a six-word command sentence, "bin blue at f two
now") and ``alignments/sN/<clip>.align`` (one word a line: start and end in 1/25000 s, then the word; ``sil`` is
silence). Each clip becomes a dataset clip with its 16 kHz audio, the motion the face tracker fits to the video
(``avitalk data track``, run here unless ``fits`` points at fits made before), the transcript, the word times and a
neutral instruction. Splits go by sentence (a hash of the words), never by clip, so a test sentence is never heard
in training, whichever talkers say it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..errors import DatasetError

GRID_RATE = 25_000  # .align times are in 1/25000 s


def read_align(path: str | os.PathLike) -> list[tuple[str, float, float]]:
    """Words with start and end in seconds, silence (``sil``, ``sp``) left out."""
    words = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise DatasetError(f"{Path(path).name}: line {n} is not 'start end word'")
        try:
            start, end = int(parts[0]) / GRID_RATE, int(parts[1]) / GRID_RATE
        except ValueError as e:
            raise DatasetError(f"{Path(path).name}: line {n} has no integer times") from e
        if parts[2] not in ("sil", "sp"):
            words.append((parts[2], round(start, 4), round(end, 4)))
    return words


def sentence_split(text: str, test: float = 0.05, val: float = 0.05) -> str:
    """train / val / test by a hash of the sentence's words (the same sentence always lands in the same split)."""
    u = int(hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()[:8], 16) / 16 ** 8
    return "test" if u < test else "val" if u < test + val else "train"


def import_grid(root: str | os.PathLike, out: str | os.PathLike, fits: str | os.PathLike | None = None,
                workers: int = 2, test: float = 0.05, val: float = 0.05, progress: bool = True) -> Path:
    """Import GRID talkers under ``root`` (see the module's text); returns the manifest's path."""
    from ..track.run import find_videos, track_folder
    from .real import _write_dataset

    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    aligns = {(p.parent.name, p.stem): p for p in root.rglob("*.align")}
    videos = find_videos(root)
    if not videos:
        raise DatasetError(f"{root}: no GRID videos (sN/*.mpg)")
    talkers = sorted({p.parent for p in videos})
    fit_index: dict[tuple[str, str], Path] = {}
    for folder in talkers:  # GRID's clip names repeat across talkers: one fits folder per talker
        where = Path(fits) / folder.name if fits else out / "fits" / folder.name
        if not fits:
            track_folder(folder, where, workers=workers, progress=progress)
        fit_index.update({(folder.name, p.stem): p for p in where.glob("*.npz") if not p.name.startswith("correspondence-")})
    items: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    fit_by_id: dict[str, Path] = {}
    for v in videos:
        talker, cid = v.parent.name, f"{v.parent.name}_{v.stem}"
        if (talker, v.stem) not in aligns:
            skipped.append({"id": cid, "file": str(v), "reason": f"no alignments/{talker}/{v.stem}.align"})
            continue
        try:
            words = read_align(aligns[(talker, v.stem)])
        except DatasetError as e:
            skipped.append({"id": cid, "file": str(v), "reason": str(e)})
            continue
        text = " ".join(w for w, _, _ in words)
        items.append({"id": cid, "path": v, "speaker": talker, "emotion": "neutral", "intensity": 1,
                      "gender": "unknown", "text": text, "words": [list(w) for w in words],
                      "split": sentence_split(text, test, val)})
        if (talker, v.stem) in fit_index:
            fit_by_id[cid] = fit_index[(talker, v.stem)]
    if not items:
        raise DatasetError(f"{root}: no GRID clip has its alignment ({len(skipped)} skipped)")
    return _write_dataset(out, items, fit_by_id, {}, set(), set(), skipped, "grid", progress)
