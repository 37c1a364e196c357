"""Model speed on this machine (weights do not change speed, so the tiny-config networks run with random weights):
stage 2 synthesis of 10 s of speech (audio encoder excluded), the audio encoder per second of speech, and stage-1
generation for 5 s of speech (tokens/s)."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from avitalk.types import FEATURE_RATE, SAMPLE_RATE

ROOT = Path(__file__).resolve().parents[1]


def _median(fn, n: int = 5) -> float:
    fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def bench_stage2() -> dict:
    from omegaconf import OmegaConf

    from avitalk.types import Audio
    from avitalk.stage2_synthesis.synthesizer import Synthesizer

    torch.manual_seed(0)
    cfg = OmegaConf.load(ROOT / "configs" / "tiny.yaml")
    synth = Synthesizer.build(cfg)
    rng = np.random.default_rng(0)
    ten = Audio((0.1 * rng.normal(size=10 * SAMPLE_RATE)).astype(np.float32))
    enc = _median(lambda: synth.features(ten), 3)
    feats = synth.features(ten)
    text = "A furious man speaks with brow strongly lowered and lip mildly pressed."
    syn = _median(lambda: synth.synthesize(feats, text, seed=0))
    syn4 = _median(lambda: synth.synthesize(feats, text, num_samples=4, seed=0), 3)
    return {"name": "stage2", "synthesize_10s_s": syn, "synthesize_10s_4_samples_s": syn4,
            "audio_encoder_s_per_speech_s": enc / 10.0, "encoder": synth.audio_encoder.key}


def bench_stage1() -> dict:
    from omegaconf import OmegaConf

    from avitalk.vocab import EMOTIONS, load_vocabulary
    from avitalk.stage1_instruct.lm_pretrain import tiny_llama, train_tokenizer
    from avitalk.stage1_instruct.hearing import prosody_dim
    from avitalk.stage1_instruct.model import build_model

    cfg = OmegaConf.load(ROOT / "configs" / "tiny.yaml")
    v = load_vocabulary()
    rng = np.random.default_rng(0)
    texts = [v.write(e, i, [("AU04_brow_lower", 0.7), ("AU12_lip_corner_pull", 0.4)], "male", rng)
             for e in EMOTIONS for i in (1, 2, 3) for _ in range(5)]
    tok = train_tokenizer(texts, 1024)
    t = cfg.stage1.tiny_lm
    llm = tiny_llama(tok, hidden=t.hidden, layers=t.layers, heads=t.heads, kv_heads=t.kv_heads, ff=t.ff,
                     max_positions=t.max_positions, seed=int(cfg.seed))
    from avitalk.encoders import audio_encoder_from_config

    cfg.audio_dim = int(audio_encoder_from_config(cfg.audio_encoder).dim)
    from avitalk.encoders.text import text_encoder_from_config

    model = build_model(cfg, tok, llm, text_encoder_from_config(cfg.stage2.text_encoder).dim).eval()
    n = 5 * FEATURE_RATE  # 5 s of features
    feats = torch.randn(1, n, cfg.audio_dim + prosody_dim(cfg))  # (+ appended prosody channels)
    mask = torch.ones(1, n, dtype=torch.bool)
    n_new = 48
    pre, att = model.prefix(feats, mask)[:2]

    def gen():  # random weights rarely stop early: time a fixed number of new tokens
        return model.llm.generate(inputs_embeds=pre, attention_mask=att, max_new_tokens=n_new, min_new_tokens=n_new,
                                  do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)

    new_tokens = gen().shape[1]
    sec = _median(gen)
    # the runtime `avitalk run` uses: the same weights on LlamaLite (plain torch, KV cache)
    import tempfile

    from avitalk.lean.llama import LlamaLite

    from avitalk.stage1_instruct.lm import save_lm

    with tempfile.TemporaryDirectory() as d:
        save_lm(None, model.llm, Path(d))  # the frozen LM alone (the adapter is zero-initialised: no LoRA needed)
        lite = LlamaLite.from_pretrained(Path(d) / "lm")
    lean = _median(lambda: lite.generate(pre.detach(), att, max_new_tokens=n_new, eos_token_id=None))
    return {"name": "stage1", "generate_48_tokens_5s_speech_s": sec, "tokens_per_s": new_tokens / sec,
            "lean_generate_48_tokens_5s_speech_s": lean, "lean_tokens_per_s": n_new / lean,
            "params_lm": sum(p.numel() for p in llm.parameters())}


BENCHES = {"stage2": bench_stage2, "stage1": bench_stage1}

if __name__ == "__main__":
    print(json.dumps(BENCHES[sys.argv[1]]()))
