"""Lip sync against real faces: generated motion vs the motion tracked from the talker's own video.

For a dataset of real talking faces with tracked motion and word times (``avitalk data grid``), per clip:

- **lip-gap r**: Pearson correlation of the generated and the tracked lip gap (mm, frame by frame);
- **lip vertex error**: per frame the largest lip-vertex distance between generated and tracked (mm, MMHead's
  convention), averaged; both on the same head at its rest identity (the talker's identity is not motion);
- **bilabial closure / open vowels** at the corpus's own word times (GRID's alignments, phonemes placed in each word
  by espeak as in :mod:`eval.bilabial`): for the generated face, and for the tracked face as the reference of what
  the metric gives on the real person.

Stage 2 speaks each clip with the clip's own (neutral) instruction, so the numbers are about the lips, not stage 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def evaluate_tracked(pipe, data, split: str = "test", limit: int | None = None, seed: int = 0,
                     progress: bool = True, batch_size: int = 32) -> dict[str, Any]:
    import time

    from tqdm import tqdm

    from avitalk import audio as audio_io
    from avitalk.data.manifest import read_manifest
    from avitalk.errors import DatasetError
    from avitalk.flame import FlameModel
    from avitalk.types import FlameSequence

    from . import bilabial as bl
    from .real_speech import LipGap, summarize
    from .vertex import lve_euclidean_max

    data = Path(data)
    clips = [c for c in read_manifest(data, None if split == "all" else split) if c.flame and c.extra.get("words")]
    clips = clips[:limit]
    if not clips:
        raise DatasetError(f"{data}: no clips with tracked motion and word times in split {split!r} "
                           "(import real talking faces with `avitalk data grid`)")
    model = FlameModel.from_spec(pipe.cfg.flame_model)
    gap = LipGap(model)
    lips = model.region("lips")
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    closure: dict[str, list] = {"generated": [], "tracked": []}
    bar = tqdm(total=len(clips), desc="tracked faces", unit="clip", disable=not progress or None)
    for b0 in range(0, len(clips), batch_size):
        batch = clips[b0 : b0 + batch_size]
        auds = [audio_io.load(data / c.audio) for c in batch]
        gen = pipe.synthesize_many(auds, [c.instructions[0] for c in batch],
                                   seeds=[seed + b0 + k for k in range(len(batch))])
        for c, g in zip(batch, gen):
            tracked = FlameSequence.load(data / c.flame)
            ours = g[0]
            T = min(ours.num_frames, tracked.num_frames)
            go, gt = gap(ours)[:T], gap(tracked)[:T]
            r = float(np.corrcoef(go, gt)[0, 1]) if go.std() > 1e-6 and gt.std() > 1e-6 else float("nan")
            vo = model.sequence_vertices(FlameSequence(ours.expression[:T], ours.jaw_pose[:T]))
            vt = model.sequence_vertices(FlameSequence(tracked.expression[:T], tracked.jaw_pose[:T]))
            events = bl.events_from_words([tuple(w) for w in c.extra["words"]], 0.0)
            cs = {"generated": bl.closure_scores(go, events), "tracked": bl.closure_scores(gt, events)}
            for k in cs:
                closure[k].append(cs[k])
            rows.append({"id": c.id, "lip_gap_r": r, "lip_vertex_error_mm": lve_euclidean_max(vo, vt, lips),
                         "gap_mm_generated": float(go.mean()), "gap_mm_tracked": float(gt.mean()), **{
                             f"{k}_{n}": v for k, d in cs.items() for n, v in d.items()}})
            bar.update(1)
    bar.close()
    return {
        "data": str(data), "split": split, "clips": len(rows), "seconds": time.perf_counter() - t0,
        "lip_gap_r": summarize([r["lip_gap_r"] for r in rows]),
        "lip_vertex_error_mm": summarize([r["lip_vertex_error_mm"] for r in rows]),
        "mean_gap_mm": {"generated": float(np.mean([r["gap_mm_generated"] for r in rows])),
                        "tracked": float(np.mean([r["gap_mm_tracked"] for r in rows]))},
        "closure": {k: bl.pooled(v) for k, v in closure.items()},
        "per_clip": rows,
    }


def tracked_lines(res: dict[str, Any]) -> list[str]:
    """The summary a person reads (the CLI prints it; the report holds it)."""
    c = res["closure"]
    return [
        f"{res['clips']} clips ({res['split']}) of real talking faces, generated vs tracked:",
        f"  lip-gap correlation, median per clip: {res['lip_gap_r']['median']:.3f}",
        f"  lip vertex error (largest lip vertex, mean over frames): {res['lip_vertex_error_mm']['median']:.2f} mm",
        f"  mean lip gap: generated {res['mean_gap_mm']['generated']:.1f} mm, tracked {res['mean_gap_mm']['tracked']:.1f} mm",
        f"  bilabials closed at the corpus's word times: generated {c['generated']['bilabial_closure_rate']:.1%}, "
        f"tracked {c['tracked']['bilabial_closure_rate']:.1%} (of {c['generated']['bilabials']})",
        f"  open vowels open: generated {c['generated']['open_vowel_open_rate']:.1%}, "
        f"tracked {c['tracked']['open_vowel_open_rate']:.1%} (of {c['generated']['open_vowels']})",
    ]


def comparison_lines(res: dict[str, Any], base: dict[str, Any], names: tuple[str, str]) -> list[str]:
    """A markdown table of two decoders on the same clips (``res`` and ``base`` from :func:`evaluate_tracked`), with
    the tracked face's own closure as the reference column."""
    def row(r: dict[str, Any]) -> list[str]:
        c = r["closure"]["generated"]
        return [f"{r['lip_gap_r']['median']:.3f}", f"{r['lip_vertex_error_mm']['median']:.2f}",
                f"{r['mean_gap_mm']['generated']:.1f}", f"{c['bilabial_closure_rate']:.1%}",
                f"{c['open_vowel_open_rate']:.1%}"]

    t = res["closure"]["tracked"]
    lines = [f"{res['clips']} clips ({res['split']}) | lip-gap r (median) | lip vertex error (mm, median) | "
             "mean lip gap (mm) | /b p m/ closed | open vowels open", "|".join(["---"] * 6)]
    lines += [f"{n} | " + " | ".join(row(r)) for n, r in zip(names, (res, base))]
    lines.append(f"tracked face | 1 | 0 | {res['mean_gap_mm']['tracked']:.1f} | {t['bilabial_closure_rate']:.1%} | "
                 f"{t['open_vowel_open_rate']:.1%}")
    return lines


def write_tracked_report(res: dict[str, Any], out) -> None:
    from avitalk.io import atomic_write_json, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "tracked.json", res)
    text = ["# Lip sync against tracked real faces", "", *tracked_lines(res), "",
            "Lip-gap correlation: does the generated mouth open and close when the person's does. Lip vertex error: "
            "how far the generated lips are from the tracked ones. Closure: share of /b p m/ at which the lips meet "
            "(gap <= 1 mm within 80 ms), and of open vowels at which they part (>= 3 mm); the tracked column is "
            "what the same test gives on the person's own (tracked) face."]
    if res.get("baseline"):
        b = res["baseline"]
        text += ["", f"Beside the baseline `{b['checkpoint']}` on the same clips:", "",
                 *comparison_lines(res, b, (f"`{res.get('checkpoint', 'checkpoint')}`", f"`{b['checkpoint']}`"))]
    atomic_write_text(out / "tracked.md", "\n".join(text) + "\n")
