"""Stage-2 measurements on a dataset split (SynthTalk test speakers by default).

* Lip sync: LVE (per frame, the largest Euclidean error over the lip vertices; mean over frames and clips, mm)
  against ground truth, next to two baselines from the same run: the neutral face and the mean training motion.
* Instruction faithfulness: a small emotion classifier trained on ground-truth training motion reads the emotion
  of generated motion: with the clip's ground-truth instruction, and with its emotion word replaced by another
  emotion (controllability; the rest of the sentence unchanged).
* Diversity: 10 prior samples per clip, mean pairwise L2 in style space and in vertex space.
* Speed: synthesis of 10 s of speech with the audio encoder excluded; the encoder's time per second of speech.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from avitalk.vocab import EMOTIONS


class MotionEmotionClassifier(nn.Module):
    """Motion [B, T, 53] -> emotion logits: two temporal convolutions, masked mean pooling."""

    def __init__(self, n_motion: int = 53, hidden: int = 128, n_classes: int = len(EMOTIONS)):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(n_motion, hidden, 5, padding=2), nn.GELU(), nn.Dropout(0.1),
                                 nn.Conv1d(hidden, hidden, 5, padding=2), nn.GELU())
        self.head = nn.Linear(hidden, n_classes)
        self.register_buffer("mean", torch.zeros(n_motion))
        self.register_buffer("std", torch.ones(n_motion))

    def forward(self, motion: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.net(((motion - self.mean) / self.std).transpose(1, 2)).transpose(1, 2)
        m = mask.unsqueeze(-1).float()
        return self.head((h * m).sum(1) / m.sum(1).clamp_min(1))


def train_emotion_classifier(bank, steps: int = 600, crop: int = 64, seed: int = 0) -> MotionEmotionClassifier:
    from .train import _pad

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    clf = MotionEmotionClassifier()
    allm = np.concatenate(bank.motion)
    clf.mean.copy_(torch.as_tensor(allm.mean(0)))
    clf.std.copy_(torch.as_tensor(allm.std(0)).clamp_min(1e-3))
    y_all = np.array([EMOTIONS.index(lab["emotion"]) for lab in bank.labels])
    opt = torch.optim.AdamW(clf.parameters(), lr=2e-3, weight_decay=1e-2)
    for _ in range(steps):
        idx = rng.integers(0, len(bank), 32)
        crops = []
        for i in idx:
            T = len(bank.motion[i])
            s = int(rng.integers(0, T - crop + 1)) if T > crop else 0
            crops.append(bank.motion[i][s : s + crop])
        m, mask = _pad(crops, crop)
        loss = nn.functional.cross_entropy(clf(m, mask), torch.as_tensor(y_all[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return clf.eval()


@torch.no_grad()
def classify(clf: MotionEmotionClassifier, motions: list[np.ndarray]) -> np.ndarray:
    from .train import _pad

    out = []
    for s in range(0, len(motions), 64):
        m, mask = _pad(motions[s : s + 64])
        out.append(clf(m, mask).argmax(-1).numpy())
    return np.concatenate(out)


def lve_mm(model, lips: np.ndarray, pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean over frames of the largest Euclidean lip-vertex error (mm). pred / gt: motion [T, 53]."""
    from avitalk.types import FlameSequence

    sub = model.subset(lips)
    with torch.no_grad():
        vp = sub(torch.as_tensor(pred[:, :-3]), torch.as_tensor(pred[:, -3:]))
        vg = sub(torch.as_tensor(gt[:, :-3]), torch.as_tensor(gt[:, -3:]))
    return float((vp - vg).norm(dim=-1).max(dim=1).values.mean() * 1000)


def evaluate_stage2(ckpt: str | Path, data: str | Path, split: str = "test", limit: int | None = None,
                    seed: int = 0, num_samples: int = 10, diversity_clips: int = 30,
                    guidance_scale: float | None = None) -> dict[str, Any]:
    from avitalk.data.dataset import FeatureCache
    from avitalk.flame import FlameModel
    from avitalk.vocab import load_vocabulary

    from .synthesizer import Synthesizer
    from .train import ClipBank

    data = Path(data)
    synth = Synthesizer.load(ckpt)
    if guidance_scale is not None:
        synth.cfg.stage2.sampling.guidance_scale = float(guidance_scale)
    cache = FeatureCache(data / "features", synth.audio_encoder.key)
    train = ClipBank(data, "train", cache)
    test = ClipBank(data, split, cache, limit)
    model = FlameModel.from_spec(synth.cfg.flame_model)
    lips = model.region("lips")
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
        lve["model"].append(lve_mm(model, lips, pred[i], gt))
        lve["model_no_prior"].append(lve_mm(model, lips, pred_map[i], gt))
        lve["neutral"].append(lve_mm(model, lips, np.zeros_like(gt), gt))
        lve["mean_motion"].append(lve_mm(model, lips, np.repeat(mean_motion[None], len(gt), 0), gt))
    lve = {k: float(np.mean(v)) for k, v in lve.items()}

    # emotion read by a classifier trained on ground-truth motion
    clf = train_emotion_classifier(train, seed=seed)
    y = np.array([EMOTIONS.index(lab["emotion"]) for lab in test.labels])
    y_edit = np.array([EMOTIONS.index(t) for t in targets])
    acc = {
        "ground_truth_motion": float((classify(clf, test.motion) == y).mean()),
        "generated_gt_instruction": float((classify(clf, pred) == y).mean()),
        "generated_no_prior": float((classify(clf, pred_map) == y).mean()),
        "generated_edited_instruction": float((classify(clf, pred_edit) == y_edit).mean()),
    }
    per_emotion = {}
    pe = classify(clf, pred)
    for k, e in enumerate(EMOTIONS):
        sel = y == k
        if sel.any():
            per_emotion[e] = float((pe[sel] == k).mean())

    # diversity of prior samples
    n_div = min(diversity_clips, len(test))
    z_div, v_div = [], []
    face = model.subset(model.region("face"))
    for i in range(n_div):
        z = synth.styles([gt_texts[i]], num_samples, seed=seed + i)[0]
        d = torch.cdist(z, z)
        z_div.append(float(d.sum() / (num_samples * (num_samples - 1))))
        seqs = synth.synthesize(raw_feats[i], gt_texts[i], num_samples=num_samples, seed=seed + i,
                                num_frames=len(test.motion[i]))
        with torch.no_grad():
            vs = torch.stack([face(torch.as_tensor(s.expression), torch.as_tensor(s.jaw_pose)) for s in seqs])  # [K,T,V,3]
        flat = vs.reshape(num_samples, -1, 3)
        pair = [(flat[a] - flat[b]).norm(dim=-1).mean() for a in range(num_samples) for b in range(num_samples) if a != b]
        v_div.append(float(torch.stack(pair).mean() * 1000))

    # speed: 10 s of speech, encoder excluded; encoder per second of speech
    from avitalk.types import Audio

    rng = np.random.default_rng(seed)
    ten = Audio((0.1 * rng.normal(size=160_000)).astype(np.float32))
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
        "guidance_scale": float(synth.cfg.stage2.sampling.guidance_scale),
        "lve_mm": lve,
        "lve_ratio_to_best_baseline": lve["model"] / min(lve["neutral"], lve["mean_motion"]),
        "emotion_accuracy": acc,
        "emotion_accuracy_per_emotion": per_emotion,
        "diversity": {"style_space": float(np.mean(z_div)), "vertex_space_mm": float(np.mean(v_div)),
                      "clips": n_div, "samples": num_samples},
        "speed": {"synthesize_10s_s": float(np.median(times)), "audio_encoder_s_per_speech_s": enc_s / 10.0,
                  "eval_synthesis_s": t_synth},
    }


if __name__ == "__main__":  # python -m stage2_synthesis.evaluate CKPT DATA [SPLIT]
    import json
    import sys

    from avitalk.io import atomic_write_json

    res = evaluate_stage2(sys.argv[1], sys.argv[2], *(sys.argv[3:4]))
    atomic_write_json(Path(sys.argv[1]) / "metrics.json", res)
    print(json.dumps(res, indent=2))
