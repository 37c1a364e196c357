"""End-to-end check of a pipeline on a dataset split: speech -> stage 1 instruction -> stage 2 motion -> the emotion
the benchmark's evaluator (eval/evaluator.py: trained on ground-truth motion of the training split, cached in
DATA/eval_cache/ and shared with `avitalk eval`) reads from the generated motion, against the
clip's ground-truth emotion. Also reports the same with the reference instruction (stage 2 alone) and stage 1's
parsed emotion, so a miss can be blamed on the stage that made it.

``python -m avitalk.eval.end_to_end CHECKPOINT DATA [--split test] [--limit N]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def evaluate_end_to_end(pipe, data: str | Path, split: str = "test", limit: int | None = None, seed: int = 0,
                        progress: bool = True, evaluator_steps: tuple[int, int] = (800, 1500),
                        batch_size: int = 32) -> dict[str, Any]:
    from tqdm import tqdm

    from avitalk import audio as audio_io
    from avitalk.data.dataset import FeatureCache
    from avitalk.data.manifest import read_manifest
    from avitalk.vocab import EMOTIONS

    from .benchmark import _evaluators

    data = Path(data)
    cache = FeatureCache(data / "features", pipe.audio_encoder.key)
    evaluator, _ = _evaluators(pipe, data, progress, evaluator_steps)
    clips = read_manifest(data, split)[:limit]
    gen, ref, said = [], [], []
    t0 = time.perf_counter()
    bar = tqdm(total=len(clips), desc="end to end", unit="clip", disable=not progress or None)
    for b0 in range(0, len(clips), batch_size):  # both stages batched over the clips (same results as one by one)
        batch = clips[b0 : b0 + batch_size]
        auds = [audio_io.load(data / c.audio) for c in batch]
        feats = [cache.get(c.id) for c in batch]
        feats = [f if f is not None else pipe.encode(a) for a, f in zip(auds, feats)]
        seeds = [seed + b0 + k for k in range(len(batch))]
        ins = pipe.instruct_many(auds, feats)
        said += [i.emotion for i in ins]
        gen += [r[0].motion() for r in pipe.synthesize_many(auds, ins, seeds=seeds, features=feats)]
        ref += [r[0].motion() for r in pipe.synthesize_many(auds, [c.instructions[0] for c in batch], seeds=seeds,
                                                            features=feats)]
        bar.update(len(batch))
    bar.close()
    dt = time.perf_counter() - t0
    y = np.array([EMOTIONS.index(c.emotion) for c in clips])
    pg, pr = evaluator.classify(gen), evaluator.classify(ref)
    per = {e: float((pg[y == k] == k).mean()) for k, e in enumerate(EMOTIONS) if (y == k).any()}
    return {
        "split": split,
        "clips": len(clips),
        "emotion_accuracy_end_to_end": float((pg == y).mean()),
        "emotion_accuracy_stage2_reference_instruction": float((pr == y).mean()),
        "stage1_emotion_accuracy": float(np.mean([s == c.emotion for s, c in zip(said, clips)])),
        "end_to_end_per_emotion": per,
        "chance": 1 / len(EMOTIONS),
        "seconds": dt,
    }


def main(argv: list[str] | None = None) -> None:
    from avitalk.io import atomic_write_json
    from avitalk.top.pipeline import AVITalkingPipeline

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("data")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--out", help="write the JSON here")
    a = ap.parse_args(argv)
    res = evaluate_end_to_end(AVITalkingPipeline.from_pretrained(a.checkpoint), a.data, a.split, a.limit)
    if a.out:
        atomic_write_json(a.out, res)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
