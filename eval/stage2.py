"""Stage 2 measured on a dataset split (SynthTalk test speakers by default), with the benchmark's own parts.

* Lip sync: LVE (:func:`.vertex.lve_euclidean_max`: per frame the largest Euclidean lip-vertex error; mean over frames
  and clips, mm) against ground truth, next to two baselines from the same run: the neutral face and the mean
  training motion.
* Instruction faithfulness: the evaluator network (:mod:`.evaluator`, trained on ground-truth training motion) reads
  the emotion of generated motion: with the clip's ground-truth instruction, and with its emotion word replaced by
  another emotion (controllability; the rest of the sentence unchanged).
* Diversity (:mod:`.diversity`): 10 prior samples per clip, in style space and in vertex space.
* Speed: synthesis of 10 s of speech with the audio encoder excluded; the encoder's time per second of speech.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avitalk.vocab import EMOTIONS


def evaluate_stage2(ckpt: str | Path, data: str | Path, split: str = "test", limit: int | None = None,
                    seed: int = 0, num_samples: int = 10, diversity_clips: int = 30,
                    guidance_scale: float | None = None, sampler: str | None = None, steps: int | None = None,
                    evaluator=None, synth=None, lip_seal: bool | None = None) -> dict[str, Any]:
    """``sampler`` / ``steps`` / ``guidance_scale`` / ``lip_seal`` override the checkpoint's sampling; ``evaluator`` (a trained
    MotionEvaluator) and ``synth`` (a loaded Synthesizer) skip training / loading them again (sweeps)."""
    from avitalk.data.dataset import FeatureCache
    from avitalk.flame import FlameModel
    from avitalk.vocab import load_vocabulary
    from avitalk.stage2_synthesis.clips import ClipBank
    from avitalk.stage2_synthesis.synthesizer import Synthesizer

    from .diversity import diversity, vertex_diversity
    from .evaluator import train_evaluator
    from .vertex import lve_euclidean_max

    data = Path(data)
    synth = synth or Synthesizer.load(ckpt)
    samp = synth.cfg.stage2.sampling
    if guidance_scale is not None:
        samp.guidance_scale = float(guidance_scale)
    if sampler is not None:
        samp.sampler = sampler
    if steps is not None:
        samp.steps = int(steps)
    if lip_seal is not None:
        samp.lip_seal = bool(lip_seal)
    cache = FeatureCache(data / "features", synth.audio_encoder.key)
    train = ClipBank(data, "train", cache)
    test = ClipBank(data, split, cache, limit)
    model = FlameModel.from_spec(synth.cfg.flame_model)
    lips = model.region("lips")
    lip_model = model.subset(lips)

    def lve_mm(pred: np.ndarray, gt: np.ndarray) -> float:
        with torch.no_grad():
            vp = lip_model(torch.as_tensor(pred[:, :-3]), torch.as_tensor(pred[:, -3:]))
            vg = lip_model(torch.as_tensor(gt[:, :-3]), torch.as_tensor(gt[:, -3:]))
        return lve_euclidean_max(vp, vg, np.arange(len(lips)))

    vocab = load_vocabulary()
    raw_feats = [cache.get(i) for i in test.ids]

    def run(texts: list[str], use_prior: bool = True, k: int = 1) -> list[np.ndarray]:
        out = []
        for i, text in enumerate(texts):
            seqs = synth.synthesize(raw_feats[i], text, num_samples=k, seed=seed + i, use_prior=use_prior,
                                    num_frames=len(test.motion[i]))
            out.append(seqs[0].motion() if k == 1 else np.stack([s.motion() for s in seqs]))
        return out

    t0 = time.perf_counter()
    gt_texts = [ins[0] for ins in test.instructions]
    pred = run(gt_texts)
    pred_map = run(gt_texts, use_prior=False)
    # edited instructions: each clip's emotion word replaced by another emotion (cycling through the other seven)
    targets, edited = [], []
    for i, lab in enumerate(test.labels):
        others = [e for e in EMOTIONS if e != lab["emotion"]]
        tgt = others[i % len(others)]
        targets.append(tgt)
        edited.append(vocab.replace_emotion(gt_texts[i], tgt))
    pred_edit = run(edited)
    t_synth = time.perf_counter() - t0

    # lip sync against baselines
    mean_motion = np.concatenate(train.motion).mean(0)
    lve = {"model": [], "model_no_prior": [], "neutral": [], "mean_motion": []}
    for i, gt in enumerate(test.motion):
        lve["model"].append(lve_mm(pred[i], gt))
        lve["model_no_prior"].append(lve_mm(pred_map[i], gt))
        lve["neutral"].append(lve_mm(np.zeros_like(gt), gt))
        lve["mean_motion"].append(lve_mm(np.repeat(mean_motion[None], len(gt), 0), gt))
    lve = {k: float(np.mean(v)) for k, v in lve.items()}

    # emotion read by the benchmark's evaluator network, trained on ground-truth training motion
    clf = evaluator or train_evaluator(train.motion, [lab["emotion"] for lab in train.labels],
                                       synth.text_encoder.encode([ins[0] for ins in train.instructions]), steps=600,
                                       seed=seed)
    classify = lambda motions: clf.classify(motions)  # noqa: E731
    y = np.array([EMOTIONS.index(lab["emotion"]) for lab in test.labels])
    y_edit = np.array([EMOTIONS.index(t) for t in targets])
    acc = {
        "ground_truth_motion": float((classify(test.motion) == y).mean()),
        "generated_gt_instruction": float((classify(pred) == y).mean()),
        "generated_no_prior": float((classify(pred_map) == y).mean()),
        "generated_edited_instruction": float((classify(pred_edit) == y_edit).mean()),
    }
    per_emotion = {}
    pe = classify(pred)
    for k, e in enumerate(EMOTIONS):
        sel = y == k
        if sel.any():
            per_emotion[e] = float((pe[sel] == k).mean())

    # diversity of prior samples
    n_div = min(diversity_clips, len(test))
    z_div, v_div = [], []
    face = model.subset(model.region("face"))
    for i in range(n_div):
        z_div.append(diversity(synth.styles([gt_texts[i]], num_samples, seed=seed + i)[0].cpu().numpy()))
        seqs = synth.synthesize(raw_feats[i], gt_texts[i], num_samples=num_samples, seed=seed + i,
                                num_frames=len(test.motion[i]))
        with torch.no_grad():
            vs = torch.stack([face(torch.as_tensor(s.expression), torch.as_tensor(s.jaw_pose)) for s in seqs])  # [K,T,V,3]
        v_div.append(vertex_diversity(vs.numpy()))

    # speed: 10 s of speech, encoder excluded; encoder per second of speech
    from avitalk.types import SAMPLE_RATE, Audio

    rng = np.random.default_rng(seed)
    ten = Audio((0.1 * rng.normal(size=10 * SAMPLE_RATE)).astype(np.float32))
    t = time.perf_counter()
    feats10 = synth.features(ten)
    enc_s = time.perf_counter() - t
    synth.synthesize(feats10, gt_texts[0], seed=seed)  # warm-up
    times = []
    for _ in range(5):
        t = time.perf_counter()
        synth.synthesize(feats10, gt_texts[0], seed=seed)
        times.append(time.perf_counter() - t)

    return {
        "split": split,
        "clips": len(test),
        "guidance_scale": float(samp.guidance_scale),
        "sampler": str(samp.sampler), "steps": int(samp.steps), "lip_seal": bool(samp.lip_seal),
        "lve_mm": lve,
        "lve_ratio_to_best_baseline": lve["model"] / min(lve["neutral"], lve["mean_motion"]),
        "emotion_accuracy": acc,
        "emotion_accuracy_per_emotion": per_emotion,
        "diversity": {"style_space": float(np.mean(z_div)), "vertex_space_mm": float(np.mean(v_div)),
                      "clips": n_div, "samples": num_samples},
        "speed": {"synthesize_10s_s": float(np.median(times)), "audio_encoder_s_per_speech_s": enc_s / 10.0,
                  "eval_synthesis_s": t_synth},
    }


def stage2_evaluator(synth, data: str | Path, seed: int = 0):
    """The evaluator :func:`evaluate_stage2` trains on the training split's ground-truth motion (for reuse in sweeps)."""
    from avitalk.data.dataset import FeatureCache
    from avitalk.stage2_synthesis.clips import ClipBank

    from .evaluator import train_evaluator

    train = ClipBank(Path(data), "train", FeatureCache(Path(data) / "features", synth.audio_encoder.key))
    return train_evaluator(train.motion, [lab["emotion"] for lab in train.labels],
                           synth.text_encoder.encode([ins[0] for ins in train.instructions]), steps=600, seed=seed)


if __name__ == "__main__":  # python -m avitalk.eval.stage2 CKPT DATA [SPLIT]
    import json
    import sys

    from avitalk.io import atomic_write_json

    res = evaluate_stage2(sys.argv[1], sys.argv[2], *(sys.argv[3:4]))
    atomic_write_json(Path(sys.argv[1]) / "metrics.json", res)
    print(json.dumps(res, indent=2))
