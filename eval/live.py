"""Streamed against offline motion: the same clips through a live session (chunks of ``chunk_ms``, as a microphone
delivers them) and through the offline path, per look-ahead.

Per clip and look-ahead: the lip gap's correlation with the offline motion's, and the mouth metrics of both (mouth
opening vs loudness r, silence rest ratio, bilabial closure at the aligned /b p m/; on clips with motion, the lip
vertex error against it). ``make_session(lookahead_ms, instruction)`` builds a fresh session (``avitalk.top.live.LiveSession``;
passed in because this package sits under the top layer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from avitalk.types import FlameSequence, MOTION_FPS


def stream(session, samples: np.ndarray, chunk: int) -> FlameSequence:
    """Feed ``samples`` in chunks of ``chunk`` samples and return everything the session made."""
    for i in range(0, len(samples), chunk):
        session.feed(samples[i : i + chunk])
    session.finish()
    return session.sequence()


def evaluate_live(pipe, make_session: Callable[[float, str], Any], data,
                  lookaheads_ms: Sequence[float] = (0, 40, 80, 120, 200),
                  split: str | None = "test", instruction: str | None = None, limit: int | None = None,
                  speakers: Sequence[str] | None = None, chunk_ms: float = 20.0, seed: int = 0,
                  progress: bool = True) -> dict[str, Any]:
    """Clips of a dataset folder. ``instruction``: the same one for every clip (e.g. "A person speaks."), default
    each clip's first written instruction (SynthTalk). Returns medians per look-ahead and the offline path's."""
    from tqdm import tqdm

    from avitalk import audio as audio_io
    from avitalk.data.manifest import read_manifest
    from avitalk.flame import FlameModel
    from avitalk.types import SAMPLE_RATE

    from . import bilabial as bl
    from .real_speech import LipGap, loudness_db, mouth_loudness, summarize
    from .vertex import lve_squared_max

    data = Path(data)
    clips = read_manifest(data, None if split in (None, "all") else split)
    if speakers:
        clips = [c for c in clips if c.speaker in set(speakers)]
    clips = clips[:limit]
    model = FlameModel.from_spec(pipe.cfg.flame_model)
    gap = LipGap(model)
    lips = model.region("lips") if "lips" in model.regions else None
    aligner = bl.WordAligner()
    chunk = max(1, int(round(chunk_ms / 1000.0 * SAMPLE_RATE)))
    keys = ["offline"] + [f"{int(la)}ms" for la in lookaheads_ms]
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in keys}
    closure: dict[str, list] = {k: [] for k in keys}
    for c in tqdm(clips, desc="live vs offline", unit="clip", disable=not progress or None):
        a = audio_io.load(data / c.audio)
        text = instruction or (c.instructions[0] if c.instructions else "A person speaks.")
        seqs = {"offline": pipe.synthesize(a, text, seed=seed)[0]}
        for la in lookaheads_ms:
            seqs[f"{int(la)}ms"] = stream(make_session(la, text), a.samples, chunk)
        db = loudness_db(a.samples, a.num_frames())
        words = aligner.align(a.samples, c.extra.get("text") or aligner.transcribe(a.samples))
        events = bl.events_from_words(words, bl.align_lag(c.extra))
        gt = FlameSequence.load(data / c.flame) if c.flame else None
        g_off = gap(seqs["offline"])
        for k, s in seqs.items():
            g = gap(s)
            n = min(len(g), len(g_off))
            row = {**mouth_loudness(g, db),
                   "gap_r_offline": float(np.corrcoef(g[:n], g_off[:n])[0, 1]) if g[:n].std() > 1e-9 else float("nan"),
                   "frames": len(g)}
            if gt is not None and lips is not None:
                m = min(len(gt.expression), len(s.expression))
                pv = model.sequence_vertices(FlameSequence(s.expression[:m], s.jaw_pose[:m], fps=MOTION_FPS))
                gv = model.sequence_vertices(FlameSequence(gt.expression[:m], gt.jaw_pose[:m], fps=MOTION_FPS))
                row["lve_mm"] = lve_squared_max(pv, gv, lips)
            rows[k].append(row)
            closure[k].append(bl.closure_scores(g, events))
    out: dict[str, Any] = {"data": str(data), "split": split or "all", "clips": len(clips), "chunk_ms": chunk_ms,
                           "instruction": instruction or "each clip's own"}
    for k in keys:
        r = rows[k]
        out[k] = {"loudness_r": summarize([x["r"] for x in r]),
                  "silence_rest_ratio": summarize([x["silence_rest_ratio"] for x in r]),
                  "gap_r_offline": summarize([x["gap_r_offline"] for x in r]),
                  "bilabial": bl.pooled(closure[k])}
        if r and "lve_mm" in r[0]:
            out[k]["lve_mm"] = summarize([x["lve_mm"] for x in r])
    return out


def table_lines(res: dict[str, Any]) -> list[str]:
    """A markdown table: one row per look-ahead and the offline path."""
    lve = "lve_mm" in res.get("offline", {})
    head = "| | loudness r | silence rest | bilabials closed | lip gap r vs offline |" + (" LVE mm |" if lve else "")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    rows = [k for k, v in res.items() if isinstance(v, dict) and "loudness_r" in v]
    rows.sort(key=lambda k: -1.0 if k == "offline" else float(k[:-2]))  # offline, then by look-ahead
    for k in rows:
        v = res[k]
        b = v["bilabial"]
        cells = [k, f"{v['loudness_r']['median']:.3f}", f"{v['silence_rest_ratio']['median']:.3f}",
                 f"{100 * b.get('bilabial_closure_rate', float('nan')):.1f}% of {b.get('bilabials', 0)}",
                 f"{v['gap_r_offline']['median']:.3f}"] + ([f"{v['lve_mm']['median']:.3f}"] if lve else [])
        lines.append("| " + " | ".join(cells) + " |")
    return lines
