"""How late the bilabial metric's word aligner is on a corpus: ``python scripts/aligner_lag.py DATA [--clips N]``.

For every word that starts with /b/ or /p/ before a vowel letter ("by", "paper"), the clip's words are aligned with
the embedded Whisper (the bilabial metric's aligner, ``eval.bilabial.WordAligner``) and the stop's acoustic release is
found near the aligned word start (``eval.bilabial.release_time``: the steepest rise of the short-time energy). The
median of (release - aligned start) is the aligner's lag on that corpus, with no phoneme times needed. On SynthTalk,
where espeak's phoneme events are the truth, it also prints the aligner's and the detector's errors against them (the
check that the detector finds releases). Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def word_initial_stops(words):
    for w, s, _ in words:
        ww = w.lower().strip(".,;:!?\"'()")
        if len(ww) > 1 and ww[0] in "bp" and ww[1] in "aeiouy":
            yield ww, s


def measure(data: Path, clips: int | None = None, split: str | None = None, progress: bool = True) -> dict:
    from tqdm import tqdm

    from avitalk import audio as audio_io
    from avitalk.data.manifest import read_manifest
    from avitalk.types import FlameSequence
    from avitalk.eval.bilabial import WordAligner, events_from_phonemes, release_time

    rows = read_manifest(data, split)[:clips]
    al = WordAligner()
    det_minus_start, start_minus_true, det_minus_true = [], [], []
    for c in tqdm(rows, desc="aligner lag", unit="clip", disable=not progress or None):
        a = audio_io.load(data / c.audio)
        text = c.extra.get("text") or al.transcribe(a.samples)
        truth = []
        if c.flame and (data / c.flame).is_file():
            seq = FlameSequence.load(data / c.flame)
            truth = [t for k, t in events_from_phonemes(seq.meta.get("phonemes", [])) if k == "bilabial"]
        for _, s in word_initial_stops(al.align(a.samples, text)):
            r = release_time(a.samples, s)
            det_minus_start.append(r - s)
            near = [t for t in truth if abs(t - s) < 0.3]
            if near:
                t = min(near, key=lambda q: abs(q - s))
                start_minus_true.append(s - t)
                det_minus_true.append(r - t)

    def q(v):
        v = np.asarray(v) * 1000
        return {"n": int(len(v)), **({f"p{p}": float(np.percentile(v, p)) for p in (10, 25, 50, 75, 90)} if len(v) else {})}

    return {"data": str(data), "clips": len(rows), "release_minus_aligned_start_ms": q(det_minus_start),
            "aligned_start_minus_true_ms": q(start_minus_true), "release_minus_true_ms": q(det_minus_true)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="dataset folder (manifest.jsonl), e.g. data/ravdess or data/st")
    ap.add_argument("--clips", type=int, default=300)
    ap.add_argument("--split", default=None, help="train / val / test (default: all)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    from avitalk.errors import AvitalkError

    try:
        res = measure(a.data, a.clips, a.split)
    except AvitalkError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)  # a usage mistake, as the CLI and argparse answer it
    print(f"{res['data']}: {res['clips']} clips (ms; median [p25, p75], word-initial /b p/ before a vowel)")
    for k, v in res.items():
        if isinstance(v, dict) and v["n"]:
            print(f"  {k:34s} {v['p50']:+6.0f} [{v['p25']:+.0f}, {v['p75']:+.0f}]  n={v['n']}")
    if a.out:
        from avitalk.io import atomic_write_json

        atomic_write_json(a.out, res)


if __name__ == "__main__":
    main()
