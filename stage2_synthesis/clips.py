"""Stage 2's view of a corpus: every clip of a split in memory (25 fps audio features and their augmented copies,
motion, labels, instructions, and the clips that share each one's speaker, emotion and intensity), for training
(:mod:`.train`) and measurement (:mod:`eval.stage2`)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from avitalk.errors import DatasetError


class ClipBank:
    """All clips of one split in memory: 25 fps audio features, motion, labels and instructions."""

    def __init__(self, root: Path, split: str, cache, limit: int | None = None, augmented=None, copies: int = 0,
                 paused=None, pauses: int = 0, seed: int = 0, streamed=None, stream_copies: int = 0):
        from avitalk.data.manifest import read_manifest
        from avitalk.encoders import to_motion_rate
        from avitalk.encoders.cache import augmented_id, pause_id, pause_plan, stream_window_id, stream_window_plan
        from avitalk.types import FlameSequence

        # clips without motion (labelled real speech) train stage 1 only
        clips = [c for c in read_manifest(root, split) if c.flame and c.extra.get("has_motion", True)][:limit]
        if not clips:
            raise DatasetError(f"{root}: no clips with motion in split {split!r} (stage 2 needs FLAME motion)")
        self.ids, self.feats, self.motion, self.keys, self.instructions, self.labels = [], [], [], [], [], []
        self.variants: list[list[np.ndarray]] = []  # augmented copies of each clip's features (25 fps)
        # pause copies: (features, motion) of the clip between stretches of silence (encoders.cache.pause_plan)
        self.paused: list[list[tuple[np.ndarray, np.ndarray]]] = []
        # stream windows: (features, motion) of what a live stream encodes, cut from the clip's audio or its pause
        # copy's (encoders.cache.stream_window_plan), for the live decoder (stage2.train.stream)
        self.windows: list[list[tuple[np.ndarray, np.ndarray]]] = []
        self.corpus: list[int] = [0] * len(clips)  # which corpus each clip came from (see concat)
        # per clip, its frames of speech (speech_frames; None without word times) and those of its pause copies
        self.speech: list[np.ndarray | None] = []
        self.paused_speech: list[list[np.ndarray | None]] = []
        for c in clips:
            seq = FlameSequence.load(root / c.flame)
            f = cache.get(c.id)
            if f is None:
                raise DatasetError(f"{c.id}: features missing from {cache.dir}")
            self.ids.append(c.id)
            self.motion.append(seq.motion().astype(np.float32))
            self.feats.append(to_motion_rate(f, seq.num_frames))
            sp = speech_frames(c.extra.get("words"), seq.num_frames)
            self.speech.append(sp)
            vs = []
            for k in range(copies if augmented is not None else 0):
                a = augmented.get(augmented_id(c.id, k))
                if a is None:
                    raise DatasetError(f"{c.id}: augmented features missing from {augmented.dir}")
                vs.append(to_motion_rate(a, seq.num_frames).astype(np.float16))
            self.variants.append(vs)
            ps, pss = [], []
            for k in range(pauses if paused is not None else 0):
                a = paused.get(pause_id(c.id, k))
                if a is None:
                    raise DatasetError(f"{c.id}: pause copy missing from {paused.dir}")
                lead, trail, _ = pause_plan(seed, c.id, k)
                m = paused_motion(self.motion[-1], lead, trail)
                ps.append((to_motion_rate(a, len(m)).astype(np.float16), m))
                pss.append(None if sp is None else np.concatenate([np.zeros(lead, bool), sp, np.zeros(trail, bool)]))
            self.paused.append(ps)
            self.paused_speech.append(pss)
            ws = []
            for k in range(stream_copies if streamed is not None else 0):
                a = streamed.get(stream_window_id(c.id, k))
                if a is None:
                    raise DatasetError(f"{c.id}: stream window missing from {streamed.dir}")
                lead, trail, _, end = stream_window_plan(seed, c.id, k, seq.num_frames)
                m = paused_motion(self.motion[-1], lead, trail)[end - len(a) : end]
                ws.append((a.astype(np.float16), m))
            self.windows.append(ws)
            self.keys.append((c.speaker, c.emotion, c.intensity))
            self.instructions.append(list(c.instructions))
            aus = (c.extra.get("labels") or {}).get("action_units") or {}
            self.labels.append({"emotion": c.emotion, "intensity": c.intensity, "speaker": c.speaker,
                                "gender": c.extra.get("gender", "unknown"), "action_units": dict(aus)})
        by_key, by_emo = defaultdict(list), defaultdict(list)
        for i, (spk, emo, inten) in enumerate(self.keys):
            by_key[(spk, emo, inten)].append(i)
            by_emo[(emo, inten)].append(i)
        self.partners = [
            [j for j in by_key[k] if j != i] or [j for j in by_emo[(k[1], k[2])] if j != i] or [i]
            for i, k in enumerate(self.keys)
        ]

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def concat(cls, banks: list["ClipBank"], partners: str = "own") -> "ClipBank":
        """One bank holding the clips of several; ``corpus[i]``: which bank clip i came from. ``partners``: "own" (a
        style partner stays within its own bank) or "first" (the clips of the later banks take their partners from
        the first bank's clips of the same emotion, any speaker and intensity, when it has any)."""
        if partners not in ("own", "first"):
            raise ValueError(f"partners must be 'own' or 'first', got {partners!r}")
        out = cls.__new__(cls)
        for name in ("ids", "feats", "motion", "keys", "instructions", "labels", "variants", "paused", "windows",
                     "speech", "paused_speech"):
            setattr(out, name, [x for b in banks for x in getattr(b, name)])
        by_emo = defaultdict(list)
        for i, (_, emo, _) in enumerate(banks[0].keys):
            by_emo[emo].append(i)
        out.partners, out.corpus, offset = [], [], 0
        for k, b in enumerate(banks):
            for p, (_, emo, _) in zip(b.partners, b.keys):
                out.partners.append(by_emo[emo] if k and partners == "first" and by_emo[emo] else [j + offset for j in p])
            out.corpus += [k] * len(b)
            offset += len(b)
        return out


SPEECH_MARGIN_S = 0.12  # a lip gesture starts before a word's sound and ends after it


def speech_frames(words, num_frames: int, margin: float = SPEECH_MARGIN_S) -> np.ndarray | None:
    """Which of a clip's motion frames lie within ``margin`` seconds of one of its words (``[[word, start, end], ...]``
    in seconds, as the manifest's ``words``; GRID's silences are not words); None when the clip has no word times."""
    from avitalk.types import MOTION_FPS

    if not words:
        return None
    t = np.arange(num_frames) / MOTION_FPS
    out = np.zeros(num_frames, bool)
    for _, start, end in words:
        out |= (t >= float(start) - margin) & (t <= float(end) + margin)
    return out


def paused_motion(motion: np.ndarray, lead: int, trail: int, settle: int = 5) -> np.ndarray:
    """The motion to go with a clip's pause copy: its first frame (the face at rest before the first word) held for
    ``lead`` frames; after the last frame, the face returns to that rest over ``settle`` frames (smoothstep) and holds
    it for the rest of ``trail``."""
    rest = motion[:1]
    t = np.arange(1, trail + 1, dtype=np.float32)[:, None] / max(settle, 1)
    w = np.clip(t, 0.0, 1.0)
    w = w * w * (3 - 2 * w)
    tail = (1 - w) * motion[-1:] + w * rest
    return np.concatenate([np.repeat(rest, lead, 0), motion, tail]).astype(np.float32)


# a speech folder's aligned sounds: {clip id: {"speaker", "text", "events": [[kind, s], ...]}}, kinds "bilabial"
# (/b p m/) and "open" (open vowels), written by eval.bilabial.align_folder (the benchmark's aligner)
EVENTS_FILE = "aligned_events.json"


def read_events(root: Path) -> dict[str, dict]:
    """A speech folder's aligned sounds (EVENTS_FILE); a clear error when they were never aligned or lack a clip."""
    import json

    from avitalk.data.manifest import read_manifest

    path = Path(root) / EVENTS_FILE
    if not path.is_file():
        raise DatasetError(f"{root}: no {EVENTS_FILE} (its words are aligned by `avitalk train stage2 --event-data`)")
    ev = json.loads(path.read_text())
    missing = [c.id for c in read_manifest(root) if c.id not in ev]
    if missing:
        raise DatasetError(f"{path}: {len(missing)} clips not aligned (e.g. {missing[0]}); align the folder again")
    return ev


def held_out_speakers(speakers, every: int) -> set[str]:
    """Every ``every``-th speaker in sorted order (the first included); none when ``every`` <= 0."""
    return set(sorted(set(speakers))[::every]) if every > 0 else set()


QUIET_DB = 30.0  # a pause: frames this far under the clip's loud level (its 95th-percentile frame)
QUIET_AWAY = 5  # ... and at least this many frames (0.2 s) from every aligned sound


class EventBank:
    """Speech without motion whose lips are taught by its aligned sounds: per clip its 25 fps features, the frames of
    its /b p m/ and open vowels (:func:`read_events`), and its pauses (``quiet``: frames QUIET_DB under its loud level,
    QUIET_AWAY frames or more from every aligned sound), where the face rests. Clips of the held-out speakers
    (``holdout_every``) and clips without a bilabial are left out."""

    def __init__(self, root: Path, cache, holdout_every: int = 5, limit: int | None = None):
        from avitalk import audio as audio_io
        from avitalk.data.manifest import read_manifest
        from avitalk.encoders import to_motion_rate
        from avitalk.types import FEATURES_PER_FRAME, MOTION_FPS

        ev = read_events(root)
        clips = read_manifest(root)
        self.held_out = held_out_speakers([c.speaker for c in clips], holdout_every)
        self.ids, self.feats, self.events, self.quiet = [], [], [], []
        for c in clips:
            if c.speaker in self.held_out or not any(k == "bilabial" for k, _ in ev[c.id]["events"]):
                continue
            f = cache.get(c.id)
            if f is None:
                raise DatasetError(f"{c.id}: features missing from {cache.dir}")
            f = to_motion_rate(f, f.shape[0] // FEATURES_PER_FRAME)
            self.ids.append(c.id)
            self.feats.append(f)
            self.events.append([(k, float(t) * MOTION_FPS) for k, t in ev[c.id]["events"] if t * MOTION_FPS < len(f)])
            db = audio_io.loudness_db(audio_io.load(Path(root) / c.audio).samples, len(f))
            quiet = db < np.percentile(db, 95) - QUIET_DB
            for _, t in self.events[-1]:
                quiet[max(0, int(t) - QUIET_AWAY) : int(t) + QUIET_AWAY + 1] = False
            self.quiet.append(quiet)
            if limit and len(self.ids) >= limit:
                break
        if not self.ids:
            raise DatasetError(f"{root}: no clip with an aligned /b p m/ outside the held-out speakers")

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def concat(cls, banks: list["EventBank"]) -> "EventBank":
        """One bank holding the clips of several (speech folders); their held-out speakers together."""
        out = cls.__new__(cls)
        for name in ("ids", "feats", "events", "quiet"):
            setattr(out, name, [x for b in banks for x in getattr(b, name)])
        out.held_out = set().union(*(b.held_out for b in banks))
        return out

    def batch(self, idx, crop: int, rng: np.random.Generator):
        """Features cropped to ``crop`` frames around one of each clip's bilabials (at least 8 frames, or a quarter of
        the crop, from its edges when the clip allows), padded; per row its events as (kind, frame in the crop); its
        pauses [B, crop] (bool)."""
        import torch

        from avitalk.data.dataset import pad_arrays

        feats, events, quiet = [], [], torch.zeros(len(idx), crop, dtype=torch.bool)
        for i in idx:
            f, ev = self.feats[i], self.events[i]
            s = 0
            if len(f) > crop:
                bil = [t for k, t in ev if k == "bilabial"]
                c = int(bil[int(rng.integers(len(bil)))])
                edge = min(8, crop // 4)
                s = int(np.clip(c - rng.integers(edge, crop - edge), 0, len(f) - crop))
            feats.append(f[s : s + crop].astype(np.float32))
            events.append([(k, t - s) for k, t in ev if 0 <= t - s < len(feats[-1])])
            quiet[len(events) - 1, : len(feats[-1])] = torch.as_tensor(self.quiet[i][s : s + crop])
        x, mask = pad_arrays(feats, crop)
        return x, mask, events, quiet
