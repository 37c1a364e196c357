"""Stage-1 training and measurement.

``avitalk train stage1 --config configs/tiny.yaml --data DIR --out CKPT [--resume]``: (1) for the embedded default,
a tokenizer and a tiny Llama are trained on the training split's instruction text, then frozen; (2) Q-Former,
projection and LoRA are trained on (speech features -> instruction), with the same cached encoder features as
stage 2. Checkpoint: ``tokenizer/``, ``lm/`` (safetensors), ``adapter/`` (peft), ``qformer.safetensors``,
``stage1.yaml``, ``history.json``, ``loss_curves.png``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from avitalk.errors import CheckpointError, DatasetError
from avitalk.io import atomic_dir, atomic_path, atomic_write_json, atomic_write_text
from avitalk.vocab import EMOTIONS, load_vocabulary, prompts_dir


def load_prompts() -> list[str]:
    import yaml

    return list(yaml.safe_load((prompts_dir() / "stage1.yaml").read_text())["prompts"])


class FeatureBank:
    def __init__(self, root: Path, split: str, cache, limit: int | None = None):
        from avitalk.data.manifest import read_manifest

        self.clips = read_manifest(root, split)[:limit]
        self.feats = []
        for c in self.clips:
            f = cache.get(c.id)
            if f is None:
                raise DatasetError(f"{c.id}: features missing from {cache.dir}")
            self.feats.append(f)

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        L = max(len(self.feats[i]) for i in idx)
        x = np.zeros((len(idx), L, self.feats[idx[0]].shape[1]), np.float32)
        m = np.zeros((len(idx), L), bool)
        for k, i in enumerate(idx):
            n = min(L, len(self.feats[i]))
            x[k, :n] = self.feats[i][:n]
            m[k, :n] = True
        return torch.from_numpy(x), torch.from_numpy(m)


def build_model(cfg: DictConfig, tokenizer, llm, text_dim: int):
    from .model import InstructionModel
    from .qformer import QFormer

    s1 = cfg.stage1
    q = QFormer(feature_dim=int(cfg.get("audio_dim", 384)), llm_dim=llm.config.hidden_size,
                **OmegaConf.to_container(s1.qformer))
    return InstructionModel(llm, tokenizer, q, load_prompts()[0], text_dim=text_dim,
                            lora=OmegaConf.to_container(s1.lora), chat_template=bool(s1.get("chat_template", False)))


def save_stage1(model, out: Path, cfg: DictConfig) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out / "tokenizer") as tmp:
        model.tokenizer.save_pretrained(str(tmp))
    with atomic_dir(out / "adapter") as tmp:
        model.llm.save_pretrained(str(tmp))  # the LoRA weights only (peft format)
    state = {f"qformer.{k}": v for k, v in model.qformer.state_dict().items()}
    state.update({f"align.{k}": v for k, v in model.align.state_dict().items()})
    state["logit_scale"] = model.logit_scale.detach()
    with atomic_path(out / "qformer.safetensors") as tmp:
        save_file({k: v.contiguous().cpu() for k, v in state.items()}, str(tmp))
    atomic_write_text(out / "stage1.yaml", OmegaConf.to_yaml(cfg))


def load_stage1(ckpt: str | os.PathLike, text_dim: int = 384):
    """Rebuild the instruction model from a checkpoint directory (never unpickles)."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = Path(ckpt)
    for need in ("stage1.yaml", "tokenizer", "lm", "adapter", "qformer.safetensors"):
        if not (d / need).exists():
            raise CheckpointError(f"{d}: missing stage-1 component {need}")
    cfg = OmegaConf.load(d / "stage1.yaml")
    try:
        tok = AutoTokenizer.from_pretrained(str(d / "tokenizer"))
        llm = AutoModelForCausalLM.from_pretrained(str(d / "lm"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{d}: stage-1 language model or tokenizer unreadable ({e})") from e
    try:
        llm = PeftModel.from_pretrained(llm, str(d / "adapter"))
    except Exception as e:  # noqa: BLE001 - peft raises many kinds
        raise CheckpointError(f"{d / 'adapter'}: LoRA adapter does not match the language model ({e})") from e
    model = build_model(cfg, tok, llm, text_dim)
    state = load_file(str(d / "qformer.safetensors"))
    try:
        model.qformer.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("qformer.")})
        model.align.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("align.")})
    except RuntimeError as e:
        raise CheckpointError(f"{d / 'qformer.safetensors'}: component qformer does not match the config ({e})") from e
    model.logit_scale.data.copy_(state["logit_scale"])
    return model.eval(), cfg


def _save_lm(tok, llm, out: Path) -> None:
    with atomic_dir(out / "tokenizer") as tmp:
        tok.save_pretrained(str(tmp))
    with atomic_dir(out / "lm") as tmp:
        llm.save_pretrained(str(tmp))


def train_stage1(cfg: DictConfig, data: str | os.PathLike, out: str | os.PathLike, resume: bool = False,
                 progress: bool = True, limit: int | None = None) -> dict[str, Any]:
    from tqdm import tqdm

    from avitalk.data.dataset import FeatureCache
    from avitalk.data.manifest import read_manifest
    from avitalk.encoders import audio_encoder_from_config
    from avitalk.encoders.cache import cache_dataset_features
    from avitalk.encoders.text import text_encoder_from_config

    from .lm_pretrain import pretrain_lm, tiny_llama, train_tokenizer

    data, out = Path(data), Path(out)
    read_manifest(data, "train")
    out.mkdir(parents=True, exist_ok=True)
    s1 = cfg.stage1
    torch.manual_seed(int(cfg.seed))
    rng = np.random.default_rng(int(cfg.seed))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    enc = audio_encoder_from_config(cfg.audio_encoder)
    OmegaConf.set_struct(cfg, False)
    cfg.audio_dim = int(enc.dim)
    cache = cache_dataset_features(data, enc, progress=progress)
    train = FeatureBank(data, "train", cache, limit)
    timings["features_s"] = time.perf_counter() - t0
    texts = [[t for t in c.instructions] for c in train.clips]
    history: dict[str, list] = {"lm": [], "stage1": []}

    # ---- (1) tokenizer + tiny LM (or a pretrained causal LM from a path / hub id)
    t = time.perf_counter()
    if s1.llm == "tiny":
        if resume and (out / "lm").is_dir() and (out / "tokenizer").is_dir():
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
            llm = AutoModelForCausalLM.from_pretrained(str(out / "lm"))
        else:
            corpus = [x for ts in texts for x in ts] + load_prompts()
            tok = train_tokenizer(corpus, int(s1.tiny_lm.vocab_size))
            llm = tiny_llama(tok, **{k: v for k, v in OmegaConf.to_container(s1.tiny_lm).items() if k not in ("vocab_size", "steps", "batch_size", "lr")})
            history["lm"] = pretrain_lm(llm, tok, [x for ts in texts for x in ts], int(s1.tiny_lm.steps),
                                        int(s1.tiny_lm.batch_size), float(s1.tiny_lm.lr), int(cfg.seed), progress)
            _save_lm(tok, llm, out)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(s1.llm))
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if tok.bos_token_id is None:
            tok.bos_token = tok.eos_token
        llm = AutoModelForCausalLM.from_pretrained(str(s1.llm))
        _save_lm(tok, llm, out)
    timings["lm_s"] = time.perf_counter() - t

    # ---- (2) Q-Former + projection + LoRA
    te = text_encoder_from_config(cfg.stage2.text_encoder)
    model = build_model(cfg, tok, llm, te.dim)
    flat = sorted({x for ts in texts for x in ts})
    emb = dict(zip(flat, torch.as_tensor(te.encode(flat))))
    tc = s1.train
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(tc.lr), weight_decay=0.01)
    steps = int(tc.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    prompts = load_prompts()
    t = time.perf_counter()
    model.train()
    for step in tqdm(range(steps), desc="stage1 adapter", disable=not progress or None):
        idx = rng.integers(0, len(train.clips), int(tc.batch_size))
        f, m = train.batch(idx)
        tx = [texts[i][int(rng.integers(len(texts[i])))] for i in idx]
        pr = [prompts[int(rng.integers(len(prompts)))] for _ in idx]
        losses = model(f, m, tx, torch.stack([emb[x] for x in tx]), pr, contrastive_weight=float(tc.contrastive_weight))
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 20 == 0 or step == steps - 1:
            history["stage1"].append({"step": step, **{k: float(v.detach()) for k, v in losses.items()}})
    model.eval()
    timings["adapter_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    save_stage1(model, out, cfg)
    atomic_write_json(out / "history.json", history)
    atomic_write_json(out / "train_info.json", {"timings": timings, "train_clips": len(train.clips)})
    return {"model": model, "timings": timings, "history": history}


MAX_LISTEN_S = 30.0


def instruct_audio(model, cfg: DictConfig, audio, samples: int = 1, seed: int = 0, encoder=None) -> list[str]:
    """Instruction text(s) for one Audio: greedy for one, nucleus sampling for several."""
    from avitalk.encoders import audio_encoder_from_config
    from avitalk.errors import AudioError

    if audio.duration > MAX_LISTEN_S:
        raise AudioError(f"{audio.source or 'audio'}: is {audio.duration:.1f} s long; stage 1 listens to at most "
                         f"{MAX_LISTEN_S:g} s (cut the clip, or give the instruction yourself)")
    if encoder is None:
        encoder = audio_encoder_from_config(cfg.audio_encoder)
    f = torch.as_tensor(encoder.encode(audio))[None]
    m = torch.ones(f.shape[:2], dtype=torch.bool)
    return model.generate(f, m, num_samples=samples, do_sample=samples > 1, seed=seed)[0]


# ------------------------------------------------------------------------------------------------ metrics
def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L: the F-measure (beta = 1) of the longest common subsequence of words (Lin, 2004)."""
    a, b = candidate.lower().split(), reference.lower().split()
    if not a or not b:
        return 0.0
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a)):
        for j in range(len(b)):
            dp[i + 1][j + 1] = dp[i][j] + 1 if a[i] == b[j] else max(dp[i][j + 1], dp[i + 1][j])
    lcs = dp[-1][-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def evaluate_stage1(ckpt: str | os.PathLike, data: str | os.PathLike, split: str = "test",
                    limit: int | None = None) -> dict[str, Any]:
    import sacrebleu

    from avitalk.data.dataset import FeatureCache
    from avitalk.encoders import audio_encoder_from_config

    model, cfg = load_stage1(ckpt)
    data = Path(data)
    enc = audio_encoder_from_config(cfg.audio_encoder)
    cache = FeatureCache(data / "features", enc.key)
    bank = FeatureBank(data, split, cache, limit)
    vocab = load_vocabulary()

    def run(use_speech: bool) -> tuple[list[str], float]:
        outs = []
        t = time.perf_counter()
        for s in range(0, len(bank.clips), 16):
            idx = list(range(s, min(s + 16, len(bank.clips))))
            f, m = bank.batch(idx)
            outs += [o[0] for o in model.generate(f, m, use_speech=use_speech)]
        return outs, time.perf_counter() - t

    gen, t_gen = run(True)
    abl, _ = run(False)

    def scores(outs: list[str]) -> dict[str, float]:
        emo = inten = 0
        tp = fp = fn = 0
        for o, c in zip(outs, bank.clips):
            p = vocab.parse(o)
            emo += p["emotion"] == c.emotion
            inten += p["intensity"] == c.intensity
            ref = {a for a, _ in vocab.parse(c.instructions[0])["actions"]}
            got = {a for a, _ in p["actions"]}
            tp, fp, fn = tp + len(ref & got), fp + len(got - ref), fn + len(ref - got)
        n = len(outs)
        refs = [[c.instructions[k] if k < len(c.instructions) else c.instructions[0] for c in bank.clips] for k in range(3)]
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        return {
            "emotion_accuracy": emo / n,
            "intensity_accuracy": inten / n,
            "action_unit_f1": f1,
            "bleu": float(sacrebleu.corpus_bleu(outs, refs).score),
            "rouge_l": float(np.mean([max(rouge_l(o, r) for r in c.instructions) for o, c in zip(outs, bank.clips)])),
        }

    # speed: instruct 5 s of speech (encoder excluded): generation time and tokens/s
    f5, m5 = bank.batch([int(np.argmin([abs(len(x) - 250) for x in bank.feats]))])
    model.generate(f5, m5)
    t = time.perf_counter()
    out = model.generate(f5, m5)[0][0]
    dt = time.perf_counter() - t
    ntok = len(model.tokenizer(out, add_special_tokens=False)["input_ids"]) + 1
    return {
        "split": split,
        "clips": len(bank.clips),
        "with_speech": scores(gen),
        "ablation_speech_tokens_removed": scores(abl),
        "chance_emotion": 1 / len(EMOTIONS),
        "examples": [{"id": c.id, "reference": c.instructions[0], "generated": g} for c, g in list(zip(bank.clips, gen))[:8]],
        "speed": {"instruct_5s_s": dt, "tokens_per_s": ntok / dt, "eval_generation_s": t_gen},
    }
