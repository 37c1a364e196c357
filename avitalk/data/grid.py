"""GRID (the audiovisual sentence corpus: Cooke, Barker, Cunningham and Shao, 2006; CC BY 4.0) -> avitalk's dataset.

GRID's layout: ``sN/<clip>.mpg`` (360x288, 25 fps, a talker reading a six-word command sentence, "bin blue at f two
now") and ``alignments/sN/<clip>.align`` (one word a line: start and end in 1/25000 s, then the word; ``sil`` is
silence). Each clip becomes a dataset clip with its 16 kHz audio, the motion the face tracker fits to the video
(``avitalk data track``, run here unless ``fits`` points at fits made before), the transcript, the word times and a
neutral instruction. Splits go by sentence (a hash of the words), never by clip, so a test sentence is never heard
in training, whichever talkers say it.

The motion is stored relative to the talker's own face at rest (``rest=True``): the median over the talker's clips of
the fit in the silence before the first word and after the last one is subtracted from every frame. That rest
expression is the talker, not speech (on GRID's s1 a mouth pulled to one side and lowered brows, coefficients up to
0.4, while the lips at rest are closed either way), and a decoder learning lip sync from it should not learn one
person's face. The offset is kept in each clip's ``meta["rest_offset"]`` and in ``import_report.json``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..types import MOTION_FPS

GRID_RATE = 25_000  # .align times are in 1/25000 s
REST_MARGIN_S = (0.1, 0.15)  # silence counts from this long before the first word and after the last one


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


def silent_frames(words: list[tuple[str, float, float]], num_frames: int, fps: float) -> np.ndarray:
    """Frame indices before the first word and after the last one (with :data:`REST_MARGIN_S` kept clear)."""
    if not words:
        return np.arange(num_frames)
    n0 = int((words[0][1] - REST_MARGIN_S[0]) * fps)
    n1 = int(np.ceil((words[-1][2] + REST_MARGIN_S[1]) * fps))
    return np.r_[0 : max(n0, 0), min(n1, num_frames) : num_frames]


def rest_offset(motions: list[np.ndarray], silences: list[np.ndarray], min_frames: int = 3) -> np.ndarray | None:
    """A talker's motion at rest: the median over clips of each clip's median motion in its silent frames (clips with
    fewer than ``min_frames`` of silence are not counted); None when no clip has enough."""
    per = [np.median(m[s], axis=0) for m, s in zip(motions, silences) if len(s) >= min_frames]
    return np.median(np.stack(per), axis=0).astype(np.float32) if per else None


def import_grid(root: str | os.PathLike, out: str | os.PathLike, fits: str | os.PathLike | None = None,
                workers: int = 2, test: float = 0.05, val: float = 0.05, progress: bool = True,
                rest: bool = True, landmarks: str = "mesh") -> Path:
    """Import GRID talkers under ``root`` (see the module's text; ``landmarks``: the tracker, when it tracks);
    returns the manifest's path."""
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
            track_folder(folder, where, workers=workers, progress=progress, landmarks=landmarks)
        elif not where.is_dir():
            flat = f" ({Path(fits)} holds fits directly: move them into {where})" \
                if any(Path(fits).glob(f"{v.stem}.npz") for v in videos if v.parent == folder) else ""
            raise DatasetError(f"{Path(fits)}: no folder {folder.name}/ of fits for talker {folder.name}; the fits go "
                               f"one folder per talker (`avitalk data track {folder} -o {where}`){flat}")
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
    offsets = talker_rest(items, fit_by_id) if rest else {}
    for it in items:
        if it["speaker"] in offsets:
            it["motion_offset"] = offsets[it["speaker"]]
    manifest = _write_dataset(out, items, fit_by_id, {}, set(), set(), skipped, "grid", progress)
    import json

    from ..io import atomic_write_json

    report = json.loads((Path(out) / "import_report.json").read_text())
    if offsets:
        report["rest_offset"] = {k: [round(float(x), 4) for x in v] for k, v in sorted(offsets.items())}
    # which tracker made the fits (each fits folder's track_report.json says; fits from elsewhere: unknown)
    trackers = set()
    for where in {p.parent for p in fit_by_id.values()}:
        tr = where / "track_report.json"
        trackers.add(json.loads(tr.read_text()).get("landmarks", "mesh") if tr.is_file() else "unknown")
    report["landmarks"] = ", ".join(sorted(trackers))
    atomic_write_json(Path(out) / "import_report.json", report)
    return manifest


def talker_rest(items: list[dict[str, Any]], fit_by_id: dict[str, Path]) -> dict[str, np.ndarray]:
    """Each talker's :func:`rest_offset` from the fits of its clips (unreadable fits are left to the import to
    report)."""
    from .real import load_fit

    motions: dict[str, list] = {}
    silences: dict[str, list] = {}
    for it in items:
        if it["id"] not in fit_by_id:
            continue
        try:
            m = load_fit(fit_by_id[it["id"]]).motion()
        except DatasetError:
            continue
        motions.setdefault(it["speaker"], []).append(m)
        silences.setdefault(it["speaker"], []).append(silent_frames(it["words"], len(m), MOTION_FPS))
    out = {}
    for talker in motions:
        r = rest_offset(motions[talker], silences[talker])
        if r is not None:
            out[talker] = r
    return out
