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
from avitalk.text_metrics import instruction_scores
from avitalk.vocab import EMOTIONS, load_vocabulary, prompts_dir


def load_prompts() -> list[str]:
    import yaml

    return list(yaml.safe_load((prompts_dir() / "stage1.yaml").read_text())["prompts"])


PROSODY_DIM = 4


def prosody_dim(cfg: DictConfig) -> int:
    return PROSODY_DIM if bool(cfg.stage1.get("prosody", False)) else 0


def speech_features(cfg: DictConfig, audio, encoder=None, encoded: np.ndarray | None = None) -> np.ndarray:
    """Stage 1's input for one Audio: encoder features [T, D] (+ prosody channels when the config asks)."""
    from avitalk.encoders import audio_encoder_from_config
    from avitalk.encoders.prosody import ProsodyEncoder

    if encoded is None:
        encoded = (encoder or audio_encoder_from_config(cfg.audio_encoder)).encode(audio)
    if not prosody_dim(cfg):
        return encoded
    p = ProsodyEncoder().encode(audio)
    n = min(len(encoded), len(p))
    return np.concatenate([encoded[:n], p[:n]], 1)


class FeatureBank:
    """Per-clip features of one split (encoder features, with prosody channels appended when ``prosody`` is given)."""

    def __init__(self, root: Path, split: str, cache, limit: int | None = None, prosody=None):
        from avitalk.data.manifest import read_manifest

        self.clips = read_manifest(root, split)[:limit]
        self.feats = []
        for c in self.clips:
            f = cache.get(c.id)
            if f is None:
                raise DatasetError(f"{c.id}: features missing from {cache.dir}")
            if prosody is not None:
                p = prosody.get(c.id)
                if p is None:
                    raise DatasetError(f"{c.id}: prosody features missing from {prosody.dir}")
                n = min(len(f), len(p))
                f = np.concatenate([f[:n], p[:n]], 1)
            self.feats.append(f)

    def labels(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """Emotion and intensity class indices (-100 where a clip has none)."""
        emo = [EMOTIONS.index(self.clips[i].emotion) if self.clips[i].emotion in EMOTIONS else -100 for i in idx]
        inten = [int(self.clips[i].intensity) - 1 if self.clips[i].intensity in (1, 2, 3) else -100 for i in idx]
        return torch.tensor(emo), torch.tensor(inten)

    def batch(self, idx, crop: int | None = None, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded features [B, L, D] and mask; ``crop``: a random window of at most that many frames per clip."""
        parts = []
        for i in idx:
            f = self.feats[i]
            if crop is not None and len(f) > crop:
                s = int((rng or np.random.default_rng()).integers(0, len(f) - crop + 1))
                f = f[s : s + crop]
            parts.append(f)
        from avitalk.data.dataset import pad_arrays

        return pad_arrays(parts)


def build_model(cfg: DictConfig, tokenizer, llm, text_dim: int):
    from .model import InstructionModel
    from .qformer import QFormer

    s1 = cfg.stage1
    q = QFormer(feature_dim=int(cfg.get("audio_dim", 384)), llm_dim=llm.config.hidden_size,
                prosody_dim=prosody_dim(cfg), **OmegaConf.to_container(s1.qformer))
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
    state.update({f"aux.{k}": v for k, v in model.aux.state_dict().items()})
    state["logit_scale"] = model.logit_scale.detach()
    with atomic_path(out / "qformer.safetensors") as tmp:
        save_file({k: v.contiguous().cpu() for k, v in state.items()}, str(tmp))
    atomic_write_text(out / "stage1.yaml", OmegaConf.to_yaml(cfg))


def load_stage1(ckpt: str | os.PathLike, text_dim: int = 384, cfg: DictConfig | None = None):
    """Rebuild the instruction model from a checkpoint directory (never unpickles). ``cfg`` replaces the folder's
    ``stage1.yaml`` (a pipeline checkpoint keeps one ``config.yaml`` for both stages). Weights stored in float16 are
    loaded as float32."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = Path(ckpt)
    if not d.is_dir():
        raise CheckpointError(f"{d}: no such checkpoint folder")
    for need in ("stage1.yaml",) * (cfg is None) + ("tokenizer", "lm", "adapter", "qformer.safetensors"):
        if not (d / need).exists():
            raise CheckpointError(f"{d}: missing stage-1 component {need}")
    if cfg is None:
        cfg = OmegaConf.load(d / "stage1.yaml")
    try:
        tok = AutoTokenizer.from_pretrained(str(d / "tokenizer"))
        llm = AutoModelForCausalLM.from_pretrained(str(d / "lm")).float()
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
        model.aux.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("aux.")})
    except RuntimeError as e:
        raise CheckpointError(f"{d / 'qformer.safetensors'}: component qformer does not match the config ({e})") from e
    model.logit_scale.data.copy_(state["logit_scale"])
    return model.float().eval(), cfg


def _save_lm(tok, llm, out: Path) -> None:
    with atomic_dir(out / "tokenizer") as tmp:
        tok.save_pretrained(str(tmp))
    with atomic_dir(out / "lm") as tmp:
        llm.save_pretrained(str(tmp))


def train_stage1(cfg: DictConfig, data: str | os.PathLike, out: str | os.PathLike, resume: bool = False,
                 progress: bool = True, limit: int | None = None) -> dict[str, Any]:
    from accelerate import Accelerator
    from tqdm import tqdm

    from avitalk.data.manifest import read_manifest
    from avitalk.encoders import audio_encoder_from_config
    from avitalk.encoders.cache import cache_dataset_features
    from avitalk.encoders.prosody import ProsodyEncoder
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
    pcache = cache_dataset_features(data, ProsodyEncoder(), progress=progress) if prosody_dim(cfg) else None
    train = FeatureBank(data, "train", cache, limit, pcache)
    timings["features_s"] = time.perf_counter() - t0
    texts = [[t for t in c.instructions] for c in train.clips]
    history: dict[str, list] = {"lm": []}
    if resume and (out / "history.json").is_file():
        history = json.loads((out / "history.json").read_text())

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
    acc = Accelerator(cpu=not torch.cuda.is_available(),
                      mixed_precision=str(tc.get("mixed_precision", "bf16")) if torch.cuda.is_available() else "no")
    dev = acc.device
    model.to(dev)
    emb = {k: v.to(dev) for k, v in emb.items()}
    every = int(tc.get("checkpoint_every", 200))
    prompts = load_prompts()
    vocab = load_vocabulary()
    spans = [[vocab.emotion_spans(x) for x in ts] for ts in texts]
    model.train()

    def run_phase(name: str, n_steps: int, params: list, opt, sched, step_fn) -> None:
        start = _resume_phase(out, name, model, opt, sched, rng, history) if resume else 0
        bar = tqdm(range(start, n_steps), initial=start, total=n_steps, desc=f"stage1 {name}",
                   disable=not progress or None)
        for step in bar:
            with acc.autocast():
                losses = step_fn()
            opt.zero_grad(set_to_none=True)
            acc.backward(losses["loss"])
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            if step % 20 == 0 or step == n_steps - 1:
                history.setdefault(name, []).append({"step": step, **{k: float(v.detach()) for k, v in losses.items()}})
            if (step + 1) % every == 0 or step + 1 == n_steps:
                _save_phase(out, name, step + 1, model, opt, sched, rng, history)

    # (2a) Q-Former warm-up without the LLM: queries that already separate emotions and intensities (classification)
    # and match the instruction's sentence embedding (contrastive) give the LoRA stage something to read.
    t = time.perf_counter()
    warm = int(tc.get("qformer_warmup_steps", 0))
    if warm:
        qparams = [*model.qformer.parameters(), *model.align.parameters(), *model.aux.parameters(), model.logit_scale]
        qopt = torch.optim.AdamW(qparams, lr=float(tc.get("qformer_warmup_lr", 2e-3)), weight_decay=0.01)
        qsched = torch.optim.lr_scheduler.LambdaLR(qopt, lambda s: 1.0)
        crop = tc.get("qformer_warmup_crop")

        def warm_step() -> dict[str, torch.Tensor]:
            idx = rng.integers(0, len(train.clips), int(tc.get("qformer_warmup_batch_size", 32)))
            f, m = train.batch(idx, int(crop) if crop else None, rng)
            k = [int(rng.integers(len(texts[i]))) for i in idx]
            emo, inten = train.labels(idx)
            _, q = model.qformer(f.to(dev), m.to(dev))
            ls = model.speech_losses(q.mean(1).float(), torch.stack([emb[texts[i][j]] for i, j in zip(idx, k)]),
                                     emo.to(dev), inten.to(dev))
            ls["loss"] = ls.get("aux", 0.0) + ls["contrastive"]
            return ls

        run_phase("qformer_warmup", warm, qparams, qopt, qsched, warm_step)
        timings["qformer_warmup_s"] = time.perf_counter() - t
        t = time.perf_counter()

    # (2b) Q-Former + projection + LoRA on the instruction text
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(tc.lr), weight_decay=0.01)
    steps = int(tc.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))

    def adapter_step() -> dict[str, torch.Tensor]:
        idx = rng.integers(0, len(train.clips), int(tc.batch_size))
        f, m = train.batch(idx)
        k = [int(rng.integers(len(texts[i]))) for i in idx]
        tx = [texts[i][j] for i, j in zip(idx, k)]
        pr = [prompts[int(rng.integers(len(prompts)))] for _ in idx]
        emo, inten = train.labels(idx)
        return model(f.to(dev), m.to(dev), tx, torch.stack([emb[x] for x in tx]), pr,
                     contrastive_weight=float(tc.contrastive_weight), emotion=emo.to(dev), intensity=inten.to(dev),
                     aux_weight=float(tc.get("aux_weight", 0.0)), keyword_spans=[spans[i][j] for i, j in zip(idx, k)],
                     keyword_weight=float(tc.get("keyword_weight", 1.0)))

    run_phase("adapter", steps, params, opt, sched, adapter_step)
    model.eval().cpu()
    timings["adapter_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    save_stage1(model, out, cfg)
    atomic_write_json(out / "history.json", history)
    from avitalk.plots import plot_history

    plot_history(history, out / "loss_curves.png")
    atomic_write_json(out / "train_info.json", {"timings": timings, "train_clips": len(train.clips)})
    return {"model": model, "timings": timings, "history": history}


def _save_phase(out: Path, phase: str, step: int, model, opt, sched, rng: np.random.Generator, history: dict) -> None:
    """Trainable weights (safetensors) + optimizer / schedule / random state (torch, tensors only), atomically."""
    from safetensors.torch import save_file

    d = out / "train_state"
    d.mkdir(parents=True, exist_ok=True)
    weights = {n: p.detach().float().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    with atomic_path(d / f"{phase}.safetensors") as tmp:
        save_file(weights, str(tmp))
    state = {"phase": phase, "step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "torch_rng": torch.get_rng_state(), "numpy_rng": json.dumps(rng.bit_generator.state)}
    with atomic_path(d / f"{phase}.pt") as tmp:
        torch.save(state, tmp)
    atomic_write_json(out / "history.json", history)


def _resume_phase(out: Path, phase: str, model, opt, sched, rng: np.random.Generator, history: dict) -> int:
    """Restore a phase's last saved state; the step to continue from (0 when there is none)."""
    from safetensors.torch import load_file

    d = out / "train_state"
    if not (d / f"{phase}.pt").is_file() or not (d / f"{phase}.safetensors").is_file():
        return 0
    try:
        st = torch.load(d / f"{phase}.pt", map_location="cpu", weights_only=True)
        weights = load_file(str(d / f"{phase}.safetensors"))
    except Exception as e:  # noqa: BLE001 - any unreadable state
        raise CheckpointError(f"{d / phase}: cannot resume from it ({e})") from e
    own = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != own:
        raise CheckpointError(f"{d / phase}.safetensors: saved weights do not match the configured model "
                              f"({len(set(weights) ^ own)} names differ); train into a new folder")
    model.load_state_dict(weights, strict=False)
    opt.load_state_dict(st["optimizer"])
    sched.load_state_dict(st["scheduler"])
    torch.set_rng_state(st["torch_rng"])
    rng.bit_generator.state = json.loads(st["numpy_rng"])
    history[phase] = [h for h in history.get(phase, []) if h["step"] < int(st["step"])]
    return int(st["step"])


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
    f = torch.as_tensor(speech_features(cfg, audio, encoder))[None]
    m = torch.ones(f.shape[:2], dtype=torch.bool)
    return model.generate(f, m, num_samples=samples, do_sample=samples > 1, seed=seed)[0]


# ------------------------------------------------------------------------------------------------ metrics
def evaluate_stage1(ckpt: str | os.PathLike, data: str | os.PathLike, split: str = "test",
                    limit: int | None = None) -> dict[str, Any]:
    from avitalk.data.dataset import FeatureCache
    from avitalk.encoders import audio_encoder_from_config

    model, cfg = load_stage1(ckpt)
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
            f, m = bank.batch(idx)
            outs += [o[0] for o in model.generate(f, m, use_speech=use_speech)]
        return outs, time.perf_counter() - t

    gen, t_gen = run(True)
    abl, _ = run(False)

    def scores(outs: list[str]) -> dict[str, float]:
        return instruction_scores(outs, [list(c.instructions) for c in bank.clips],
                                  [c.emotion for c in bank.clips], [c.intensity for c in bank.clips])

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
