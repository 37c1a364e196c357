"""`make bench-gpu` (``python -m benchmarks.gpu [--device cuda] [--small]``): what a GPU does with this code.

1. Equivalence: the embedded default pipeline on the device against the CPU (the same instruction text; the motion's
   largest difference).
2. Latency: stage 1 (the default's instruction, its tokens/s), stage 2 on 10 s, 60 s and 600 s of speech by sampler
   and steps (encoder excluded: random features of the right size); evaluation over many clips, one by one against
   ``instruct_many`` / ``synthesize_many``.
3. Stage-1 decoding speed at the base and paper LLM shapes (random weights, bf16 on CUDA): tokens/s of one
   instruction (batch 1) and of a batch of 32, with transformers' ``generate`` (eager) and with our runtime
   (``avitalk.lean.llama``: growing KV cache; static KV cache; static KV cache replayed as a CUDA graph).
4. Training step rates and peak memory with random weights: stage 2 lip-sync and prior steps, stage 1 LLM + LoRA
   steps, for the tiny, base and paper shapes (``--small``: tiny only, a Llama of a few layers standing in for the
   LLMs: what the test suite runs on a CPU).

Writes ``benchmarks/results/gpu.json`` (``--out``) and prints a table; needs only the project's own packages and the
embedded checkpoint (no network, no datasets), so it runs on a bare GPU machine with this tree.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from avitalk.types import FEATURE_RATE, MOTION_FPS, SAMPLE_RATE

ROOT = Path(__file__).resolve().parents[1]
LLM_SHAPES = {  # the stage-1 LLMs of base and paper (random weights of the same shape)
    "base": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, vocab_size=151936),
    "paper": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, vocab_size=32000),
}
AUDIO_DIM = {"tiny": 772, "base": 512, "paper": 1280}
TEXT_DIM = {"tiny": 384, "base": 384, "paper": 768}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, dev: torch.device, reps: int = 5) -> float:
    fn()
    _sync(dev)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        _sync(dev)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _free(dev: torch.device) -> None:
    """Let go of the last model's memory (transformers models hold reference cycles), so peaks after it are its own."""
    import gc

    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def _peak_reset(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def _peak_gb(dev: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(dev) / 1e9 if dev.type == "cuda" else None


def equivalence(dev: torch.device) -> dict:
    from avitalk.top.pipeline import AVITalkingPipeline
    from avitalk.types import Audio

    t = np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE
    x = (0.2 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    a = Audio(x + 0.003 * np.random.default_rng(0).standard_normal(len(x)).astype(np.float32))
    cpu = AVITalkingPipeline.from_pretrained()(a, seed=0)
    pipe = AVITalkingPipeline.from_pretrained().to(dev)
    on = pipe(a, seed=0)
    out = {"same_instruction": cpu.instruction.text == on.instruction.text,
           "motion_max_abs_diff": float(np.abs(cpu.sequences[0].motion() - on.sequences[0].motion()).max()),
           "emotion_guidance": pipe.instructor._guidance()}
    if dev.type == "cuda":  # the LLM in bf16 (what a 7B one wants): does it still read the same emotion?
        half = pipe.to(dev, lm_dtype=torch.bfloat16)(a, seed=0).instruction
        out.update(bf16_llm_same_emotion=half.emotion == cpu.instruction.emotion,
                   bf16_llm_same_instruction=half.text == cpu.instruction.text)
    return out


def latency(dev: torch.device, small: bool, speech: Path | None = None) -> dict:
    from avitalk.top.pipeline import AVITalkingPipeline
    from avitalk.types import Audio

    pipe = AVITalkingPipeline.from_pretrained().to(dev)
    out: dict = {}
    t = np.arange(5 * SAMPLE_RATE) / SAMPLE_RATE
    a = Audio((0.2 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32))
    feats = pipe.encode(a)
    ins = pipe.instruct(a, features=feats)
    n_tok = len(pipe.instructor.token_ids(ins.text)) + 1
    sec = _time(lambda: pipe.instruct(a, features=feats), dev)
    out["stage1"] = {"instruct_5s_s": sec, "tokens": n_tok, "tokens_per_s": n_tok / sec}
    dim = pipe.audio_encoder_dim
    text = "A furious man speaks with brow strongly lowered."
    s2 = {}
    for secs in ((10, 60) if small else (10, 60, 600)):
        f = np.random.default_rng(0).standard_normal((secs * FEATURE_RATE, dim)).astype(np.float32)
        for sampler, steps in (("ddim", 5), ("ddim", 25), ("ddim", 50), ("dpmpp2m", 10)):
            s2[f"{secs}s_{sampler}{steps}"] = _time(
                lambda: pipe.synthesizer.synthesize(f, text, seed=0, steps=steps, sampler=sampler), dev, 3)
    out["stage2_s"] = s2
    from benchmarks.pipeline import batched  # evaluation over many clips: one by one vs instruct_many / synthesize_many

    out["batched"] = batched(pipe, clips=8 if small else 128, reps=1 if small else 3, speech=speech)
    return out


def generation(dev: torch.device, small: bool, new_tokens: int = 64) -> dict:
    """Tokens/s decoding ``new_tokens`` after a prefix of 33 speech tokens + 12 prompt tokens (no end token: every
    row runs to the end), and whether our runtime wrote transformers' greedy tokens on the same weights."""
    out: dict = {}
    for name in ("base", "paper"):
        out[name] = _decode_rates(name, dev, small, new_tokens)
        _free(dev)  # the model goes with the call's locals
    return out


def _decode_rates(name: str, dev: torch.device, small: bool, new_tokens: int) -> dict:
    from transformers import AutoConfig, AutoModelForCausalLM

    from avitalk.lean.llama import LlamaLite

    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    shape = dict(LLM_SHAPES[name])
    if small:
        shape.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2 if name == "base" else 4, vocab_size=512)
    mt = shape.pop("model_type")
    torch.manual_seed(0)
    with torch.device(dev):
        hf = AutoModelForCausalLM.from_config(AutoConfig.for_model(mt, **shape), dtype=dtype).eval()
    lite = LlamaLite.from_transformers(hf)
    r: dict = {"layers": shape["num_hidden_layers"], "dtype": str(dtype).replace("torch.", ""),
               "new_tokens": new_tokens}
    for B in (1, 32):
        emb = torch.randn(B, 45, shape["hidden_size"], device=dev, dtype=dtype) * 0.02
        mask = torch.ones(B, 45, dtype=torch.long, device=dev)
        if B > 1:
            mask[::2, :5] = 0  # left padding in half the rows, as a batch of different clips has
        ways = {"ours_static_graph": dict(static=True, graph=dev.type == "cuda"),
                "ours_static": dict(static=True, graph=False), "ours_growing": dict(static=False)}
        toks = {}
        for way, kw in ways.items():
            toks[way] = lite.generate(emb, mask, new_tokens, **kw)
            r[f"{way}_b{B}_tok_s"] = B * new_tokens / _time(lambda: lite.generate(emb, mask, new_tokens, **kw), dev, 3)
        if B == 1:
            with torch.no_grad():
                ref = hf.generate(inputs_embeds=emb, attention_mask=mask, max_new_tokens=new_tokens,
                                  min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
                r["transformers_b1_tok_s"] = new_tokens / _time(
                    lambda: hf.generate(inputs_embeds=emb, attention_mask=mask, max_new_tokens=new_tokens,
                                        min_new_tokens=new_tokens, do_sample=False, pad_token_id=0), dev, 2)
            same = (toks["ours_static_graph"] == ref).int().cumprod(1).sum(1)
            r["same_tokens_as_transformers_b1"] = int(same.min())  # leading tokens equal (bf16 may drift later)
        r[f"ways_agree_b{B}"] = all(torch.equal(toks["ours_growing"], t) for t in toks.values())
    return r


def train_rates(dev: torch.device, small: bool) -> dict:
    out = {}
    for name in (("tiny",) if small else ("tiny", "base", "paper")):
        out[name] = _step_rates(name, dev, small)
        _free(dev)  # the modules go with the call's locals
    return out


def _step_rates(name: str, dev: torch.device, small: bool) -> dict:
    from avitalk.config import load_config
    from avitalk.stage2_synthesis.synthesizer import build_modules

    amp = torch.autocast(dev.type, dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    s2 = cfg.stage2
    torch.manual_seed(0)
    mods = build_modules(cfg, AUDIO_DIM[name], TEXT_DIM[name])
    enc, dec, prior = (mods[k].to(dev).train() for k in ("style_encoder", "decoder", "prior"))
    B = 4 if small else int(s2.train.lipsync.batch_size)
    T = int(s2.train.lipsync.crop_frames)
    feats = torch.randn(B, T, AUDIO_DIM[name], device=dev)
    motion = torch.randn(B, T, 53, device=dev)
    mask = torch.ones(B, T, dtype=torch.bool, device=dev)
    opt = torch.optim.AdamW([*enc.parameters(), *dec.parameters()], lr=1e-4)

    def lipsync_step():
        with amp:
            pred = dec(feats, enc(motion, mask), mask)
            loss = torch.nn.functional.mse_loss(pred.float(), motion)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    _peak_reset(dev)
    r = {"lipsync_s_per_step": _time(lipsync_step, dev, 3), "lipsync_batch": B, "lipsync_peak_gb": _peak_gb(dev)}
    Bp = 8 if small else int(s2.train.prior.batch_size)
    z, tx = torch.randn(Bp, int(s2.style_dim), device=dev), torch.randn(Bp, TEXT_DIM[name], device=dev)
    popt = torch.optim.AdamW(prior.parameters(), lr=1e-4)
    ddpm = prior.train_scheduler()

    def prior_step():
        with amp:
            loss = prior(z, tx, ddpm, contrastive_weight=0.1, mapper_weight=1.0)["loss"]
        popt.zero_grad(set_to_none=True)
        loss.backward()
        popt.step()

    _peak_reset(dev)
    r.update(prior_s_per_step=_time(prior_step, dev, 3), prior_batch=Bp, prior_peak_gb=_peak_gb(dev))
    r.update(_llm_rate(name, cfg, dev, small, amp))
    steps = {"lipsync": int(s2.train.lipsync.steps), "prior": int(s2.train.prior.steps), "stage1": int(cfg.stage1.train.steps)}
    r["hours_for_the_configs_steps"] = {
        "stage2_lipsync": r["lipsync_s_per_step"] * steps["lipsync"] / 3600,
        "stage2_prior": r["prior_s_per_step"] * steps["prior"] / 3600,
        "stage1": r["stage1_s_per_step"] * steps["stage1"] / 3600}
    return r


def _llm_rate(name: str, cfg, dev: torch.device, small: bool, amp) -> dict:
    """One LoRA training step of the stage-1 LLM shape on a prefix of 32 speech tokens + 64 text tokens."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = dict(model_type="llama", hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1024) if name == "tiny" else dict(LLM_SHAPES[name])
    if small and name != "tiny":
        shape["num_hidden_layers"] = 2
    mt = shape.pop("model_type")
    torch.manual_seed(0)
    lm_cfg = AutoConfig.for_model(mt, **shape)
    dtype = torch.bfloat16 if dev.type == "cuda" and name != "tiny" else torch.float32
    _peak_reset(dev)
    with torch.device(dev):  # initialised where it runs (a 7B model made on the CPU first takes minutes)
        lm = AutoModelForCausalLM.from_config(lm_cfg, dtype=dtype)
    lm.requires_grad_(False)
    lm = get_peft_model(lm, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    B = 2 if small else int(cfg.stage1.train.batch_size)
    emb = torch.randn(B, 96, shape["hidden_size"], device=dev, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, shape["vocab_size"], (B, 96), device=dev)
    opt = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=1e-4)

    def step():
        with amp:
            loss = lm(inputs_embeds=emb, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return {"stage1_s_per_step": _time(step, dev, 3), "stage1_batch": B, "stage1_layers": shape["num_hidden_layers"],
            "stage1_peak_gb": _peak_gb(dev)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="tiny shapes only (the test suite's CPU run)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu.json"))
    ap.add_argument("--sections", default="equivalence,latency,generation,training",
                    help="which parts to run (comma-separated); the JSON keeps the others' results if --out has them")
    ap.add_argument("--speech", type=Path, default=None,
                    help="a wav to cut the evaluation clips from (default: SynthTalk speech made with espeak-ng)")
    a = ap.parse_args(argv)
    dev = torch.device(a.device)
    from avitalk.io import atomic_write_json

    res = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "small": a.small, "motion_fps": MOTION_FPS}
    sections = {"equivalence": lambda: equivalence(dev), "latency": lambda: latency(dev, a.small, a.speech),
                "generation": lambda: generation(dev, a.small), "training": lambda: train_rates(dev, a.small)}
    wanted = [x.strip() for x in a.sections.split(",") if x.strip()]
    unknown = set(wanted) - set(sections)
    if unknown:
        ap.error(f"unknown section(s) {sorted(unknown)}; choose from {list(sections)}")
    if set(wanted) != set(sections) and Path(a.out).is_file():
        old = json.loads(Path(a.out).read_text())
        if old.get("device") == res["device"]:
            res.update({k: v for k, v in old.items() if k in sections and k not in wanted})
    for name, run in sections.items():
        if name not in wanted:
            continue  # written after each section: a failure late in a GPU lease keeps the rest
        t = time.perf_counter()
        res[name] = run()
        print(f"[{name}: {time.perf_counter() - t:.0f} s] {json.dumps(res[name], default=str)}", flush=True)
        atomic_write_json(a.out, res)
    print(f"{res['device']} (torch {res['torch']})")
    if "equivalence" in res:
        eq = res["equivalence"]
        print(f"  equivalence with the CPU: same instruction {eq['same_instruction']}, motion max diff "
              f"{eq['motion_max_abs_diff']:.2e}")
    if "latency" in res:
        lat = res["latency"]
        print(f"  stage 1: {lat['stage1']['tokens_per_s']:.0f} tokens/s ({lat['stage1']['instruct_5s_s']:.3f} s for 5 s)")
        for k, v in lat["stage2_s"].items():
            print(f"  stage 2, {k}: {v:.3f} s")
        b = lat["batched"]
        print(f"  evaluation over {b['clips']} clips: stage 1 {b['stage1_one_by_one_s']:.2f} s one by one vs "
              f"{b['stage1_batched_s']:.2f} s batched, stage 2 {b['stage2_one_by_one_s']:.2f} vs "
              f"{b['stage2_batched_s']:.2f} s ({b['same_instructions']}/{b['clips']} same texts, motion max diff "
              f"{b['motion_max_diff']:.1e})")
    for name, r in res.get("generation", {}).items():
        print(f"  stage-1 decoding, {name} shape ({r['layers']} layers, {r['dtype']}): transformers "
              f"{r['transformers_b1_tok_s']:.0f} tok/s; ours growing {r['ours_growing_b1_tok_s']:.0f}, static "
              f"{r['ours_static_b1_tok_s']:.0f}, static+graph {r['ours_static_graph_b1_tok_s']:.0f} tok/s; batch 32: "
              f"{r['ours_static_graph_b32_tok_s']:.0f} tok/s (first {r['same_tokens_as_transformers_b1']} tokens as "
              f"transformers'; our three ways agree: {r['ways_agree_b1'] and r['ways_agree_b32']})")
    for name, r in res.get("training", {}).items():
        print(f"  train {name}: lip-sync {r['lipsync_s_per_step']:.3f} s/step, prior {r['prior_s_per_step']:.3f} s/step, "
              f"stage 1 {r['stage1_s_per_step']:.3f} s/step ({r['stage1_layers']} layers)"
              + (f"; peak GB: lip-sync {r['lipsync_peak_gb']:.1f}, prior {r['prior_peak_gb']:.1f}, stage 1 "
                 f"{r['stage1_peak_gb']:.1f}" if r['lipsync_peak_gb'] else ""))
    print(f"wrote {a.out}")
    return res


if __name__ == "__main__":
    main()
