"""Stage 1 measured on a dataset split: instruction metrics (emotion, intensity, AU F1, BLEU, ROUGE-L) with the speech
tokens and without them (the ablation), examples, and generation speed; through :class:`Instructor`, the same path
as inference."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from avitalk.text_metrics import instruction_scores
from avitalk.types import FEATURE_RATE
from avitalk.vocab import EMOTIONS
from avitalk.stage1_instruct.features import FeatureBank
from avitalk.stage1_instruct.hearing import prosody_dim
from avitalk.stage1_instruct.instructor import Instructor


def evaluate_stage1(ckpt: str | os.PathLike, data: str | os.PathLike, split: str = "test",
                    limit: int | None = None) -> dict[str, Any]:
    from avitalk.data.dataset import FeatureCache
    from avitalk.encoders import audio_encoder_from_config

    model = Instructor.load(ckpt)
    cfg = model.cfg
    data = Path(data)
    enc = audio_encoder_from_config(cfg.audio_encoder)
    cache = FeatureCache(data / "features", enc.key)
    pcache = None
    if prosody_dim(cfg):
        from avitalk.encoders.cache import cache_dataset_features
        from avitalk.encoders.prosody import ProsodyEncoder

        pcache = cache_dataset_features(data, ProsodyEncoder(), progress=False)
    bank = FeatureBank(data, split, cache, limit, pcache)

    def run(use_speech: bool) -> tuple[list[str], float]:
        outs = []
        t = time.perf_counter()
        for s in range(0, len(bank.clips), 16):
            idx = list(range(s, min(s + 16, len(bank.clips))))
            f, m = bank.batch(idx, augment_p=0.0)  # the clean features
            outs += [o[0] for o in model.generate(f, m, use_speech=use_speech)]
        return outs, time.perf_counter() - t

    gen, t_gen = run(True)
    abl, _ = run(False)

    def scores(outs: list[str]) -> dict[str, float]:
        return instruction_scores(outs, [list(c.instructions) for c in bank.clips],
                                  [c.emotion for c in bank.clips], [c.intensity for c in bank.clips])

    # speed: instruct 5 s of speech (encoder excluded): generation time and tokens/s
    f5, m5 = bank.batch([int(np.argmin([abs(len(x) - 5 * FEATURE_RATE) for x in bank.feats]))], augment_p=0.0)
    model.generate(f5, m5)
    t = time.perf_counter()
    out = model.generate(f5, m5)[0][0]
    dt = time.perf_counter() - t
    ntok = len(model.token_ids(out)) + 1
    return {
        "split": split,
        "clips": len(bank.clips),
        "with_speech": scores(gen),
        "ablation_speech_tokens_removed": scores(abl),
        "chance_emotion": 1 / len(EMOTIONS),
        "examples": [{"id": c.id, "reference": c.instructions[0], "generated": g} for c, g in list(zip(bank.clips, gen))[:8]],
        "speed": {"instruct_5s_s": dt, "tokens_per_s": ntok / dt, "eval_generation_s": t_gen},
    }
