"""Turn a user's own copy of MEAD or RAVDESS into avitalk's dataset format (manifest.jsonl + audio/ + flame/).

Neither corpus ships FLAME motion: point ``fits`` at a folder of per-clip FLAME fits (for example EMOCA v2
outputs at 25 fps) named by the clip (``M012_front_neutral_level1_017.npz``, ``03-01-06-01-02-01-12.npz``; any
sub-folder). A fit may be our FlameSequence ``.npz`` (``expression``, ``jaw_pose``) or EMOCA-style (``exp`` /
``expcode`` [T, 50] and ``jaw_pose`` [T, 3] or ``pose`` / ``posecode`` [T, 6] whose last 3 values are the jaw).

Clips with a missing or mismatched piece (no fit, no audio stream, durations that disagree, bad arrays) are
listed with the reason in ``import_report.json`` and skipped, never silently dropped. Instructions are written from
the labels with the shared vocabulary; when an OpenFace-style CSV of per-frame action-unit intensities is given for
a clip, the strongest action units come from it, otherwise from the emotion's prototype scaled by intensity.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AvitalkError, DatasetError
from ..io import atomic_write_json
from ..types import MOTION_FPS, FlameSequence, resample_frames
from ..vocab import load_vocabulary
from .manifest import write_manifest

# ------------------------------------------------------------------------------------------------ naming
RAVDESS_EMOTIONS = {  # code -> (MEAD emotion, intensity override or None)
    "01": ("neutral", 1), "02": ("neutral", 1),  # calm counts as weak neutral
    "03": ("happy", None), "04": ("sad", None), "05": ("angry", None), "06": ("fear", None),
    "07": ("disgusted", None), "08": ("surprised", None),
}
RAVDESS_INTENSITY = {"01": 2, "02": 3}  # normal -> medium, strong -> strong
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}
_RAVDESS_RE = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
MEAD_EMOTIONS = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised")
_MEAD_CLIP_RE = re.compile(r"^([MW]\d{3})_(\w+?)_([a-z]+)_level_?(\d)_(\d{3})$")
OPENFACE_AUS = {  # OpenFace intensity column -> stand-in action-unit field
    "AU01_r": "AU01_inner_brow_raise", "AU02_r": "AU02_outer_brow_raise", "AU04_r": "AU04_brow_lower",
    "AU05_r": "AU05_upper_lid_raise", "AU06_r": "AU06_cheek_raise", "AU07_r": "AU07_lid_tighten",
    "AU09_r": "AU09_nose_wrinkle", "AU10_r": "AU10_upper_lip_raise", "AU12_r": "AU12_lip_corner_pull",
    "AU14_r": "AU14_dimpler", "AU15_r": "AU15_lip_corner_depress", "AU17_r": "AU17_chin_raise",
    "AU20_r": "AU20_lip_stretch", "AU23_r": "AU23_lip_tighten", "AU25_r": "AU25_lips_part",
    "AU26_r": "AU26_jaw_drop_soft",
}


def parse_ravdess_name(stem: str) -> dict[str, Any] | None:
    """Fields of a RAVDESS file name (modality-channel-emotion-intensity-statement-repetition-actor)."""
    m = _RAVDESS_RE.match(stem)
    if not m:
        return None
    modality, channel, emo, inten, statement, rep, actor = m.groups()
    if emo not in RAVDESS_EMOTIONS:
        return None
    emotion, fixed = RAVDESS_EMOTIONS[emo]
    return {
        "modality": {"01": "audio-video", "02": "video-only", "03": "audio-only"}.get(modality, modality),
        "channel": "speech" if channel == "01" else "song",
        "emotion": emotion,
        "intensity": fixed or RAVDESS_INTENSITY.get(inten, 2),
        "statement": statement,
        "repetition": int(rep),
        "actor": int(actor),
        "gender": "male" if int(actor) % 2 else "female",
    }


def parse_mead_clip(name: str) -> dict[str, Any] | None:
    """Fields of an AVI-Talking style MEAD clip name, e.g. ``M012_front_neutral_level1_017``."""
    m = _MEAD_CLIP_RE.match(name)
    if not m or m.group(3) not in MEAD_EMOTIONS:
        return None
    sid, view, emotion, level, num = m.groups()
    return {"speaker": sid, "view": view, "emotion": emotion, "intensity": int(level), "number": num,
            "gender": "male" if sid.startswith("M") else "female"}


# -------------------------------------------------------------------------------------------------- fits
def load_fit(path: str | os.PathLike, fps: float = MOTION_FPS, n_exp: int = 50) -> FlameSequence:
    """Read one per-clip FLAME fit (our format or EMOCA-style keys) as a 25 fps FlameSequence."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported
        raise DatasetError(f"{p.name}: unreadable fit ({e})") from e
    if "expression" in d and "jaw_pose" in d:
        seq = FlameSequence.load(p)
    else:
        exp = next((d[k] for k in ("exp", "expcode", "expression_params") if k in d), None)
        if exp is None:
            raise DatasetError(f"{p.name}: no expression array (expected expression / exp / expcode)")
        if "jaw_pose" in d:
            jaw = d["jaw_pose"]
        elif "pose" in d or "posecode" in d:
            pose = d.get("pose", d.get("posecode"))
            if pose.ndim != 2 or pose.shape[1] < 6:
                raise DatasetError(f"{p.name}: pose must be [T, 6] (global 3 + jaw 3), got {pose.shape}")
            jaw = pose[:, 3:6]
        else:
            raise DatasetError(f"{p.name}: no jaw pose (expected jaw_pose, pose or posecode)")
        src_fps = float(np.asarray(d["fps"]).reshape(-1)[0]) if "fps" in d else fps
        seq = FlameSequence(np.asarray(exp, np.float32)[:, :n_exp], np.asarray(jaw, np.float32), fps=src_fps)
    if abs(seq.fps - MOTION_FPS) > 1e-3:  # resample to 25 fps
        seq = FlameSequence(resample_frames(seq.expression, seq.fps), resample_frames(seq.jaw_pose, seq.fps),
                            fps=MOTION_FPS, meta=seq.meta)
    if seq.n_exp < n_exp:
        seq.expression = np.pad(seq.expression, ((0, 0), (0, n_exp - seq.n_exp)))
    return seq


def _index(folder: str | os.PathLike | None, suffix: str) -> dict[str, Path]:
    if folder is None:
        return {}
    return {p.stem: p for p in sorted(Path(folder).rglob(f"*{suffix}"))}


def openface_strengths(csv_path: str | os.PathLike) -> dict[str, float]:
    """Clip-mean action-unit intensities (0..5 scaled to 0..1) from an OpenFace FeatureExtraction CSV."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f, skipinitialspace=True))
    if not rows:
        raise DatasetError(f"{Path(csv_path).name}: empty OpenFace CSV")
    out = {}
    for col, au in OPENFACE_AUS.items():
        vals = [float(r[col]) for r in rows if r.get(col) not in (None, "")]
        if vals:
            out[au] = round(float(np.clip(np.mean(vals) / 5.0, 0, 1)), 3)
    return out


# ----------------------------------------------------------------------------------------------- writer
def _split_of(speaker: str, test: set[str], val: set[str]) -> str:
    return "test" if speaker in test else "val" if speaker in val else "train"


def _default_holdout(speakers: list[str], frac: float = 0.1) -> tuple[set[str], set[str]]:
    order = sorted(set(speakers), key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    k = max(1, int(round(len(order) * frac))) if len(order) >= 3 else 0
    return set(order[:k]), set(order[k : 2 * k])


def _write_dataset(
    out: str | os.PathLike,
    items: list[dict[str, Any]],
    fits: dict[str, Path],
    openface: dict[str, Path],
    test: set[str],
    val: set[str],
    skipped: list[dict[str, str]],
    source: str,
    progress: bool,
    max_offset_s: float = 0.2,
    audio_only: bool = False,
) -> Path:
    from tqdm import tqdm

    from .. import audio as audio_io
    from .synthtalk import FACE, INTENSITY_SCALE

    root = Path(out)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    if not audio_only:
        (root / "flame").mkdir(parents=True, exist_ok=True)
    vocab = load_vocabulary()
    records = []
    for it in tqdm(items, unit="clip", desc=f"import {source}", disable=not progress or None):
        cid = it["id"]

        def skip(reason: str) -> None:
            skipped.append({"id": cid, "file": str(it["path"]), "reason": reason})

        if not audio_only and cid not in fits:
            skip("no FLAME fit with this name in the fits folder")
            continue
        try:
            speech = audio_io.load(it["path"])
            seq = None if audio_only else load_fit(fits[cid])
        except AvitalkError as e:
            skip(str(e))
            continue
        except Exception as e:  # noqa: BLE001 - a damaged file is reported, the import goes on
            skip(f"unreadable ({type(e).__name__}: {e})")
            continue
        if seq is not None and it.get("motion_offset") is not None:  # e.g. the talker's rest face (GRID)
            off = np.asarray(it["motion_offset"], np.float32)
            seq.expression = seq.expression - off[: seq.n_exp]
            seq.jaw_pose = seq.jaw_pose - off[seq.n_exp :]
            seq.meta["rest_offset"] = [round(float(x), 4) for x in off]
        if seq is not None and abs(seq.duration - speech.duration) > max_offset_s:
            skip(f"motion lasts {seq.duration:.2f} s but audio {speech.duration:.2f} s")
            continue
        if cid in openface:
            try:
                acts, how = openface_strengths(openface[cid]), "openface"
            except (AvitalkError, KeyError, ValueError) as e:
                skip(f"OpenFace CSV unusable ({e})")
                continue
        else:
            s = INTENSITY_SCALE[it["intensity"]]
            acts, how = {au: round(v * s, 3) for au, v in FACE[it["emotion"]].items()}, "emotion prototype"
        rng = np.random.default_rng(int(hashlib.sha256(cid.encode()).hexdigest()[:8], 16))
        ranked = sorted(acts.items(), key=lambda kv: -kv[1])
        instructions = []
        for _ in range(6):
            t = vocab.write(it["emotion"], it["intensity"], ranked, it.get("gender", "unknown"), rng)
            if t not in instructions:
                instructions.append(t)
            if len(instructions) == 3:
                break
        audio_io.save_wav(root / "audio" / f"{cid}.wav", speech)
        if seq is not None:
            seq.meta.update({"id": cid, "source": source})
            seq.save(root / "flame" / f"{cid}.npz")
        rec = {
            "id": cid, "split": it.get("split") or _split_of(it["speaker"], test, val), "speaker": it["speaker"],
            "emotion": it["emotion"], "intensity": it["intensity"], "audio": f"audio/{cid}.wav",
            "flame": f"flame/{cid}.npz" if seq is not None else "", "instructions": instructions,
            "duration": round(speech.duration, 4), "has_motion": seq is not None,
            "num_frames": seq.num_frames if seq is not None else int(round(speech.duration * MOTION_FPS)),
            "gender": it.get("gender"), "source": source,
            "labels": {"emotion": it["emotion"], "intensity": it["intensity"], "action_units": dict(ranked),
                       "action_units_from": how},
        }
        for key in ("text", "words"):  # the transcript, and word times [[word, start_s, end_s], ...] (GRID)
            if it.get(key):
                rec[key] = it[key]
        records.append(rec)
    if not records:
        atomic_write_json(root / "import_report.json", {"imported": 0, "skipped": skipped})
        raise DatasetError(f"no clip could be imported ({len(skipped)} skipped; see {root / 'import_report.json'})")
    manifest = write_manifest(root, sorted(records, key=lambda r: r["id"]))
    atomic_write_json(
        root / "import_report.json",
        {"source": source, "imported": len(records), "skipped_count": len(skipped), "skipped": skipped,
         "audio_only": audio_only, "test_speakers": sorted(test), "val_speakers": sorted(val)},
    )
    return manifest


def import_ravdess(
    root: str | os.PathLike, fits: str | os.PathLike | None, out: str | os.PathLike,
    openface: str | os.PathLike | None = None, test_actors: tuple[int, ...] = (23, 24),
    val_actors: tuple[int, ...] = (21, 22), progress: bool = True,
) -> Path:
    """Import RAVDESS speech (audio-only .wav / .flac or audio-video .mp4); actor-disjoint splits (default 1-20 /
    21-22 / 23-24). Song, video-only and non-RAVDESS names are reported and skipped. ``fits=None``: labelled speech
    without motion (``flame`` empty, ``has_motion`` false): it trains what reads the voice (stage 1) and is skipped
    by motion losses."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    if fits is not None and not Path(fits).is_dir():
        raise DatasetError(f"{fits}: fits folder not found")
    items, skipped = [], []
    for p in sorted([*root.rglob("*.wav"), *root.rglob("*.flac"), *root.rglob("*.mp4")]):
        f = parse_ravdess_name(p.stem)
        if f is None:
            skipped.append({"id": p.stem, "file": str(p), "reason": "not a RAVDESS file name"})
            continue
        if f["channel"] != "speech" or f["modality"] == "video-only":
            skipped.append({"id": p.stem, "file": str(p), "reason": f"{f['channel']} / {f['modality']} clip (no speech audio)"})
            continue
        items.append({"id": p.stem, "path": p, "speaker": f"Actor_{f['actor']:02d}", "emotion": f["emotion"],
                      "intensity": f["intensity"], "gender": f["gender"], "text": RAVDESS_STATEMENTS.get(f["statement"])})
    # an audio-video clip and its audio-only twin share everything but the modality: keep one (audio-only first)
    seen: dict[str, dict[str, Any]] = {}
    for it in items:
        key = it["id"][3:]
        if key in seen:
            skipped.append({"id": it["id"], "file": str(it["path"]), "reason": f"duplicate of {seen[key]['id']}"})
        else:
            seen[key] = it
    items = list(seen.values())
    test = {f"Actor_{a:02d}" for a in test_actors}
    val = {f"Actor_{a:02d}" for a in val_actors}
    if not items:
        raise DatasetError(f"{root}: no RAVDESS speech clips found ({len(skipped)} files skipped)")
    return _write_dataset(out, items, _index(fits, ".npz"), _index(openface, ".csv"), test, val, skipped, "ravdess",
                          progress, audio_only=fits is None)


def import_mead(
    root: str | os.PathLike, fits: str | os.PathLike, out: str | os.PathLike,
    openface: str | os.PathLike | None = None, test_speakers: tuple[str, ...] | None = None,
    val_speakers: tuple[str, ...] | None = None, progress: bool = True,
) -> Path:
    """Import MEAD audio (``<ID>/audio/<emotion>/level_<n>/<NNN>.m4a``); clip ids follow AVI-Talking
    (``M012_front_neutral_level1_017``). Speaker-disjoint splits: given, or 10% / 10% of speakers by hash."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    items, skipped = [], []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in (".m4a", ".wav", ".mp3", ".aac") or "audio" not in p.parts:
            continue
        rel = p.relative_to(root).parts
        try:
            sid = rel[rel.index("audio") - 1]
            emotion, level = rel[rel.index("audio") + 1], rel[rel.index("audio") + 2]
        except (ValueError, IndexError):
            skipped.append({"id": p.stem, "file": str(p), "reason": "not in <ID>/audio/<emotion>/level_<n>/"})
            continue
        m = re.match(r"level_?(\d)$", level)
        if emotion not in MEAD_EMOTIONS or not m or not re.match(r"^[MW]\d{3}$", sid):
            skipped.append({"id": p.stem, "file": str(p), "reason": f"unexpected MEAD path {'/'.join(rel)}"})
            continue
        cid = f"{sid}_front_{emotion}_level{m.group(1)}_{p.stem}"
        items.append({"id": cid, "path": p, "speaker": sid, "emotion": emotion, "intensity": int(m.group(1)),
                      "gender": "male" if sid.startswith("M") else "female"})
    if test_speakers is None:
        test, val = _default_holdout([it["speaker"] for it in items])
    else:
        test, val = set(test_speakers), set(val_speakers or ())
    return _write_dataset(out, items, _index(fits, ".npz"), _index(openface, ".csv"), test, val, skipped, "mead", progress)


SPEECH_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus")


def speaker_of(path: Path, root: Path) -> str:
    """A clip's speaker: the part of its file name before the first ``-`` or ``_`` (LibriSpeech's
    ``SPEAKER-CHAPTER-UTTERANCE``, VCTK's ``p225_001``), else the folder it lies in (or ``root``'s name)."""
    m = re.match(r"^([^-_]+)[-_]", path.stem)
    if m:
        return m.group(1)
    return path.parent.name if path.parent != root else root.name


def import_speech(
    root: str | os.PathLike, out: str | os.PathLike, emotion: str = "neutral", intensity: int = 2,
    source: str = "speech", holdout: float = 0.0, progress: bool = True,
) -> Path:
    """Import a folder of speech that shares one label (e.g. read English: ``emotion="neutral"``), audio only, for
    what reads the voice. Every audio file under ``root`` is a clip; its speaker comes from its name
    (:func:`speaker_of`); ``holdout`` > 0 puts that share of the speakers (by hash) into test and as many into val,
    otherwise every clip is in train (folds choose their own speakers)."""
    from ..vocab import EMOTIONS

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    if emotion not in EMOTIONS:
        raise DatasetError(f"emotion {emotion!r}: one of {', '.join(EMOTIONS)}")
    if intensity not in (1, 2, 3):
        raise DatasetError(f"intensity {intensity}: 1, 2 or 3")
    items = [{"id": re.sub(r"[^A-Za-z0-9_.-]", "_", p.stem), "path": p, "speaker": speaker_of(p, root),
              "emotion": emotion, "intensity": intensity}
             for p in sorted(root.rglob("*")) if p.suffix.lower() in SPEECH_SUFFIXES and p.is_file()]
    if not items:
        raise DatasetError(f"{root}: no audio files ({', '.join(SPEECH_SUFFIXES)})")
    skipped: list[dict[str, str]] = []
    seen: set[str] = set()
    unique = []
    for it in items:
        if it["id"] in seen:
            skipped.append({"id": it["id"], "file": str(it["path"]), "reason": "another file has the same name"})
        else:
            seen.add(it["id"])
            unique.append(it)
    test, val = _default_holdout([it["speaker"] for it in unique], holdout) if holdout > 0 else (set(), set())
    return _write_dataset(out, unique, {}, {}, test, val, skipped, source, progress, audio_only=True)
